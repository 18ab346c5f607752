// Tests of attnkit/linear/positive_random_features.hpp (FAVOR+): the draw
// (orthogonal blocks, chi norms, seeds, redraw), the features against their
// definition in long double, stabilisation of large inputs, unbiasedness of
// the kernel estimate, and the error against exact softmax attention falling
// as m grows.

#include "attnkit/linear/positive_random_features.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/reference.hpp"
#include "attnkit/core/metrics.hpp"
#include "attnkit/linear/linear_attention.hpp"
#include "linear/linear_oracle.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::LD;
using test::matrices_near;
using test::random_matrix;
using test::throws_invalid_argument;

template <typename Scalar>
class FavorTest : public ::testing::Test {};
TYPED_TEST_SUITE(FavorTest, test::Scalars);

TEST(FavorDraw, OrthogonalBlocksWithChiNorms) {
  const Index d = 16, m = 40;  // blocks of 16, 16 and 8 rows
  const PositiveRandomFeatures<double> map(d, {m, 9});
  const RowMatrix<double>& w = map.projection();
  ASSERT_EQ(w.rows(), m);
  ASSERT_EQ(w.cols(), d);
  // Householder QR gives a Q orthogonal to about d u (Higham, Thm 19.4:
  // ||Q^T Q - I|| <= c d^2 u); rows of a block are Q's columns scaled by
  // their norms, so |w_f . w_g| <= d^2 eps |w_f| |w_g| for f != g in a block.
  for (Index f = 0; f < m; ++f)
    for (Index g = f + 1; g < m; ++g) {
      const double dot = w.row(f).dot(w.row(g)), scale = w.row(f).norm() * w.row(g).norm();
      if (f / d == g / d) {
        EXPECT_LE(std::fabs(dot), as_double(d * d) * eps<double>() * scale) << f << " " << g;
      }
    }
  // Across blocks the directions are independent: not orthogonal (a random
  // pair of unit vectors in R^16 has |cos| < 1e-3 with probability ~3e-3).
  double largest_cross = 0;
  for (Index f = 0; f < d; ++f)
    for (Index g = d; g < 2 * d; ++g)
      largest_cross =
          std::max(largest_cross, std::fabs(w.row(f).dot(w.row(g))) / (w.row(f).norm() * w.row(g).norm()));
  EXPECT_GT(largest_cross, 0.1);
  // Norms are chi_d: |w|^2 has mean d and variance 2d. Over 2048 rows the
  // sample mean has standard deviation sqrt(2 d / 2048) = 0.125: 5 sigma.
  const PositiveRandomFeatures<double> big(d, {2048, 10});
  const double mean_sq = big.projection().rowwise().squaredNorm().mean();
  EXPECT_NEAR(mean_sq, as_double(d), 5 * 0.125);
}

TEST(FavorDraw, SeedsAreReproducibleAndRedrawReplaces) {
  PositiveRandomFeatures<float> a(8, {20, 1}), b(8, {20, 1});
  const PositiveRandomFeatures<float> c(8, {20, 2});
  EXPECT_TRUE(matrices_near(a.projection(), b.projection(), 0.0));
  EXPECT_FALSE(matrices_near(a.projection(), c.projection(), 0.5));
  a.redraw(2);
  EXPECT_EQ(a.seed(), 2u);
  EXPECT_TRUE(matrices_near(a.projection(), c.projection(), 0.0));
  const PositiveRandomFeatures<float> iid(8, {20, 1, false});
  EXPECT_FALSE(matrices_near(iid.projection(), b.projection(), 0.5));
  // iid rows: no orthogonality within a block.
  EXPECT_GT(std::fabs(iid.projection().row(0).dot(iid.projection().row(1))), 1e-6);
}

// phi_r exp(log_scale_r) (queries) and phi_r exp(c) (keys) equal the
// definition exp(w . x' - |x'|^2/2)/sqrt(m) within the derived per-feature
// bound (tests/linear/linear_oracle.hpp, favor_feature_error) plus the
// rounding of the comparison's own exp(log_scale) (e^{ls}: ~|ls| u).
TYPED_TEST(FavorTest, FeaturesMatchDefinition) {
  using Scalar = TypeParam;
  const Index d = 8, m = 24;
  const PositiveRandomFeatures<Scalar> map(d, {m, 4, true, 0.3});
  const RowMatrix<Scalar> x = random_matrix<Scalar>(9, d, 5, 1.5);
  RowMatrix<Scalar> pq(9, m), pk(9, m);
  Vector<Scalar> ls(9);
  map.map_queries(x, pq, ls);
  const Scalar c = map.map_keys(x, pk);
  const RowMatrix<LD> want = test::favor_features_ld(x, map);
  const double e_phi =
      test::favor_feature_error(x, map) + 2 * test::favor_max_exponent(x, map) * eps<Scalar>();
  for (Index r = 0; r < 9; ++r) {
    // Query stabiliser: the row's largest feature is exactly 1/sqrt(m) up to
    // the exp(0) = 1 and one product.
    EXPECT_NEAR(static_cast<double>(pq.row(r).maxCoeff()), 1 / std::sqrt(as_double(m)), 2 * eps<Scalar>());
    for (Index f = 0; f < m; ++f) {
      const LD gq = static_cast<LD>(pq(r, f)) * std::exp(static_cast<LD>(ls(r)));
      const LD gk = static_cast<LD>(pk(r, f)) * std::exp(static_cast<LD>(c));
      EXPECT_LE(std::fabs(gq / want(r, f) - 1), e_phi) << r << " " << f;
      EXPECT_LE(std::fabs(gk / want(r, f) - 1), e_phi) << r << " " << f;
    }
  }
  EXPECT_NEAR(static_cast<double>(pk.maxCoeff()), 1 / std::sqrt(as_double(m)), 2 * eps<Scalar>());
}

// Inputs whose exponents are far outside float's exp range (|x'|^2/2 ~ 400):
// the stabilisers keep every feature in [0, 1/sqrt(m)], never inf or NaN,
// and linear attention stays a convex combination of the values.
TYPED_TEST(FavorTest, LargeInputsAreStabilised) {
  using Scalar = TypeParam;
  const Index d = 16, n = 30;
  const PositiveRandomFeatures<Scalar> map(d, {64, 6});
  const RowMatrix<Scalar> q = random_matrix<Scalar>(n, d, 7, 14.0), k = random_matrix<Scalar>(n, d, 8, 14.0),
                          v = random_matrix<Scalar>(n, 3, 9);
  RowMatrix<Scalar> phi(n, 64);
  Vector<Scalar> ls(n);
  map.map_queries(q, phi, ls);
  EXPECT_TRUE(phi.allFinite());
  EXPECT_TRUE((phi.array() >= 0).all());
  EXPECT_GT(static_cast<double>(ls.cwiseAbs().maxCoeff()), 100.0);  // exp(ls) alone would overflow float
  for (const Mask mask : {Mask::none(), Mask::causal()}) {
    const auto r = linear_attention(q, k, v, map, {mask, 8});
    EXPECT_TRUE(r.output.allFinite());
    EXPECT_LE(static_cast<double>(r.output.cwiseAbs().maxCoeff()),
              static_cast<double>(v.cwiseAbs().maxCoeff()) * (1 + 1e-3));
  }
}

// E[phi(q) . phi(k)] = exp(scale q . k). Averaging over 400 independent
// draws, the sample mean is within 5 standard errors (estimated from the same
// draws) of the exact kernel value, for iid and orthogonal features.
TEST(FavorEstimator, KernelEstimateIsUnbiased) {
  const Index d = 8, m = 16, draws = 400;
  const RowMatrix<double> q = random_matrix<double>(1, d, 1, 0.6), k = random_matrix<double>(1, d, 2, 0.6);
  const double scale = 1 / std::sqrt(as_double(d));
  const double exact = std::exp(scale * q.row(0).dot(k.row(0)));
  for (const bool orthogonal : {false, true}) {
    double sum = 0, sum_sq = 0;
    for (Index s = 0; s < draws; ++s) {
      const PositiveRandomFeatures<double> map(d, {m, static_cast<std::uint64_t>(100 + s), orthogonal});
      const RowMatrix<LD> pq = test::favor_features_ld(q, map), pk = test::favor_features_ld(k, map);
      const double est = static_cast<double>(pq.row(0).dot(pk.row(0)));
      sum += est;
      sum_sq += est * est;
    }
    const double mean = sum / as_double(draws);
    const double se = std::sqrt((sum_sq / as_double(draws) - mean * mean) / as_double(draws - 1));
    EXPECT_NEAR(mean, exact, 5 * se) << (orthogonal ? "orthogonal" : "iid");
    EXPECT_LT(se, 0.1 * exact);  // the test has power: the estimate is informative
  }
}

// FAVOR+ against exact softmax attention (reference_attention) as m grows.
// The kernel estimate's variance falls like 1/m, so the output error falls
// like 1/sqrt(m), by 1/sqrt(2) = 0.71 per doubling in the low-variance
// regime the inputs are drawn in (|q'|, |k'| ~ 1; the estimator's relative
// variance grows like exp(|q' + k'|^2), and with std 0.8 instead of 0.5 it is
// still far from that asymptote at m = 512). Measured on this workload over
// 60 seeds: step ratios of the mean error 0.73-0.75, per-seed coefficient of
// variation 0.14-0.26. Averaging 12 seeds, one mean varies by <= 0.26/sqrt(12)
// = 7.5 %, a ratio of two means by about 10 % of 0.74, i.e. +-0.075: the
// asserted fall (ratio < 1) is about 3.5 such deviations away, and the
// 64 -> 512 ratio (expected 0.71^3 to 0.75^3 = 0.36-0.42) is asserted below
// 0.6, again more than 3.5 deviations away.
TYPED_TEST(FavorTest, ErrorAgainstSoftmaxFallsAsFeaturesGrow) {
  using Scalar = TypeParam;
  const Index n = 128, d = 16;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(n, d, 21, 0.5), k = random_matrix<Scalar>(n, d, 22, 0.5),
                          v = random_matrix<Scalar>(n, d, 23);
  for (const Mask mask : {Mask::none(), Mask::causal()}) {
    const auto exact = reference_attention(q, k, v, {mask});
    std::vector<double> err;
    for (const Index m : {64, 128, 256, 512}) {
      double sum = 0;
      for (std::uint64_t seed = 1; seed <= 12; ++seed) {
        const PositiveRandomFeatures<Scalar> map(d, {m, seed});
        sum += relative_frobenius_error(linear_attention(q, k, v, map, {mask}).output, exact.output);
      }
      err.push_back(sum / 12);
    }
    for (std::size_t t = 1; t < err.size(); ++t)
      EXPECT_LT(err[t], err[t - 1]) << to_string(mask.kind) << " m step " << t << ": " << err[t - 1] << " -> "
                                    << err[t];
    EXPECT_LT(err.back(), 0.6 * err.front()) << err.front() << " -> " << err.back();
  }
}

TEST(FavorInput, BadInputThrows) {
  EXPECT_TRUE(throws_invalid_argument([] { PositiveRandomFeatures<float>(8, {0}); }, {"features = 0"}));
  EXPECT_TRUE(throws_invalid_argument([] { PositiveRandomFeatures<float>(8, {-4}); }, {"features = -4"}));
  EXPECT_TRUE(throws_invalid_argument([] { PositiveRandomFeatures<float>(0, {8}); }, {"d = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        PositiveRandomFeatures<float>(8, {8, 0, true, 0.0});
      },
      {"scale = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [] {
        PositiveRandomFeatures<float>(8, {8, 0, true, -1.0});
      },
      {"scale = -1"}));
  const Index huge = std::numeric_limits<Index>::max() / 2;
  EXPECT_TRUE(throws_invalid_argument([&] { PositiveRandomFeatures<float>(8, {huge}); }, {"overflows"}));
  const PositiveRandomFeatures<float> map(8, {8});
  EXPECT_TRUE(throws_invalid_argument([&] { map.features(7); }, {"d = 7", "d = 8"}));
}

}  // namespace
}  // namespace attnkit
