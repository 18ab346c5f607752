// Tests of attnkit/prune/local_search.hpp: the 1-swap search never worsens its
// start, ends 1-swap optimal (checked by trying every swap in long double),
// respects rotary pairs and its swap cap.

#include "attnkit/prune/local_search.hpp"

#include <vector>

#include <gtest/gtest.h>

#include "attnkit/prune/greedy.hpp"
#include "attnkit/prune/optimum.hpp"
#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class LocalSearchTest : public ::testing::Test {};
TYPED_TEST_SUITE(LocalSearchTest, test::Scalars);

// Rounding of F(B) evaluated in long double over |B|^2 entries.
double eval_tol(const RowMatrix<double>& w, Index dropped) {
  return 4.0 * static_cast<double>(dropped * dropped + 1) *
         static_cast<double>(std::numeric_limits<LD>::epsilon()) * w.cwiseAbs().maxCoeff();
}

TYPED_TEST(LocalSearchTest, NeverWorsensItsStartAndEndsOneSwapOptimal) {
  using Scalar = TypeParam;
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    const Index d = 3 + static_cast<Index>(seed % 20);
    const RowMatrix<Scalar> w = test::random_weights(d, 300 + seed).cast<Scalar>();
    const RowMatrix<double> wd = w.template cast<double>();
    const Index kept = 1 + static_cast<Index>((seed * 7) % static_cast<std::uint64_t>(d));
    const DimSelection start = test::random_selection(d, kept, seed);
    const SwapSearchResult r = local_search_swap(w, start);
    EXPECT_TRUE(r.converged);
    ASSERT_EQ(r.selection.kept_count(), kept);
    const LD f_start = test::objective_ld(wd, start), f_end = test::objective_ld(wd, r.selection);
    EXPECT_LE(static_cast<double>(f_end), static_cast<double>(f_start) + eval_tol(wd, d - kept))
        << "seed " << seed;
    if (r.swaps > 0) {
      EXPECT_LT(f_end, f_start) << "seed " << seed;
    }
    // No single swap lowers F by more than the search's own tolerance.
    const double search_tol =
        8.0 * static_cast<double>(d) * test::eps<double>() * test::row_abs_max(wd) + eval_tol(wd, d - kept);
    for (const Index a : r.selection.kept())
      for (const Index b : r.selection.dropped()) {
        std::vector<Index> kept_set;
        for (const Index i : r.selection.kept())
          kept_set.push_back(i == a ? b : i);
        const LD f_swap = test::objective_ld(wd, DimSelection(d, kept_set));
        EXPECT_GE(static_cast<double>(f_swap), static_cast<double>(f_end) - search_tol)
            << "seed " << seed << ": swapping " << a << " <-> " << b << " improves";
      }
  }
}

TYPED_TEST(LocalSearchTest, OptimumIsAFixedPoint) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> w = test::random_weights(12, 9).cast<Scalar>();
  const DimSelection best = select_optimal(w, 5);
  const SwapSearchResult r = local_search_swap(w, best);
  EXPECT_EQ(r.swaps, 0);
  EXPECT_EQ(r.selection, best);
}

TYPED_TEST(LocalSearchTest, SwapCapStopsEarly) {
  using Scalar = TypeParam;
  const Index d = 16;
  const RowMatrix<Scalar> w = test::random_weights(d, 21).cast<Scalar>();
  // Start from the worst greedy choice: keep the smallest nodes.
  const RowMatrix<Scalar> neg = -w;
  const DimSelection bad = select_topk(neg, 8);
  const SwapSearchResult full = local_search_swap(w, bad);
  ASSERT_GE(full.swaps, 2);
  const SwapSearchResult capped = local_search_swap(w, bad, {}, 1);
  EXPECT_EQ(capped.swaps, 1);
  EXPECT_FALSE(capped.converged);
  EXPECT_LT(test::objective_ld(w.template cast<double>(), capped.selection),
            test::objective_ld(w.template cast<double>(), bad));
}

TYPED_TEST(LocalSearchTest, RotaryPairsAreSwappedWhole) {
  using Scalar = TypeParam;
  const Index d = 20;
  const RowMatrix<Scalar> w = test::random_weights(d, 31).cast<Scalar>();
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half}) {
    const SelectOptions so{layout};
    const DimSelection start = select_topk(w, 10, so);
    const SwapSearchResult r = local_search_swap(w, start, so);
    EXPECT_EQ(r.selection.kept_count(), 10);
    for (const Index i : r.selection.kept())
      EXPECT_TRUE(r.selection.keeps(rotary_partner(i, d, layout)));
    EXPECT_LE(test::objective_ld(w.template cast<double>(), r.selection),
              test::objective_ld(w.template cast<double>(), start));
    std::vector<Index> split = {0};
    EXPECT_TRUE(throws_invalid_argument([&] { local_search_swap(w, DimSelection(d, split), so); },
                                        {"local_search_swap", "splits the rotary pair"}));
  }
}

TYPED_TEST(LocalSearchTest, BadInputThrows) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> w = RowMatrix<Scalar>::Identity(4, 4);
  EXPECT_TRUE(throws_invalid_argument([&] { local_search_swap(w, DimSelection(5, {0})); },
                                      {"local_search_swap", "D = 5", "(4 x 4)"}));
  const RowMatrix<Scalar> rect = RowMatrix<Scalar>::Ones(4, 3);
  EXPECT_TRUE(throws_invalid_argument([&] { local_search_swap(rect, DimSelection(4, {0})); }, {"square"}));
}

}  // namespace
}  // namespace attnkit
