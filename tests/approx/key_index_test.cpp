// ApproxKeyIndex (attnkit/approx/key_index.hpp): keys appended in pieces,
// queries at the end of the sequence (decoding) and over the whole sequence
// (prefill), checked against the long-double oracle with the same soundness
// and contract checks as approx_test.cpp (approx_cases.hpp); the binary-counter
// layout (blocks held, keys summarised) against its definition.

#include <bitset>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "approx/approx_cases.hpp"
#include "attnkit/approx/key_index.hpp"

namespace attnkit {
namespace {

using namespace approx_test;

template <typename Scalar>
class KeyIndexTest : public ::testing::Test {};
TYPED_TEST_SUITE(KeyIndexTest, test::Scalars);

ApproxIndexOptions small_layout() {
  ApproxIndexOptions o;
  o.block = 16;
  o.leaf = 4;
  return o;
}

TYPED_TEST(KeyIndexTest, DecodeAfterEveryAppendIsSound) {
  using Scalar = TypeParam;
  const Case cs = clustered(700, 8, 4, 3.0, 0.02, 90);
  const RowMatrix<Scalar> q = cs.q.cast<Scalar>(), k = cs.k.cast<Scalar>(), v = cs.v.cast<Scalar>();
  ApproxKeyIndex<Scalar> index(8, 3, small_layout());
  const double scale = 1.0 / std::sqrt(8.0);
  // Pieces of 1, 7, 16, 33, ... keys: every carry pattern of the counter.
  const std::vector<Index> pieces = {1, 7, 16, 33, 3, 64, 100, 1, 150, 5, 200, 120};
  Index n = 0;
  double closed = 0;  // keys summarised or skipped, over every query
  for (const Index p : pieces) {
    index.append(k.middleRows(n, p), v.middleRows(n, p));
    n += p;
    ASSERT_EQ(index.size(), n);
    // Blocks held: one per set bit of n / B_0 (the definition of the layout).
    EXPECT_EQ(static_cast<std::size_t>(index.blocks()),
              std::bitset<64>(static_cast<unsigned long long>(n / 16)).count());
    // The query of token n - 1 (causal, it sees keys [0, n)) and the next
    // token's (strict causal at offset n, the same keys).
    const RowMatrix<Scalar> kn = k.topRows(n), vn = v.topRows(n);
    for (const bool strict : {false, true}) {
      ApproxOptions opt;
      opt.mask = strict ? Mask::strict_causal(n) : Mask::causal();
      const RowMatrix<Scalar> qi = q.row(n - 1);
      for (const bool budgeted : {false, true}) {
        if (budgeted) opt.budget = 16;
        const ApproxResult<Scalar> res = index.attend(qi, opt);
        closed += res.stats.summarised_keys + res.stats.skipped_keys;
        test::NaiveMask nm;
        nm.kind = strict ? MaskKind::strict_causal : MaskKind::causal;
        nm.offset = strict ? n : n - 1;
        const Oracle o = oracle(qi, kn, vn, nm, scale);
        check_result(
            res, o, opt.eps, !budgeted,
            "n " + std::to_string(n) + (strict ? " strict" : " causal") + (budgeted ? " budgeted" : ""));
      }
    }
  }
  // The index's blocks were used, not only the exact kernel.
  EXPECT_GT(closed, 0.0);
}

TYPED_TEST(KeyIndexTest, PrefillOverTheIndexIsSound) {
  using Scalar = TypeParam;
  const Case cs = clustered(517, 8, 6, 2.0, 0.05, 91);
  const RowMatrix<Scalar> q = cs.q.cast<Scalar>(), k = cs.k.cast<Scalar>(), v = cs.v.cast<Scalar>();
  ApproxKeyIndex<Scalar> index(8, 3, small_layout());
  index.append(k.topRows(200), v.topRows(200));
  index.append(k.bottomRows(317), v.bottomRows(317));
  for (const MaskKind kind : kMasks) {
    ApproxOptions opt;
    opt.mask = Mask(kind);
    const ApproxResult<Scalar> res = index.attend(q, opt);
    const Oracle o = oracle(q, k, v, naive_mask(kind), 1.0 / std::sqrt(8.0));
    // Only the rows whose prefix decomposes into the blocks the index holds
    // (here rows >= 511: 517 / 16 = 32 = 2^5) can use them; the others are
    // attended exactly. Soundness is what is checked.
    check_result(res, o, opt.eps, true, std::string("prefill mask ") + to_string(kind));
  }
}

TYPED_TEST(KeyIndexTest, AppendingBuildsEachKeyLogarithmicallyOften) {
  // One key at a time: a key enters the summaries once per level of the
  // counter that carries over it, so keys_summarised <= n (1 + log2(n / B_0)).
  using Scalar = TypeParam;
  const Index n = 1000;
  const RowMatrix<Scalar> k = normal(n, 4, 92).cast<Scalar>(), v = normal(n, 2, 93).cast<Scalar>();
  ApproxKeyIndex<Scalar> index(4, 2, small_layout());
  for (Index j = 0; j < n; ++j)
    index.append(k.row(j), v.row(j));
  EXPECT_LE(static_cast<double>(index.keys_summarised()), static_cast<double>(n) * (1 + std::log2(n / 16.0)));
  EXPECT_GT(index.index_bytes(), 0u);
}

TYPED_TEST(KeyIndexTest, BadInputNamesTheArgument) {
  using Scalar = TypeParam;
  EXPECT_TRUE(test::throws_invalid_argument([] { ApproxKeyIndex<Scalar>(0, 2); }, {"d"}));
  ApproxIndexOptions bad;
  bad.leaf = 0;
  EXPECT_TRUE(test::throws_invalid_argument([&] { ApproxKeyIndex<Scalar>(4, 2, bad); }, {"index.leaf"}));
  ApproxKeyIndex<Scalar> index(4, 2);
  const RowMatrix<Scalar> q = normal(1, 4, 94).cast<Scalar>();
  EXPECT_TRUE(test::throws_invalid_argument([&] { index.attend(q); }, {"empty"}));
  RowMatrix<Scalar> k = normal(3, 4, 95).cast<Scalar>();
  const RowMatrix<Scalar> v = normal(3, 2, 96).cast<Scalar>(), v2 = normal(2, 2, 97).cast<Scalar>();
  EXPECT_TRUE(test::throws_invalid_argument([&] { index.append(k, v2); }, {"keys", "values"}));
  k(1, 2) = std::numeric_limits<Scalar>::infinity();
  EXPECT_TRUE(test::throws_invalid_argument([&] { index.append(k, v); }, {"K", "non-finite"}));
  EXPECT_EQ(index.size(), 0);
}

}  // namespace
}  // namespace attnkit
