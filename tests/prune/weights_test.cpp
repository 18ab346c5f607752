// Tests of attnkit/prune/weights.hpp against their definitions evaluated in
// long double: the Gram and centred weights,
// the softmax row-variance identity, invariance of the centred weights to a
// common key shift, positive semi-definiteness (Schur), and the attention-aware
// weights (definition, recent-window rows, centring, and their meaning as
// twice the second-order KL divergence, checked by finite perturbation).

#include "attnkit/prune/weights.hpp"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Eigenvalues>

#include "attnkit/prune/statistics.hpp"
#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class WeightsTest : public ::testing::Test {};
TYPED_TEST_SUITE(WeightsTest, test::Scalars);

TYPED_TEST(WeightsTest, GramAndCenteredMatchDefinitions) {
  using Scalar = TypeParam;
  const Index d = 12;
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(32, d, 1);
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(300, d, 2, 5.0);
  const RowMatrix<LD> g = test::gram_ld(q, false);
  for (const bool centre : {false, true}) {
    const RowMatrix<LD> expected = g.cwiseProduct(test::gram_ld(k, centre));
    const RowMatrix<double> w = centre ? centered_weights(q, k) : gram_weights(q, k);
    // A product of two Gram entries accumulated in double: the 32-term query
    // sum and the 300-term key sum (twice that when the mean is subtracted
    // first), relative to the same sums of absolute values: (32 + 2 * 300 +
    // 2) eps_d.
    const RowMatrix<LD> abs_scale = test::gram_ld(RowMatrix<Scalar>(q.cwiseAbs()), false)
                                        .cwiseProduct(test::gram_ld(RowMatrix<Scalar>(k.cwiseAbs()), false));
    for (Index i = 0; i < d; ++i)
      for (Index j = 0; j < d; ++j)
        EXPECT_NEAR(w(i, j), static_cast<double>(expected(i, j)),
                    (32 + 2 * 300 + 2) * test::eps<double>() * static_cast<double>(abs_scale(i, j)))
            << "centre " << centre << " (" << i << ", " << j << ")";
  }
}

// Diagonals: ThinK's score squared, and n times the summed softmax row variance.
TYPED_TEST(WeightsTest, DiagonalsAreTheNoteScores) {
  using Scalar = TypeParam;
  const Index d = 6, n = 50;
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(8, d, 4);
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(n, d, 5, 3.0);
  const RowMatrix<double> wg = gram_weights(q, k), wc = centered_weights(q, k);
  for (Index i = 0; i < d; ++i) {
    const LD qn = q.col(i).template cast<LD>().norm(), kn = k.col(i).template cast<LD>().norm();
    const double think = static_cast<double>(qn * kn);
    // W_ii = (sum_r q_ri^2)(sum_m k_mi^2) in double: (8 + 50 + 1) eps_d
    // relative; the square root halves it (plus its own rounding).
    EXPECT_NEAR(std::sqrt(wg(i, i)), think, (0.5 * (8 + 50 + 1) + 1) * test::eps<double>() * think);
    // Row r of q_i k_i^T is Q[r, i] * k_i^T; its variance over the n keys.
    LD row_var_sum = 0;
    for (Index r = 0; r < q.rows(); ++r) {
      LD mean = 0, sq = 0;
      for (Index m = 0; m < n; ++m)
        mean += static_cast<LD>(q(r, i)) * static_cast<LD>(k(m, i));
      mean /= n;
      for (Index m = 0; m < n; ++m) {
        const LD x = static_cast<LD>(q(r, i)) * static_cast<LD>(k(m, i)) - mean;
        sq += x * x;
      }
      row_var_sum += sq / n;
    }
    // (sum_r q_ri^2)(sum_m (k_mi - mu_i)^2): the centred sum loses to
    // cancellation relative to the UNcentred one, (8 + 2 n + 2) eps_d of
    // (sum_r q_ri^2)(sum_m k_mi^2).
    const double uncentred = static_cast<double>(q.col(i).template cast<LD>().squaredNorm() *
                                                 k.col(i).template cast<LD>().squaredNorm());
    EXPECT_NEAR(wc(i, i), static_cast<double>(n * row_var_sum),
                (8 + 2 * n + 2) * test::eps<double>() * uncentred);
  }
}

// Theorem: centred weights are invariant to adding a constant vector to all keys.
// The keys are multiples of 2^-10 below 8 and the shift a multiple of 2^-10 below
// 2^10, so the shifted keys are exact in float; only the double mean moves.
TYPED_TEST(WeightsTest, CenteredWeightsIgnoreACommonKeyShift) {
  using Scalar = TypeParam;
  const Index d = 10, n = 200;
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(16, d, 6);
  RowMatrix<Scalar> k = test::random_matrix<Scalar>(n, d, 7, 2.0);
  k = (k.array() * Scalar(1024)).round() / Scalar(1024);
  k = k.cwiseMin(Scalar(7.5)).cwiseMax(Scalar(-7.5));
  detail::Random rng(8);
  Eigen::Matrix<Scalar, 1, Eigen::Dynamic> shift(d);
  for (Index c = 0; c < d; ++c)
    shift(c) = static_cast<Scalar>(std::round((rng.uniform() - 0.5) * 1000 * 1024) / 1024);
  RowMatrix<Scalar> shifted = k;
  shifted.rowwise() += shift;
  const RowMatrix<double> a = centered_weights(q, k), b = centered_weights(q, shifted);
  // Mean error ~ n eps |shift|; each centred entry moves by that, scatter by 2 n |k_c| of it.
  const double g_max = query_gram(q).cwiseAbs().maxCoeff();
  const double tol = 4.0 * n * n * test::eps<double>() * (1000.0 + 8.0) * 16.0 * g_max;
  EXPECT_TRUE(test::matrices_near(a, b, tol));
  // The uncentred Gram weights do change: the test can fail.
  EXPECT_GT((gram_weights(q, k) - gram_weights(q, shifted)).cwiseAbs().maxCoeff(), 1e3 * tol);
}

// Schur product theorem: every weight matrix is positive semi-definite.
TYPED_TEST(WeightsTest, WeightsArePositiveSemiDefinite) {
  using Scalar = TypeParam;
  const Index d = 16;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(120, d, 9, 2.0);
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(10, d, 10) * Scalar(0.3);
  AttentionWeightOptions recent;
  recent.error_keys = 100;
  recent.centre = true;
  const RowMatrix<double> ws[] = {gram_weights(q, k), centered_weights(q, k), attention_weights(q, k),
                                  attention_weights(q, k, recent)};
  for (const RowMatrix<double>& w : ws) {
    EXPECT_TRUE(test::matrices_near(w, RowMatrix<double>(w.transpose()), 0.0));
    const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(w).eigenvalues();
    // A symmetric eigensolver is backward stable: eigenvalues within a few d
    // eps_d ||W|| of the exact (non-negative) ones.
    EXPECT_GE(ev.minCoeff(), -4.0 * d * test::eps<double>() * ev.cwiseAbs().maxCoeff());
  }
}

// The attention weights from their definition, in long double: p_n by an
// independent softmax, Cov_p over the visible keys with rows >= error_keys zero.
struct AttentionLd {
  RowMatrix<LD> w;
  RowMatrix<LD> abs;  // the same sums of absolute values: the rounding scale
};

template <typename Scalar>
AttentionLd attention_weights_ld(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, Index error_keys,
                                 bool centre, bool causal) {
  const Index w = q.rows(), n = k.rows(), d = k.cols();
  const LD scale = 1 / std::sqrt(static_cast<LD>(d));
  RowMatrix<LD> kt = RowMatrix<LD>::Zero(n, d);
  kt.topRows(error_keys) = k.topRows(error_keys).template cast<LD>();
  if (centre && error_keys > 0) {
    const Eigen::Matrix<LD, 1, Eigen::Dynamic> mean =
        kt.topRows(error_keys).colwise().sum() / static_cast<LD>(error_keys);
    kt.topRows(error_keys).rowwise() -= mean;
  }
  AttentionLd r{RowMatrix<LD>::Zero(d, d), RowMatrix<LD>::Zero(d, d)};
  for (Index t = 0; t < w; ++t) {
    const Index visible = causal ? n - w + t + 1 : n;
    std::vector<LD> p(static_cast<std::size_t>(visible));
    LD mx = -std::numeric_limits<LD>::infinity(), sum = 0;
    for (Index m = 0; m < visible; ++m) {
      LD z = 0;
      for (Index c = 0; c < d; ++c)
        z += static_cast<LD>(q(t, c)) * static_cast<LD>(k(m, c));
      p[static_cast<std::size_t>(m)] = scale * z;
      mx = std::max(mx, scale * z);
    }
    for (LD& x : p)
      sum += (x = std::exp(x - mx));
    for (LD& x : p)
      x /= sum;
    Eigen::Matrix<LD, Eigen::Dynamic, 1> mu = Eigen::Matrix<LD, Eigen::Dynamic, 1>::Zero(d);
    for (Index m = 0; m < visible; ++m)
      mu += p[static_cast<std::size_t>(m)] * kt.row(m).transpose();
    for (Index i = 0; i < d; ++i)
      for (Index j = 0; j < d; ++j) {
        LD cov = 0, abs_cov = 0;
        for (Index m = 0; m < visible; ++m) {
          const LD term = p[static_cast<std::size_t>(m)] * (kt(m, i) - mu(i)) * (kt(m, j) - mu(j));
          cov += term;
          abs_cov += p[static_cast<std::size_t>(m)] * std::fabs(kt(m, i) * kt(m, j));
        }
        abs_cov += std::fabs(mu(i) * mu(j));
        const LD qq = static_cast<LD>(q(t, i)) * static_cast<LD>(q(t, j));
        r.w(i, j) += qq * cov;
        r.abs(i, j) += std::fabs(qq) * abs_cov;
      }
  }
  return r;
}

TYPED_TEST(WeightsTest, AttentionWeightsMatchDefinition) {
  using Scalar = TypeParam;
  const Index d = 8, n = 60, w = 6;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(n, d, 11, 1.5);
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(w, d, 12) * Scalar(0.4);
  struct Case {
    Index error_keys;
    bool centre, causal;
  };
  for (const Case c : {Case{n, false, true}, Case{50, false, true}, Case{50, true, true},
                       Case{n, true, false}, Case{0, false, true}}) {
    AttentionWeightOptions o;
    o.error_keys = c.error_keys;
    o.centre = c.centre;
    if (!c.causal) o.attention.mask = Mask::none();
    const RowMatrix<double> got = attention_weights(q, k, o);
    const AttentionLd want = attention_weights_ld(q, k, c.error_keys, c.centre, c.causal);
    // p comes rounded to Scalar from reference_attention_probabilities: relative
    // eps_Scalar per probability, on top of double accumulation.
    const double rel = 8.0 * (test::eps<Scalar>() + static_cast<double>(n) * test::eps<double>());
    for (Index i = 0; i < d; ++i)
      for (Index j = 0; j < d; ++j)
        EXPECT_NEAR(got(i, j), static_cast<double>(want.w(i, j)),
                    rel * static_cast<double>(want.abs(i, j)) + 1e-300)
            << "error_keys " << c.error_keys << " centre " << c.centre << " causal " << c.causal << " (" << i
            << ", " << j << ")";
  }
}

// F^p(B) = sum_n delta_z^T J delta_z / s^2, and sum_n KL(p_n || p~_n) = s^2 eps^2 F^p(B) / 2 + O(eps^3)
// when the dropped dimensions of the error keys are scaled by (1 - eps).
TYPED_TEST(WeightsTest, AttentionObjectiveIsTwiceSecondOrderKl) {
  using Scalar = TypeParam;
  const Index d = 8, n = 80, w = 5, error_keys = 70;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(n, d, 13, 1.0);
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(w, d, 14) * Scalar(0.3);
  AttentionWeightOptions o;
  o.error_keys = error_keys;
  const RowMatrix<double> wp = attention_weights(q, k, o);
  const DimSelection sel(d, {0, 2, 3, 6});
  LD f = 0;
  for (const Index i : sel.dropped())
    for (const Index j : sel.dropped())
      f += static_cast<LD>(wp(i, j));
  const LD s = 1 / std::sqrt(static_cast<LD>(d));
  double previous_gap = 1e300;
  for (const LD eps : {LD(1e-2), LD(1e-3)}) {
    LD kl = 0;
    // The remainder of the second-order term, bounded from the data: per
    // query row, with Y the logit change minus its p-mean (|Y| <= M, variance
    // kappa2 under p), KL = log E e^Y and e^Y = 1 + Y + Y^2 / 2 + R with
    // |R| <= |Y|^3 e^|Y| / 6, so |KL - kappa2 / 2| <= M e^M kappa2 / 6 +
    // kappa2^2 / 8: a relative gap of at most M e^M / 3 + kappa2 / 4 per row.
    LD worst_relative = 0;
    for (Index t = 0; t < w; ++t) {
      const Index visible = n - w + t + 1;
      std::vector<LD> z(static_cast<std::size_t>(visible)), zt(static_cast<std::size_t>(visible));
      for (Index m = 0; m < visible; ++m) {
        LD dot = 0, dot_t = 0;
        for (Index c = 0; c < d; ++c) {
          const LD prod = static_cast<LD>(q(t, c)) * static_cast<LD>(k(m, c));
          dot += prod;
          dot_t += (m < error_keys && !sel.keeps(c)) ? (1 - eps) * prod : prod;
        }
        z[static_cast<std::size_t>(m)] = s * dot;
        zt[static_cast<std::size_t>(m)] = s * dot_t;
      }
      const auto lse = [](const std::vector<LD>& v) {
        const LD mx = *std::max_element(v.begin(), v.end());
        LD sum = 0;
        for (const LD x : v)
          sum += std::exp(x - mx);
        return mx + std::log(sum);
      };
      const LD l = lse(z), lt = lse(zt);
      LD mean = 0, second = 0, big = 0;
      for (Index m = 0; m < visible; ++m) {
        const LD p = std::exp(z[static_cast<std::size_t>(m)] - l);
        const LD y = zt[static_cast<std::size_t>(m)] - z[static_cast<std::size_t>(m)];
        kl += p * ((z[static_cast<std::size_t>(m)] - l) - (zt[static_cast<std::size_t>(m)] - lt));
        mean += p * y;
      }
      for (Index m = 0; m < visible; ++m) {
        const LD p = std::exp(z[static_cast<std::size_t>(m)] - l);
        const LD y = zt[static_cast<std::size_t>(m)] - z[static_cast<std::size_t>(m)] - mean;
        second += p * y * y;
        big = std::max(big, std::fabs(y));
      }
      worst_relative = std::max(worst_relative, big * std::exp(big) / 3 + second / 4);
    }
    const LD predicted = s * s * eps * eps * f / 2;
    const double gap = std::fabs(static_cast<double>(kl / predicted) - 1.0);
    // f comes from weights computed with probabilities rounded to Scalar
    // (relative eps_S each) in double: 8 eps_S more.
    EXPECT_LT(gap, static_cast<double>(worst_relative) + 8 * test::eps<Scalar>())
        << "eps " << static_cast<double>(eps);
    EXPECT_LT(gap, previous_gap);
    previous_gap = gap;
  }
}

TYPED_TEST(WeightsTest, BadInputThrows) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> q = RowMatrix<Scalar>::Ones(3, 4), k = RowMatrix<Scalar>::Ones(10, 5), e(0, 4);
  EXPECT_TRUE(
      throws_invalid_argument([&] { gram_weights(q, k); }, {"gram_weights", "(3 x 4)", "(10 x 5)", "width"}));
  EXPECT_TRUE(throws_invalid_argument([&] { centered_weights(e, k); }, {"centered_weights", "empty"}));
  EXPECT_TRUE(throws_invalid_argument([&] { attention_weights(q, k); }, {"attention_weights", "width"}));
  const RowMatrix<Scalar> k4 = RowMatrix<Scalar>::Ones(10, 4);
  AttentionWeightOptions o;
  o.error_keys = 11;
  EXPECT_TRUE(throws_invalid_argument([&] { attention_weights(q, k4, o); }, {"error_keys = 11", "[0, n]"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] { gram_weights_from_statistics(RowMatrix<double>::Ones(3, 3), key_statistics(k4)); },
      {"gram_weights_from_statistics", "(3 x 3)", "width 4"}));
}

}  // namespace
}  // namespace attnkit
