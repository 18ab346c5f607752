// Tests of attnkit/similarity/alibi.hpp: the standard slopes (pinned to the
// reference implementation's values), the fused kernel with AlibiScore
// against the reference, per-head slopes through the multi-head entry point,
// bad slopes.

#include "attnkit/similarity/alibi.hpp"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/heads.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "similarity/policy_check.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::as_double;
using test::eps;
using test::throws_invalid_argument;

TEST(AlibiSlopes, AreTheStandardOnes) {
  // Press et al.'s get_slopes: powers of two 2^(-8 (h + 1) / H); H = 6 takes
  // the 4 slopes of H = 4, then slopes 0 and 2 of H = 8.
  const std::vector<double> h8 = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625};
  for (Index h = 0; h < 8; ++h)
    EXPECT_EQ(alibi_slope(h, 8), h8[static_cast<std::size_t>(h)]);
  const std::vector<double> h6 = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  for (Index h = 0; h < 6; ++h)
    EXPECT_EQ(alibi_slope(h, 6), h6[static_cast<std::size_t>(h)]);
  EXPECT_EQ(alibi_slope(0, 1), 0.00390625);
  EXPECT_TRUE(throws_invalid_argument([] { alibi_slope(3, 3); }, {"head 3", "heads = 3"}));
}

template <typename Scalar>
class AlibiTest : public ::testing::Test {};
TYPED_TEST_SUITE(AlibiTest, test::Scalars);

TYPED_TEST(AlibiTest, FusedKernelMatchesTheDefinition) {
  using Scalar = TypeParam;
  const double slope = 0.05;
  const auto w = make_llm_like_workload<Scalar>({120, 200, 32, 24}, 9900);
  // The dot product's (d + 3) u error plus the bias m |i - j| (positions
  // exact, one product and one subtraction: 2 u of it).
  const double u = 0.5 * eps<Scalar>(), scale = 1.0 / std::sqrt(32.0);
  Eigen::VectorXd err(120), arg(120);
  for (Index i = 0; i < 120; ++i) {
    double e = 0, a = 0;
    for (Index j = 0; j < 200; ++j) {
      const double dot = scale * (w.q.row(i).template cast<double>().cwiseAbs() *
                                  w.k.row(j).template cast<double>().cwiseAbs().transpose())(0);
      const double bias = slope * std::fabs(as_double(80 + i - j));
      e = std::max(e, u * ((as_double(32) + 3) * dot + 2 * bias));
      a = std::max(a, dot + bias);
    }
    err(i) = e;
    arg(i) = 2 * a;
  }
  EXPECT_TRUE(test::flash_matches_reference(w, AlibiScore{slope}, err, arg));
}

// AlibiScore::standard() through the multi-head entry point: head h uses the
// standard slope of h among the heads, as the single-head call with that
// slope computes it (bit for bit: one thread, the same tiles).
TYPED_TEST(AlibiTest, StandardSlopesFollowTheHead) {
  using Scalar = TypeParam;
  const Index heads = 6, n = 64;
  const auto w = make_iid_workload<Scalar>({heads * n, n, 16, 16}, 9950);
  const auto all = flash_attention_heads(w.q, w.k, w.v, {heads, 1}, {Mask::causal()}, FlashConfig{1},
                                         AlibiScore::standard());
  const auto ref =
      reference_attention_heads(w.q, w.k, w.v, {heads, 1}, {Mask::causal()}, AlibiScore::standard());
  for (Index h = 0; h < heads; ++h) {
    const AlibiScore one{alibi_slope(h, heads)};
    const RowMatrix<Scalar> qh = w.q.middleRows(h * n, n);
    const auto single = flash_attention(qh, w.k, w.v, {Mask::causal()}, FlashConfig{1}, one);
    EXPECT_TRUE(test::matrices_near(all.output.middleRows(h * n, n), single.output, 0.0)) << "head " << h;
    const auto single_ref = reference_attention(qh, w.k, w.v, {Mask::causal()}, one);
    EXPECT_TRUE(test::matrices_near(ref.output.middleRows(h * n, n), single_ref.output, 0.0)) << "head " << h;
  }
}

// A batch of sequences stacked as batch x heads query heads: the slopes count
// heads within a sequence (HeadLayout::batch).
TYPED_TEST(AlibiTest, StandardSlopesRestartWithEveryBatchItem) {
  using Scalar = TypeParam;
  const Index batch = 2, heads = 3, n = 40;
  const auto w = make_iid_workload<Scalar>({batch * heads * n, batch * n, 16, 16}, 9960);
  const HeadLayout layout{batch * heads, batch, batch};
  const auto all =
      flash_attention_heads(w.q, w.k, w.v, layout, {Mask::causal()}, FlashConfig{1}, AlibiScore::standard());
  for (Index h = 0; h < batch * heads; ++h) {
    const AlibiScore one{alibi_slope(h % heads, heads)};
    const Index g = layout.kv_head(h);
    const auto single = flash_attention(w.q.middleRows(h * n, n), w.k.middleRows(g * n, n),
                                        w.v.middleRows(g * n, n), {Mask::causal()}, FlashConfig{1}, one);
    EXPECT_TRUE(test::matrices_near(all.output.middleRows(h * n, n), single.output, 0.0)) << "head " << h;
  }
  // The reference counts heads the same way: each head as reference_attention
  // computes it with its batch item's slope (the same function, bit for bit).
  const auto ref = reference_attention_heads(w.q, w.k, w.v, layout, {Mask::causal()}, AlibiScore::standard());
  for (Index h = 0; h < batch * heads; ++h) {
    const Index g = layout.kv_head(h);
    const auto single =
        reference_attention(w.q.middleRows(h * n, n), w.k.middleRows(g * n, n), w.v.middleRows(g * n, n),
                            {Mask::causal()}, AlibiScore{alibi_slope(h % heads, heads)});
    EXPECT_TRUE(test::matrices_near(ref.output.middleRows(h * n, n), single.output, 0.0))
        << "reference head " << h;
  }
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention_heads(w.q, w.k, w.v, HeadLayout{6, 2, 4}, {}, {}, AlibiScore::standard());
      },
      {"batch = 4"}));
}

TYPED_TEST(AlibiTest, BadSlopeThrows) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({4, 6, 4, 4}, 9990);
  EXPECT_TRUE(throws_invalid_argument([&] { flash_attention(w.q, w.k, w.v, {}, {}, AlibiScore{-0.5}); },
                                      {"slope = -0.5"}));
}

}  // namespace
}  // namespace attnkit
