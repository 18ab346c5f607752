// Tests of attnkit/prune/residual.hpp: the residual objective equals the
// window queries' logit error energy under regression compensation (brute
// force over queries and keys); forward selection makes, at every step, the
// choice a brute-force greedy on that objective makes; regression's objective
// never exceeds the centred (mean) objective; degenerate keys.

#include "attnkit/prune/residual.hpp"

#include <vector>

#include <gtest/gtest.h>

#include "attnkit/prune/weights.hpp"
#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::LD;
using test::throws_invalid_argument;

template <typename Scalar>
class ResidualTest : public ::testing::Test {};
TYPED_TEST_SUITE(ResidualTest, test::Scalars);

TYPED_TEST(ResidualTest, ObjectiveIsTheRegressionLogitErrorEnergy) {
  using Scalar = TypeParam;
  const Index d = 9;
  const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(10, d, 1);
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(120, d, 2, 3.0);
  const RowMatrix<double> g = query_gram(q);
  const KeyStatistics st = key_statistics(k);
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    const DimSelection sel = test::random_selection(d, 1 + static_cast<Index>(seed % 7), seed);
    // The residual of the same fit, in double (no rounding to Scalar).
    const Compensation<double> comp =
        fit_compensation<double>(st, sel, PruneCompensation::regression, CompensationOptions{});
    const RowMatrix<double> r = compensation_residual(k.template cast<double>(), sel, comp);
    LD energy = 0, abs_energy = 0;
    for (Index n = 0; n < q.rows(); ++n)
      for (Index m = 0; m < k.rows(); ++m) {
        LD e = 0, a = 0;
        for (Index t = 0; t < sel.dropped_count(); ++t) {
          const LD term =
              static_cast<LD>(q(n, sel.dropped()[static_cast<std::size_t>(t)])) * static_cast<LD>(r(m, t));
          e += term;
          a += std::fabs(term);
        }
        energy += e * e;
        abs_energy += a * a;
      }
    // The closed form subtracts O(|k|^2) terms to reach the residual: relative to
    // the uncentred energy scale, a few hundred eps_double.
    const double scale = static_cast<double>(g.cwiseAbs().sum()) * st.scatter.cwiseAbs().maxCoeff();
    EXPECT_NEAR(residual_objective(g, st, sel), static_cast<double>(energy),
                64.0 * d * test::eps<double>() * scale +
                    8.0 * 120 * test::eps<double>() * static_cast<double>(abs_energy))
        << "seed " << seed;
  }
}

// Brute-force forward selection: add the group whose addition gives the
// smallest E(A + P), E evaluated by residual_objective. With ridge = 0 the
// selector's Schur-complement gain is exactly E(A) - E(A + P).
DimSelection brute_forward(const RowMatrix<double>& g, const KeyStatistics& st, Index kept,
                           std::optional<RotaryLayout> pairs) {
  const Index d = st.dim();
  std::vector<std::vector<Index>> groups;
  if (pairs) {
    for (Index p = 0; p < d / 2; ++p) {
      const auto [a, b] = rotary_pair_dims(p, d, *pairs);
      groups.push_back({a, b});
    }
  } else {
    for (Index i = 0; i < d; ++i)
      groups.push_back({i});
  }
  std::vector<Index> chosen;
  std::vector<bool> used(groups.size(), false);
  for (Index step = 0; step < kept / static_cast<Index>(groups[0].size()); ++step) {
    double best = 0;
    std::size_t best_g = groups.size();
    for (std::size_t a = 0; a < groups.size(); ++a) {
      if (used[a]) continue;
      std::vector<Index> trial = chosen;
      trial.insert(trial.end(), groups[a].begin(), groups[a].end());
      const double e = residual_objective(g, st, DimSelection(d, trial), {0.0});
      if (best_g == groups.size() || e < best) {
        best = e;
        best_g = a;
      }
    }
    used[best_g] = true;
    chosen.insert(chosen.end(), groups[best_g].begin(), groups[best_g].end());
  }
  return DimSelection(d, chosen);
}

TYPED_TEST(ResidualTest, ForwardSelectionIsGreedyOnTheResidualObjective) {
  using Scalar = TypeParam;
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    const Index d = 6 + 2 * static_cast<Index>(seed % 5);
    const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(8, d, 10 + seed);
    const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(90, d, 20 + seed, 2.0);
    const RowMatrix<double> g = query_gram(q);
    const KeyStatistics st = key_statistics(k);
    const Index kept = d / 2;
    EXPECT_EQ(select_residual(g, st, kept, {0.0}), brute_forward(g, st, kept, std::nullopt))
        << "seed " << seed;
    EXPECT_EQ(select_residual(q, k, kept, {0.0}), select_residual(g, st, kept, {0.0}));
    for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half}) {
      const DimSelection s = select_residual(g, st, kept, {0.0}, {layout});
      EXPECT_EQ(s, brute_forward(g, st, kept, layout)) << "seed " << seed;
      for (const Index i : s.kept())
        EXPECT_TRUE(s.keeps(rotary_partner(i, d, layout)));
    }
  }
}

// Regression's logit error never exceeds mean compensation's: E(A) <= centred F(B).
TYPED_TEST(ResidualTest, ResidualObjectiveBelowCentredObjective) {
  using Scalar = TypeParam;
  for (std::uint64_t seed = 1; seed <= 15; ++seed) {
    const Index d = 5 + static_cast<Index>(seed % 9);
    const RowMatrix<Scalar> q = test::correlated_rows<Scalar>(8, d, 40 + seed);
    const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(70, d, 60 + seed, 2.0);
    const RowMatrix<double> g = query_gram(q);
    const KeyStatistics st = key_statistics(k);
    const RowMatrix<double> wc = centered_weights(q, k);
    const DimSelection sel = test::random_selection(d, d / 2, seed);
    const double tol = 64.0 * test::as_double(d) * test::eps<double>() * g.cwiseAbs().sum() *
                       st.scatter.cwiseAbs().maxCoeff();
    for (const double ridge : {0.0, 1e-6, 1e-1})
      EXPECT_LE(residual_objective(g, st, sel, {ridge}), selection_objective(wc, sel) + tol) << seed;
  }
}

TYPED_TEST(ResidualTest, DegenerateKeysFallBackToQueryEnergy) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> k = RowMatrix<Scalar>::Constant(30, 6, Scalar(2));
  RowMatrix<Scalar> q = RowMatrix<Scalar>::Zero(4, 6);
  q.col(3).setConstant(Scalar(5));
  q.col(1).setConstant(Scalar(2));
  const DimSelection s = select_residual(q, k, 2);
  EXPECT_EQ(s.kept(), (std::vector<Index>{1, 3}));
  EXPECT_EQ(residual_objective(query_gram(q), key_statistics(k), s), 0.0);
}

TYPED_TEST(ResidualTest, BadInputThrows) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(20, 4, 1);
  const KeyStatistics st = key_statistics(k);
  EXPECT_TRUE(throws_invalid_argument([&] { select_residual(RowMatrix<double>::Identity(3, 3), st, 2); },
                                      {"select_residual", "(3 x 3)", "width 4"}));
  EXPECT_TRUE(throws_invalid_argument([&] { select_residual(RowMatrix<double>::Identity(4, 4), st, 5); },
                                      {"select_residual", "kept = 5"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] { select_residual(RowMatrix<double>::Identity(4, 4), st, 2, {-1.0}); }, {"ridge = -1"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] { residual_objective(RowMatrix<double>::Identity(4, 4), st, DimSelection(5, {0})); },
      {"residual_objective", "D = 5"}));
}

}  // namespace
}  // namespace attnkit
