// Tests of attnkit/attention/heads.hpp: stacked multi-head and grouped-query
// attention equals the heads computed one by one, and the head layout is
// validated.

#include "attnkit/attention/heads.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::matrices_near;
using test::throws_invalid_argument;
using namespace test::flash_bounds;

template <typename Scalar>
class HeadsTest : public ::testing::Test {};
TYPED_TEST_SUITE(HeadsTest, test::Scalars);

/// `heads` independent workloads stacked into one (heads * n) x d matrix each.
template <typename Scalar>
Workload<Scalar> stacked(Index heads, Index kv_heads, Index n_q, Index n_k, Index d, Index d_v,
                         std::uint64_t seed) {
  Workload<Scalar> w{RowMatrix<Scalar>(heads * n_q, d), RowMatrix<Scalar>(kv_heads * n_k, d),
                     RowMatrix<Scalar>(kv_heads * n_k, d_v)};
  for (Index h = 0; h < heads; ++h) {
    const auto one = make_llm_like_workload<Scalar>({n_q, n_k, d, d_v}, seed + static_cast<std::uint64_t>(h));
    w.q.middleRows(h * n_q, n_q) = one.q;
    if (h < kv_heads) {
      w.k.middleRows(h * n_k, n_k) = one.k;
      w.v.middleRows(h * n_k, n_k) = one.v;
    }
  }
  return w;
}

TYPED_TEST(HeadsTest, StackedHeadsEqualHeadByHead) {
  using Scalar = TypeParam;
  for (const auto& [hq, hkv] : {std::pair<Index, Index>{1, 1}, {4, 4}, {4, 2}, {6, 1}, {8, 2}})
    for (const Index n_q : {1, 3, 90})
      for (const Mask mask :
           {Mask::none(), Mask::causal(), Mask::strict_causal().with_window(30).with_sinks(1)}) {
        const Index n_k = 150;
        const auto w = stacked<Scalar>(hq, hkv, n_q, n_k, 32, 24, 100 * static_cast<std::uint64_t>(hq + hkv));
        const AttentionOptions opt{mask, {}};
        const HeadLayout layout{hq, hkv};
        // One thread: no key split anywhere, so each head is bit for bit
        // what a single-head call computes.
        const auto all = flash_attention_heads(w.q, w.k, w.v, layout, opt, FlashConfig{1});
        const auto ref = reference_attention_heads(w.q, w.k, w.v, layout, opt);
        for (Index h = 0; h < hq; ++h) {
          const Index g = layout.kv_head(h);
          EXPECT_EQ(g, h / (hq / hkv));
          const auto one = flash_attention(w.q.middleRows(h * n_q, n_q), w.k.middleRows(g * n_k, n_k),
                                           w.v.middleRows(g * n_k, n_k), opt, FlashConfig{1});
          ASSERT_TRUE(matrices_near(all.output.middleRows(h * n_q, n_q), one.output, 0.0)) << "head " << h;
          const auto one_ref = reference_attention(w.q.middleRows(h * n_q, n_q), w.k.middleRows(g * n_k, n_k),
                                                   w.v.middleRows(g * n_k, n_k), opt);
          ASSERT_TRUE(matrices_near(ref.output.middleRows(h * n_q, n_q), one_ref.output, 0.0))
              << "head " << h;
        }
        // Two threads (heads and blocks spread together, keys split only
        // when items are scarce): within the kernel's bound of the reference.
        const auto two = flash_attention_heads(w.q, w.k, w.v, layout, opt, FlashConfig{2});
        for (Index h = 0; h < hq; ++h) {
          const Index g = layout.kv_head(h);
          const RowMatrix<Scalar> qh = w.q.middleRows(h * n_q, n_q), kh = w.k.middleRows(g * n_k, n_k),
                                  vh = w.v.middleRows(g * n_k, n_k);
          const AttentionResult<Scalar> got{two.output.middleRows(h * n_q, n_q),
                                            two.lse.segment(h * n_q, n_q)};
          const AttentionResult<Scalar> exact{ref.output.middleRows(h * n_q, n_q),
                                              ref.lse.segment(h * n_q, n_q)};
          EXPECT_TRUE(within_bound(
              got, exact, error_bound(qh, kh, vh, 1.0 / std::sqrt(32.0), 128, BoundKind::worst_case)))
              << "head " << h << " of " << hq << "/" << hkv << " n_q " << n_q;
        }
      }
}

// A decode step of many heads keeps every thread busy without splitting any
// head's keys: bit-identical to one thread.
TYPED_TEST(HeadsTest, ManyHeadDecodeNeedsNoKeySplit) {
  using Scalar = TypeParam;
  const auto w = stacked<Scalar>(8, 2, 1, 3000, 64, 64, 900);
  const AttentionOptions opt{Mask::causal(), {}};
  const auto one = flash_attention_heads(w.q, w.k, w.v, {8, 2}, opt, FlashConfig{1});
  const auto two = flash_attention_heads(w.q, w.k, w.v, {8, 2}, opt, FlashConfig{2});
  EXPECT_TRUE(matrices_near(one.output, two.output, 0.0));
  EXPECT_TRUE(matrices_near(one.lse, two.lse, 0.0));
}

TYPED_TEST(HeadsTest, PartialOverEveryHeadEqualsThePartialPerHead) {
  using Scalar = TypeParam;
  const auto w = stacked<Scalar>(4, 2, 20, 80, 16, 16, 950);
  KeySet ks;
  ks.ranges = std::vector<KeyRange>{KeyRange{5, 30}, KeyRange{50, 71}};
  RowMatrix<Scalar> out(80, 16);
  Vector<Scalar> lse(80);
  flash_attention_heads_partial_into(w.q, w.k, w.v, {4, 2}, ks, out, lse, {Mask::causal()}, FlashConfig{1});
  for (Index h = 0; h < 4; ++h) {
    const Index g = h / 2;
    const auto one =
        flash_attention_partial(w.q.middleRows(h * 20, 20), w.k.middleRows(g * 80, 80),
                                w.v.middleRows(g * 80, 80), ks, {Mask::causal()}, FlashConfig{1});
    EXPECT_TRUE(matrices_near(out.middleRows(h * 20, 20), one.output, 0.0)) << "head " << h;
  }
}

TYPED_TEST(HeadsTest, BadHeadLayoutsThrow) {
  using Scalar = TypeParam;
  const auto w = stacked<Scalar>(4, 2, 5, 10, 8, 8, 990);
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention_heads(w.q, w.k, w.v, {4, 3});
      },
      {"q_heads = 4", "kv_heads = 3"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention_heads(w.q, w.k, w.v, {0, 1});
      },
      {"q_heads = 0"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention_heads(w.q.topRows(19), w.k, w.v, {4, 2});
      },
      {"Q (19 x 8)", "q_heads = 4"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention_heads(w.q, w.k.topRows(19), w.v.topRows(19), {4, 2});
      },
      {"K (19 x 8)", "kv_heads = 2"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention_heads(w.q, w.k, w.v.topRows(18), {4, 2});
      },
      {"V (18 x 8)"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        reference_attention_heads(w.q, w.k, w.v, {4, 3});
      },
      {"kv_heads = 3"}));
  RowMatrix<Scalar> out(20, 7);
  Vector<Scalar> lse(20);
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        flash_attention_heads_into(w.q, w.k, w.v, {4, 2}, out, lse);
      },
      {"out (20 x 7)"}));
}

}  // namespace
}  // namespace attnkit
