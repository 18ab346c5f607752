// Tests of attnkit/prune/optimum.hpp: the enumeration equals an independent
// bitmask brute force in long double, and (a theorem) lower-bounds every
// selector's objective.

#include "attnkit/prune/optimum.hpp"

#include <vector>

#include <gtest/gtest.h>

#include "attnkit/prune/greedy.hpp"
#include "attnkit/prune/local_search.hpp"
#include "attnkit/prune/residual.hpp"
#include "attnkit/prune/weights.hpp"
#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class OptimumTest : public ::testing::Test {};
TYPED_TEST_SUITE(OptimumTest, test::Scalars);

// min over all dropped sets of size d - kept, by bitmask, in long double.
LD brute_minimum(const RowMatrix<double>& w, Index kept) {
  const Index d = w.rows();
  LD best = std::numeric_limits<LD>::infinity();
  for (unsigned long mask = 0; mask < (1ul << d); ++mask) {
    if (__builtin_popcountl(mask) != d - kept) continue;
    std::vector<bool> dropped(static_cast<std::size_t>(d));
    for (Index i = 0; i < d; ++i)
      dropped[static_cast<std::size_t>(i)] = (mask >> i) & 1ul;
    best = std::min(best, test::objective_of_mask(w, dropped));
  }
  return best;
}

// The returned set is within 4 n^2 eps max|W| (double accumulation) of the true minimum.
double optimum_tol(const RowMatrix<double>& w) {
  const double n = static_cast<double>(w.rows());
  return 8.0 * n * n * test::eps<double>() * w.cwiseAbs().maxCoeff();
}

TYPED_TEST(OptimumTest, MatchesBitmaskBruteForce) {
  using Scalar = TypeParam;
  for (const Index d : {1, 2, 3, 5, 8, 12}) {
    for (std::uint64_t seed = 1; seed <= 4; ++seed) {
      const RowMatrix<Scalar> w =
          test::random_weights(d, 40 * seed + static_cast<std::uint64_t>(d)).cast<Scalar>();
      const RowMatrix<double> wd = w.template cast<double>();
      for (Index kept = 1; kept <= d; ++kept) {
        const DimSelection s = select_optimal(w, kept);
        ASSERT_EQ(s.kept_count(), kept);
        EXPECT_NEAR(static_cast<double>(test::objective_ld(wd, s)),
                    static_cast<double>(brute_minimum(wd, kept)), optimum_tol(wd))
            << "d = " << d << ", kept = " << kept;
      }
    }
  }
}

// A W with negative edges (not PSD): F is not monotone, enumeration must still be exact.
TEST(OptimumIndefinite, MatchesBruteForceWithNegativeEdges) {
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    RowMatrix<double> w = test::random_matrix<double>(10, 10, seed);
    w = (0.5 * (w + w.transpose())).eval();
    const DimSelection s = select_optimal(w, 4);
    EXPECT_NEAR(static_cast<double>(test::objective_ld(w, s)), static_cast<double>(brute_minimum(w, 4)),
                optimum_tol(w));
  }
}

// Theorem: the optimum lower-bounds every selector on the quadratic objective.
TYPED_TEST(OptimumTest, LowerBoundsEverySelector) {
  using Scalar = TypeParam;
  for (std::uint64_t seed = 1; seed <= 25; ++seed) {
    const Index d = 10 + static_cast<Index>(seed % 5);
    const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(16, d, seed);
    const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(60, d, seed + 1000);
    const RowMatrix<double> w = gram_weights(q, k);
    for (const Index kept : {Index(1), d / 4, d / 2, d - 1}) {
      const double f_opt = static_cast<double>(test::objective_ld(w, select_optimal(w, kept)));
      const DimSelection others[] = {select_topk(w, kept),
                                     select_greedy_remove(w, kept),
                                     select_greedy_remain(w, kept),
                                     select_greedy_remove(w, kept, GreedyRule::literal),
                                     select_greedy_remain(w, kept, GreedyRule::literal),
                                     local_search_swap(w, select_greedy_remain(w, kept)).selection,
                                     select_residual(q, k, kept)};
      for (const DimSelection& s : others)
        EXPECT_LE(f_opt, static_cast<double>(test::objective_ld(w, s)) + optimum_tol(w))
            << "seed " << seed << ", kept " << kept;
    }
  }
}

TYPED_TEST(OptimumTest, RotaryPairs) {
  using Scalar = TypeParam;
  const Index d = 20;  // 10 pairs
  const RowMatrix<Scalar> w = test::random_weights(d, 77).cast<Scalar>();
  const RowMatrix<double> wd = w.template cast<double>();
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half}) {
    const SelectOptions so{layout};
    const DimSelection s = select_optimal(w, 9, so);  // 4 pairs
    EXPECT_EQ(s.kept_count(), 8);
    for (const Index i : s.kept())
      EXPECT_TRUE(s.keeps(rotary_partner(i, d, layout)));
    // Brute force over the pair subsets.
    LD best = std::numeric_limits<LD>::infinity();
    for (unsigned mask = 0; mask < (1u << 10); ++mask) {
      if (__builtin_popcount(mask) != 6) continue;  // dropped pairs
      std::vector<bool> dropped(static_cast<std::size_t>(d), false);
      for (Index p = 0; p < 10; ++p)
        if ((mask >> p) & 1u) {
          const auto [a, b] = rotary_pair_dims(p, d, layout);
          dropped[static_cast<std::size_t>(a)] = dropped[static_cast<std::size_t>(b)] = true;
        }
      best = std::min(best, test::objective_of_mask(wd, dropped));
    }
    EXPECT_NEAR(static_cast<double>(test::objective_ld(wd, s)), static_cast<double>(best), optimum_tol(wd));
  }
}

TEST(OptimumLimit, TooManyGroupsThrow) {
  const RowMatrix<double> w25 = RowMatrix<double>::Identity(25, 25);
  EXPECT_TRUE(throws_invalid_argument([&] { select_optimal(w25, 10); },
                                      {"select_optimal", "25 dimensions", "limit of 24"}));
  const RowMatrix<double> w50 = RowMatrix<double>::Identity(50, 50);
  EXPECT_TRUE(throws_invalid_argument([&] { select_optimal(w50, 10, {RotaryLayout::half}); },
                                      {"select_optimal", "25 rotary pairs"}));
}

}  // namespace
}  // namespace attnkit
