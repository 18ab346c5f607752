// Tests of attnkit/attention/kv_cache.hpp: a cache grown token by token
// answers like the reference over the same keys and values (through the fused
// kernel, so with its error bound), grows amortised, and loses nothing on bad
// input. Built portable and -march=native, like flash_test.

#include "attnkit/attention/kv_cache.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::matrices_near;
using test::throws_invalid_argument;
using namespace test::flash_bounds;

template <typename Scalar>
class KVCacheTest : public ::testing::Test {};
TYPED_TEST_SUITE(KVCacheTest, test::Scalars);

TYPED_TEST(KVCacheTest, KVCacheAfterThousandsOfAppendsAnswersLikeTheReference) {
  using Scalar = TypeParam;
  const Index n = 3000, d = 64;
  const auto w = make_llm_like_workload<Scalar>({n, n, d, d}, 20);
  KVCache<Scalar> cache(d, d, 16);
  for (Index t = 0; t < n; ++t) {
    cache.append(w.k.row(t), w.v.row(t));
    if (t == 10 || t == 999 || t == n - 1) {
      // Decode: the newest token's query over everything so far.
      const auto got = cache.attend(w.q.row(t), {Mask::causal()}, FlashConfig{2});
      const auto ref = reference_attention(w.q.row(t), w.k.topRows(t + 1), w.v.topRows(t + 1));
      EXPECT_TRUE(within_bound(got, ref,
                               error_bound<Scalar>(w.q.row(t), w.k.topRows(t + 1), w.v.topRows(t + 1), 0.125,
                                                   128, BoundKind::worst_case)))
          << "after " << t + 1 << " appends";
    }
  }
  EXPECT_EQ(cache.size(), n);
  EXPECT_TRUE(matrices_near(cache.keys(), w.k, 0.0));
  EXPECT_TRUE(matrices_near(cache.values(), w.v, 0.0));
  // Amortised growth: capacity doubles from 16, so log2(3000 / 16) + 1 reallocations.
  EXPECT_LE(cache.reallocations(), 9);
  EXPECT_GE(cache.capacity(), n);
  EXPECT_EQ(cache.bytes(), static_cast<std::size_t>(cache.capacity() * 2 * d) * sizeof(Scalar));
  // Prefill of a block of 8 new tokens at the end, causal.
  const auto block = cache.attend(w.q.bottomRows(8), {Mask::causal()});
  const auto ref = reference_attention(w.q.bottomRows(8), w.k, w.v, {Mask::causal()});
  EXPECT_TRUE(within_bound(
      block, ref, error_bound<Scalar>(w.q.bottomRows(8), w.k, w.v, 0.125, 128, BoundKind::worst_case)));
  // Bad input appends nothing.
  EXPECT_TRUE(
      throws_invalid_argument([&] { cache.append(w.k.row(0), w.v.topRows(2)); }, {"KVCache::append"}));
  EXPECT_EQ(cache.size(), n);
  cache.clear();
  EXPECT_TRUE(throws_invalid_argument([&] { cache.attend(w.q.row(0)); }, {"empty"}));
  EXPECT_TRUE(throws_invalid_argument([] { KVCache<Scalar>(0, 4); }, {"d = 0"}));
}

// Appending rows of the cache's own views is safe, also when the append
// reallocates the storage those views point into. Without the copy the append
// would read freed memory: AddressSanitizer reports it in the sanitizer pass;
// in the plain (non -march=native) build glibc's free-list links overwrite the
// first bytes of the freed block (row 0 here), so the comparisons fail too.
TYPED_TEST(KVCacheTest, AppendingItsOwnRowsAcrossAReallocationIsSafe) {
  using Scalar = TypeParam;
  const auto w = make_iid_workload<Scalar>({1, 8, 4, 3}, 21);
  KVCache<Scalar> cache(4, 3, 8);
  cache.append(w.k, w.v);
  ASSERT_EQ(cache.size(), cache.capacity());  // full: the next append grows
  cache.append(cache.keys().topRows(3), cache.values().topRows(3));
  ASSERT_EQ(cache.size(), 11);
  EXPECT_GE(cache.reallocations(), 1);
  EXPECT_TRUE(matrices_near(cache.keys().bottomRows(3), w.k.topRows(3), 0.0));
  EXPECT_TRUE(matrices_near(cache.values().bottomRows(3), w.v.topRows(3), 0.0));
  EXPECT_TRUE(matrices_near(cache.keys().topRows(8), w.k, 0.0));
  // Without reallocation (capacity left): a row appended from a view.
  ASSERT_GT(cache.capacity(), cache.size());
  cache.append(cache.keys().row(1), cache.values().row(1));
  EXPECT_TRUE(matrices_near(cache.keys().row(11), w.k.row(1), 0.0));
  EXPECT_TRUE(matrices_near(cache.values().row(11), w.v.row(1), 0.0));
}

}  // namespace
}  // namespace attnkit
