// Tests of attnkit/prune/greedy.hpp: top-k, greedy remove/remain with exact and
// literal marginals, rotary pairs, against brute-force re-implementations that
// recompute every marginal from scratch in long double.

#include "attnkit/prune/greedy.hpp"

#include <cstdint>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/detail/random.hpp"
#include "attnkit/position/rotary.hpp"
#include "attnkit/prune/selection.hpp"
#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class GreedyTest : public ::testing::Test {};
TYPED_TEST_SUITE(GreedyTest, test::Scalars);

TYPED_TEST(GreedyTest, TopKKeepsLargestDiagonalWithLowIndexTies) {
  using Scalar = TypeParam;
  RowMatrix<Scalar> w = RowMatrix<Scalar>::Zero(6, 6);
  w.diagonal() << 3, 9, 1, 9, 5, 0;
  w(0, 2) = w(2, 0) = 100;  // edges are ignored by top-k
  EXPECT_EQ(select_topk(w, 3).kept(), (std::vector<Index>{1, 3, 4}));
  EXPECT_EQ(select_topk(w, 1).kept(), (std::vector<Index>{1}));  // tie 9 / 9: lower index
  EXPECT_EQ(select_topk(w, 6).kept().size(), 6u);
}

// With a diagonal W the exact-marginal greedy orders have nothing but node
// weights to go on: both equal top-D'.
TYPED_TEST(GreedyTest, ExactGreedyEqualsTopKForDiagonalWeights) {
  using Scalar = TypeParam;
  for (std::uint64_t seed = 0; seed < 40; ++seed) {
    detail::Random rng(seed);
    const Index d = 2 + rng.index(30);
    RowMatrix<Scalar> w = RowMatrix<Scalar>::Zero(d, d);
    for (Index i = 0; i < d; ++i)
      w(i, i) = static_cast<Scalar>(rng.uniform() * 10);
    const Index kept = 1 + rng.index(d);
    const DimSelection top = select_topk(w, kept);
    EXPECT_EQ(select_greedy_remove(w, kept), top) << "seed " << seed;
    EXPECT_EQ(select_greedy_remain(w, kept), top) << "seed " << seed;
  }
}

// Independent greedy: every marginal recomputed from scratch as a difference
// of objectives (exact) or as the note's literal sum, in long double.
enum class Order { remove, remain };
DimSelection brute_greedy(const RowMatrix<double>& w, Index kept, Order order, GreedyRule rule) {
  const Index d = w.rows();
  std::vector<bool> dropped(static_cast<std::size_t>(d), order == Order::remain);
  const Index steps = order == Order::remove ? d - kept : kept;
  for (Index step = 0; step < steps; ++step) {
    Index best = -1;
    LD best_value = 0;
    for (Index i = 0; i < d; ++i) {
      if (dropped[static_cast<std::size_t>(i)] != (order == Order::remain)) continue;
      LD value;
      if (rule == GreedyRule::exact) {
        std::vector<bool> with = dropped;
        with[static_cast<std::size_t>(i)] = order == Order::remove;
        value = test::objective_of_mask(w, with) - test::objective_of_mask(w, dropped);
        if (order == Order::remain) value = -value;  // F(C) - F(C - i)
      } else {
        value = static_cast<LD>(w(i, i));
        for (Index j = 0; j < d; ++j)
          if (j != i && dropped[static_cast<std::size_t>(j)]) value += static_cast<LD>(w(i, j));
      }
      const bool better = order == Order::remove ? value < best_value : value > best_value;
      if (best < 0 || better) {
        best = i;
        best_value = value;
      }
    }
    dropped[static_cast<std::size_t>(best)] = order == Order::remove;
  }
  std::vector<Index> keep;
  for (Index i = 0; i < d; ++i)
    if (!dropped[static_cast<std::size_t>(i)]) keep.push_back(i);
  return DimSelection(d, keep);
}

TYPED_TEST(GreedyTest, GreedyMatchesBruteForceMarginals) {
  using Scalar = TypeParam;
  for (std::uint64_t seed = 1; seed <= 30; ++seed) {
    const Index d = 4 + static_cast<Index>(seed % 17);
    const RowMatrix<double> wd = test::random_weights(d, seed);
    const RowMatrix<Scalar> w = wd.cast<Scalar>();
    const RowMatrix<double> wr = w.template cast<double>();  // what the selectors see
    const Index kept = 1 + static_cast<Index>(seed % static_cast<std::uint64_t>(d));
    for (const GreedyRule rule : {GreedyRule::exact, GreedyRule::literal}) {
      EXPECT_EQ(select_greedy_remove(w, kept, rule), brute_greedy(wr, kept, Order::remove, rule))
          << "seed " << seed << " rule " << static_cast<int>(rule);
      EXPECT_EQ(select_greedy_remain(w, kept, rule), brute_greedy(wr, kept, Order::remain, rule))
          << "seed " << seed << " rule " << static_cast<int>(rule);
    }
  }
}

// docs/pruning.md: the literal rule is the exact greedy on W' = (W + diag W) / 2.
TEST(GreedyRuleTest, LiteralIsExactGreedyOnHalvedEdges) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    const Index d = 6 + static_cast<Index>(seed % 11);
    const RowMatrix<double> w = test::random_weights(d, 100 + seed);
    RowMatrix<double> half = 0.5 * w;
    half.diagonal() = w.diagonal();
    const Index kept = d / 2;
    EXPECT_EQ(select_greedy_remove(w, kept, GreedyRule::literal), select_greedy_remove(half, kept)) << seed;
    EXPECT_EQ(select_greedy_remain(w, kept, GreedyRule::literal), select_greedy_remain(half, kept)) << seed;
  }
}

// Rotary pairs: whole pairs, the kept count rounded down to even, and the same
// answer as running the selector on the explicitly reduced pair matrix.
TYPED_TEST(GreedyTest, RotaryPairsStayTogether) {
  using Scalar = TypeParam;
  const Index d = 16;
  const RowMatrix<Scalar> w = test::random_weights(d, 5).cast<Scalar>();
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half}) {
    const SelectOptions so{layout};
    RowMatrix<double> reduced = RowMatrix<double>::Zero(d / 2, d / 2);
    for (Index p = 0; p < d / 2; ++p)
      for (Index r = 0; r < d / 2; ++r) {
        const auto [a, b] = rotary_pair_dims(p, d, layout);
        const auto [c, e] = rotary_pair_dims(r, d, layout);
        for (const Index i : {a, b})
          for (const Index j : {c, e})
            reduced(p, r) += static_cast<double>(w(i, j));
      }
    const auto expand = [&](const DimSelection& pairs) {
      std::vector<Index> dims;
      for (const Index p : pairs.kept()) {
        const auto [a, b] = rotary_pair_dims(p, d, layout);
        dims.push_back(a);
        dims.push_back(b);
      }
      return DimSelection(d, dims);
    };
    for (const Index kept : {2, 7, 8, 15}) {
      const DimSelection sel[] = {select_topk(w, kept, so),
                                  select_greedy_remove(w, kept, GreedyRule::exact, so),
                                  select_greedy_remain(w, kept, GreedyRule::exact, so),
                                  select_greedy_remain(w, kept, GreedyRule::literal, so)};
      for (const DimSelection& s : sel) {
        EXPECT_EQ(s.kept_count(), kept / 2 * 2);
        for (const Index i : s.kept())
          EXPECT_TRUE(s.keeps(rotary_partner(i, d, layout))) << i;
      }
      EXPECT_EQ(sel[0], expand(select_topk(reduced, kept / 2)));
      EXPECT_EQ(sel[1], expand(select_greedy_remove(reduced, kept / 2)));
      EXPECT_EQ(sel[2], expand(select_greedy_remain(reduced, kept / 2)));
      EXPECT_EQ(sel[3], expand(select_greedy_remain(reduced, kept / 2, GreedyRule::literal)));
    }
    EXPECT_TRUE(
        throws_invalid_argument([&] { select_topk(w, 1, so); }, {"select_topk", "whole rotary pair"}));
  }
  const RowMatrix<Scalar> odd = test::random_weights(5, 1).cast<Scalar>();
  EXPECT_TRUE(
      throws_invalid_argument([&] { select_greedy_remain(odd, 2, GreedyRule::exact, {RotaryLayout::half}); },
                              {"select_greedy_remain", "even key width", "D = 5"}));
}

TYPED_TEST(GreedyTest, BadWeightsOrCountThrow) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> rect = RowMatrix<Scalar>::Ones(3, 4), empty(0, 0);
  RowMatrix<Scalar> nan = RowMatrix<Scalar>::Identity(3, 3);
  nan(1, 2) = std::numeric_limits<Scalar>::quiet_NaN();
  const RowMatrix<Scalar> ok = RowMatrix<Scalar>::Identity(3, 3);
  EXPECT_TRUE(throws_invalid_argument([&] { select_topk(rect, 1); }, {"select_topk", "(3 x 4)", "square"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { select_greedy_remove(empty, 1); }, {"select_greedy_remove", "empty"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { select_greedy_remain(nan, 1); }, {"select_greedy_remain", "NaN"}));
  EXPECT_TRUE(throws_invalid_argument([&] { select_topk(ok, 0); }, {"kept = 0", "[1, 3]"}));
  EXPECT_TRUE(throws_invalid_argument([&] { select_topk(ok, 4); }, {"kept = 4", "[1, 3]"}));
}

}  // namespace
}  // namespace attnkit
