// Tests of attnkit/attention/reference.hpp against an independent naive
// long-double implementation written here, plus properties of attention.

#include "attnkit/attention/reference.hpp"

#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/detail/wider.hpp"
#include "naive_attention.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::eps;
using test::LD;
using test::matrices_near;
using test::naive_attention;
using test::NaiveMask;
using test::NaiveResult;
using test::random_matrix;
using test::throws_invalid_argument;

template <typename Scalar>
class ReferenceAttentionTest : public ::testing::Test {};
TYPED_TEST_SUITE(ReferenceAttentionTest, test::Scalars);

// Error bound of the reference against exact arithmetic: its final rounding
// to Scalar (half an ulp, <= eps/2 max|v|) plus the wide type's own error,
// ~(n_k + d) eps_wide per logit times (1 + |logit|) propagated into the output.
// (On platforms where long double is double, the second term is what remains.)
template <typename Scalar>
double reference_tolerance(Index n_k, Index d, double max_logit, double max_v) {
  const double eps_wide = static_cast<double>(std::numeric_limits<detail::wider_t<Scalar>>::epsilon());
  return (0.5 * eps<Scalar>() + 4.0 * static_cast<double>(n_k + d) * eps_wide * (1 + max_logit)) * max_v +
         std::numeric_limits<Scalar>::denorm_min();
}

template <typename Scalar>
double max_abs_logit(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, double scale) {
  return scale * (q.template cast<double>() * k.template cast<double>().transpose()).cwiseAbs().maxCoeff();
}

TYPED_TEST(ReferenceAttentionTest, MatchesNaiveOracleForEveryMaskOffsetWindowSinkAndShape) {
  using Scalar = TypeParam;
  std::uint64_t seed = 100;
  int checked = 0;
  for (const Index n_q : {1, 3, 17})
    for (const Index n_k : {1, 5, 33})
      for (const Index d : {1, 4, 16}) {
        const Index d_v = d == 4 ? 3 : d;  // d_v != d included
        const RowMatrix<Scalar> q = random_matrix<Scalar>(n_q, d, ++seed);
        const RowMatrix<Scalar> k = random_matrix<Scalar>(n_k, d, ++seed);
        const RowMatrix<Scalar> v = random_matrix<Scalar>(n_k, d_v, ++seed);
        const double scale = 1.0 / std::sqrt(static_cast<double>(d));
        const double tol =
            reference_tolerance<Scalar>(n_k, d, max_abs_logit(q, k, scale), v.cwiseAbs().maxCoeff());
        for (const MaskKind kind : {MaskKind::none, MaskKind::causal, MaskKind::strict_causal}) {
          const Index max_offset =
              kind == MaskKind::none ? 0 : (kind == MaskKind::causal ? n_k - n_q : n_k - n_q + 1);
          for (Index offset = 0; offset <= max_offset; ++offset)
            for (const Index window : {0, 1, 2, 7})  // 0: no window
              for (const Index sinks : {0, 1, 3}) {
                if (sinks > n_k || (window == 0 && sinks > 0)) continue;
                AttentionOptions opt;
                opt.mask = kind == MaskKind::none ? Mask::none() : Mask{kind, offset};
                NaiveMask nm{kind, offset, std::nullopt, sinks};
                if (window > 0) {
                  opt.mask = opt.mask.with_window(window);
                  nm.window = window;
                }
                opt.mask = opt.mask.with_sinks(sinks);
                const auto r = reference_attention(q, k, v, opt);
                const NaiveResult ref = naive_attention(q, k, v, nm, scale);
                ASSERT_TRUE(matrices_near(r.output, ref.output, tol))
                    << to_string(kind) << " offset " << offset << " window " << window << " sinks " << sinks
                    << " n_q " << n_q << " n_k " << n_k << " d " << d;
                for (Index i = 0; i < n_q; ++i) {
                  if (std::isinf(ref.lse(i))) {
                    EXPECT_EQ(r.lse(i), -std::numeric_limits<Scalar>::infinity());
                  } else {
                    EXPECT_NEAR(static_cast<double>(r.lse(i)), static_cast<double>(ref.lse(i)),
                                eps<Scalar>() * (1 + std::fabs(static_cast<double>(ref.lse(i)))));
                  }
                }
                ++checked;
              }
        }
      }
  EXPECT_GT(checked, 400);
}

TYPED_TEST(ReferenceAttentionTest, DefaultOffsetPutsQueriesAtTheEndOfTheCache) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(4, 8, 1);
  const RowMatrix<Scalar> k = random_matrix<Scalar>(10, 8, 2);
  const RowMatrix<Scalar> v = random_matrix<Scalar>(10, 5, 3);
  const auto implicit = reference_attention(q, k, v, {Mask::causal()});
  const auto explicit_offset = reference_attention(q, k, v, {Mask::causal(6)});
  EXPECT_TRUE(matrices_near(implicit.output, explicit_offset.output, 0.0));
  // Decode: the last query of a causal block sees every key, like no mask.
  const auto full = reference_attention(q.bottomRows(1), k, v);
  EXPECT_TRUE(matrices_near(implicit.output.bottomRows(1), full.output, 0.0));
  // Strict causal default offset n_k - n_q: query i sees keys < 6 + i.
  const auto strict = reference_attention(q, k, v, {Mask::strict_causal()});
  const auto causal_shifted = reference_attention(q, k.topRows(9), v.topRows(9), {Mask::causal(5)});
  EXPECT_TRUE(matrices_near(strict.output, causal_shifted.output, 0.0));
}

TYPED_TEST(ReferenceAttentionTest, QueryThatSeesNoKeyGivesZeroRowAndMinusInfinityLse) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> x = random_matrix<Scalar>(6, 4, 4);
  const auto r = reference_attention(x, x, x, {Mask::strict_causal()});
  EXPECT_TRUE((r.output.row(0).array() == 0).all());
  EXPECT_EQ(r.lse(0), -std::numeric_limits<Scalar>::infinity());
  EXPECT_TRUE(r.output.bottomRows(5).allFinite());
  EXPECT_TRUE(r.lse.tail(5).allFinite());
  // Query 1 sees exactly key 0: output = v_0, lse = scale q_1 . k_0.
  EXPECT_TRUE(matrices_near(r.output.row(1), x.row(0), eps<Scalar>() * x.row(0).cwiseAbs().maxCoeff()));
  EXPECT_NEAR(static_cast<double>(r.lse(1)), 0.5 * static_cast<double>(x.row(1).dot(x.row(0))),
              8 * eps<Scalar>() * (1 + static_cast<double>(x.row(1).norm() * x.row(0).norm())));
}

TYPED_TEST(ReferenceAttentionTest, AttentionProperties) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(9, 6, 5);
  const RowMatrix<Scalar> k = random_matrix<Scalar>(9, 6, 6);
  const RowMatrix<Scalar> v = random_matrix<Scalar>(9, 4, 7);
  // Constant values: output equals the constant wherever a key is seen.
  const RowMatrix<Scalar> ones = RowMatrix<Scalar>::Constant(9, 4, Scalar(3));
  const auto c = reference_attention(q, k, ones, {Mask::causal()});
  EXPECT_TRUE(matrices_near(c.output, ones, 3 * eps<Scalar>()));
  // Identical keys: uniform weights, output = mean of the visible values.
  const RowMatrix<Scalar> same = k.row(0).replicate(9, 1);
  const auto u = reference_attention(q, same, v, {Mask::causal()});
  for (Index i = 0; i < 9; ++i) {
    const RowMatrix<LD> mean = v.topRows(i + 1).template cast<LD>().colwise().mean();
    EXPECT_TRUE(matrices_near(u.output.row(i), mean, eps<Scalar>() * v.cwiseAbs().maxCoeff())) << "row " << i;
  }
  // Without a mask, permuting the key/value pairs changes nothing.
  Eigen::PermutationMatrix<Eigen::Dynamic> perm(9);
  perm.indices() << 3, 8, 0, 5, 1, 7, 2, 6, 4;
  const RowMatrix<Scalar> kp = perm * k, vp = perm * v;
  const auto a = reference_attention(q, k, v), b = reference_attention(q, kp, vp);
  EXPECT_TRUE(matrices_near(a.output, b.output, eps<Scalar>() * v.cwiseAbs().maxCoeff()));
  // An explicit scale of 1/sqrt(d) is the default, bit for bit.
  const auto s = reference_attention(q, k, v, {Mask::none(), 1.0 / std::sqrt(6.0)});
  EXPECT_TRUE(matrices_near(a.output, s.output, 0.0));
  // Doubling the scale is the same as doubling Q.
  const RowMatrix<Scalar> q2 = Scalar(2) * q;
  const auto s2 = reference_attention(q, k, v, {Mask::none(), 2.0 / std::sqrt(6.0)});
  const auto d2 = reference_attention(q2, k, v);
  EXPECT_TRUE(matrices_near(s2.output, d2.output, 0.0));
}

TYPED_TEST(ReferenceAttentionTest, ProbabilitiesAreConsistentWithTheOutput) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(7, 5, 8);
  const RowMatrix<Scalar> k = random_matrix<Scalar>(7, 5, 9);
  const RowMatrix<Scalar> v = random_matrix<Scalar>(7, 3, 10);
  for (const Mask mask : {Mask::none(), Mask::causal(), Mask::strict_causal()}) {
    const RowMatrix<Scalar> p = reference_attention_probabilities(q, k, {mask});
    const auto r = reference_attention(q, k, v, {mask});
    for (Index i = 0; i < 7; ++i) {
      const Index end = mask.kind == MaskKind::none ? 7 : (mask.kind == MaskKind::causal ? i + 1 : i);
      EXPECT_TRUE((p.row(i).tail(7 - end).array() == 0).all()) << "masked entries must be exactly 0";
      if (end > 0) {
        EXPECT_NEAR(static_cast<double>(p.row(i).sum()), 1.0, 8 * eps<Scalar>());
      }
    }
    // P V in long double vs the output: the probabilities were rounded (eps/2
    // each), so the product carries n_k eps/2 max|v|.
    const RowMatrix<LD> pv = p.template cast<LD>() * v.template cast<LD>();
    EXPECT_TRUE(matrices_near(r.output, pv, (7 * 0.5 + 1) * eps<Scalar>() * v.cwiseAbs().maxCoeff()));
  }
}

// A NaN reaches exactly the rows (and for V, the columns) it enters.
TYPED_TEST(ReferenceAttentionTest, NaNPropagatesToExactlyTheRowsItReaches) {
  using Scalar = TypeParam;
  const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
  const RowMatrix<Scalar> q = random_matrix<Scalar>(8, 4, 11);
  const RowMatrix<Scalar> k = random_matrix<Scalar>(8, 4, 12);
  const RowMatrix<Scalar> v = random_matrix<Scalar>(8, 3, 13);
  const auto clean = reference_attention(q, k, v, {Mask::causal()});

  RowMatrix<Scalar> qn = q;
  qn(5, 2) = nan;
  const auto rq = reference_attention(qn, k, v, {Mask::causal()});
  for (Index i = 0; i < 8; ++i) {
    if (i == 5) {
      EXPECT_TRUE(rq.output.row(i).array().isNaN().all());
      EXPECT_TRUE(std::isnan(rq.lse(i)));
    } else {
      EXPECT_TRUE(matrices_near(rq.output.row(i), clean.output.row(i), 0.0)) << "row " << i;
    }
  }

  RowMatrix<Scalar> kn = k;
  kn(3, 0) = nan;  // key 3 is seen by queries 3..7 under the causal mask
  const auto rk = reference_attention(q, kn, v, {Mask::causal()});
  for (Index i = 0; i < 8; ++i) {
    if (i >= 3) {
      EXPECT_TRUE(rk.output.row(i).array().isNaN().all()) << "row " << i;
    } else {
      EXPECT_TRUE(matrices_near(rk.output.row(i), clean.output.row(i), 0.0)) << "row " << i;
      EXPECT_EQ(rk.lse(i), clean.lse(i));
    }
  }

  RowMatrix<Scalar> vn = v;
  vn(6, 1) = nan;  // seen by queries 6 and 7, column 1 only
  const auto rv = reference_attention(q, k, vn, {Mask::causal()});
  for (Index i = 0; i < 8; ++i)
    for (Index c = 0; c < 3; ++c) {
      if (i >= 6 && c == 1)
        EXPECT_TRUE(std::isnan(rv.output(i, c)));
      else
        EXPECT_EQ(rv.output(i, c), clean.output(i, c)) << "(" << i << ", " << c << ")";
    }
  EXPECT_TRUE(matrices_near(rv.lse, clean.lse, 0.0));
}

TYPED_TEST(ReferenceAttentionTest, HugeLogitsNeitherOverflowNorGiveNaN) {
  using Scalar = TypeParam;
  // d = 1, scale 1: logits q k = +-1e4 and neighbours.
  RowMatrix<Scalar> q(2, 1), k(3, 1), v(3, 2);
  q << Scalar(100), Scalar(-100);
  k << Scalar(100), Scalar(99.99), Scalar(-100);
  v << 1, 2, 3, 4, 5, 6;
  const auto r = reference_attention(q, k, v, {Mask::none(), 1.0});
  ASSERT_TRUE(r.output.allFinite());
  ASSERT_TRUE(r.lse.allFinite());
  // Row 0: logits 1e4, 9999, -1e4 (in Scalar: 99.99 rounds, so use its value).
  // The expected values in long double: at |logit| = 1e4 a double logit is
  // only good to 1e-12, which exp turns into relative error.
  const LD l1 = 100.0L * static_cast<LD>(k(1, 0));
  const LD w1 = std::exp(l1 - 1e4L);
  EXPECT_NEAR(static_cast<double>(r.output(0, 0)), static_cast<double>((1 + 3 * w1) / (1 + w1)),
              8 * eps<Scalar>());
  EXPECT_NEAR(static_cast<double>(r.lse(0)), static_cast<double>(1e4L + std::log1p(w1)),
              2 * eps<Scalar>() * 1e4);
  // Row 1: logits -1e4, -9999, +1e4: all weight on key 2.
  EXPECT_NEAR(static_cast<double>(r.output(1, 1)), 6.0, 8 * eps<Scalar>());
  // Every logit hugely negative: still a proper average.
  RowMatrix<Scalar> kneg(3, 1);
  kneg << Scalar(-100), Scalar(-100), Scalar(-100);
  const auto rn = reference_attention(q.topRows(1), kneg, v, {Mask::none(), 1.0});
  EXPECT_NEAR(static_cast<double>(rn.output(0, 0)), 3.0, 8 * eps<Scalar>());
  EXPECT_NEAR(static_cast<double>(rn.lse(0)), -1e4 + std::log(3.0), 2 * eps<Scalar>() * 1e4);
}

TYPED_TEST(ReferenceAttentionTest, BadInputThrowsNamingTheArgumentAndShapes) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> q = random_matrix<Scalar>(3, 4, 14);
  const RowMatrix<Scalar> k = random_matrix<Scalar>(5, 4, 15);
  const RowMatrix<Scalar> v = random_matrix<Scalar>(5, 2, 16);
  const RowMatrix<Scalar> k3 = random_matrix<Scalar>(5, 3, 17);
  const RowMatrix<Scalar> v6 = random_matrix<Scalar>(6, 2, 18);
  const RowMatrix<Scalar> none(0, 4), flat(3, 0);
  EXPECT_TRUE(throws_invalid_argument([&] { reference_attention(q, k3, v); },
                                      {"reference_attention", "Q (3 x 4)", "K (5 x 3)", "width"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { reference_attention(q, k, v6); }, {"K (5 x 4)", "V (6 x 2)", "rows"}));
  EXPECT_TRUE(throws_invalid_argument([&] { reference_attention(none, k, v); }, {"Q", "empty", "(0 x 4)"}));
  EXPECT_TRUE(throws_invalid_argument([&] { reference_attention(flat, k, v); }, {"Q", "empty", "(3 x 0)"}));
  EXPECT_TRUE(throws_invalid_argument([&] { reference_attention(q, none, v); }, {"K", "empty"}));
  for (const double s : {0.0, -1.0, std::numeric_limits<double>::infinity(), std::nan("")})
    EXPECT_TRUE(throws_invalid_argument([&] { reference_attention(q, k, v, {Mask::none(), s}); }, {"scale"}));
  EXPECT_TRUE(throws_invalid_argument([&] { reference_attention(q, k, v, {Mask::causal(3)}); },
                                      {"offset 3", "causal", "n_q = 3", "n_k = 5", "0 <= offset <= 2"}));
  EXPECT_TRUE(throws_invalid_argument([&] { reference_attention(q, k, v, {Mask::strict_causal(-1)}); },
                                      {"offset -1", "strict"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        reference_attention(q, k, v, {Mask{MaskKind::none, 1}});
      },
      {"offset", "none"}));
  // More queries than keys under a causal mask: the default offset is invalid.
  EXPECT_NO_THROW(reference_attention(k, q, q));  // fine without a mask
  EXPECT_TRUE(throws_invalid_argument([&] { reference_attention(k, q, q, {Mask::causal()}); },
                                      {"offset -2", "default offset is n_k - n_q"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { reference_attention_probabilities(q, k3); }, {"Q (3 x 4)", "K (5 x 3)"}));
}

}  // namespace
}  // namespace attnkit
