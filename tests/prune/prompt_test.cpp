// Tests of attnkit/prune/prompt.hpp: prune_prompt is the documented
// composition of its steps (weights over the chosen keys, the named selector,
// the compensation fitted on the compressed keys, the cache layout), each step
// recomputed here through the public single-step functions; and its bad input.

#include "attnkit/prune/prompt.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Eigenvalues>

#include "attnkit/position/rotary.hpp"
#include "prune_test_util.hpp"

namespace attnkit {
namespace {

using test::throws_invalid_argument;

template <typename Scalar>
class PromptTest : public ::testing::Test {};
TYPED_TEST_SUITE(PromptTest, test::Scalars);

template <typename Derived>
double max_abs(const Eigen::MatrixBase<Derived>& m) {
  return m.size() == 0 ? 0.0 : static_cast<double>(m.cwiseAbs().maxCoeff());
}

/// The selector of `config`, called directly (not through choose_dimensions).
DimSelection expected_selection(const RowMatrix<double>& w, const RowMatrix<double>& g,
                                const KeyStatistics& compressed, Index kept, const PruneConfig& config) {
  const SelectOptions so{config.rope_pairs};
  switch (config.selector) {
    case PruneSelector::topk:
      return select_topk(w, kept, so);
    case PruneSelector::greedy_remove_literal:
      return select_greedy_remove(w, kept, GreedyRule::literal, so);
    case PruneSelector::swap:
      return local_search_swap(w, select_greedy_remain(w, kept, GreedyRule::exact, so), so).selection;
    case PruneSelector::residual:
      return select_residual(g, compressed, kept, {}, so);
    case PruneSelector::optimal:
      return select_optimal(w, kept, so);
    default:
      ADD_FAILURE() << "selector not covered by this test";
      return DimSelection(w.rows(), {0});
  }
}

// An oracle independent of the library's weight, selector and fit code:
// everything recomputed by loops in long double on a small prompt. Gram
// weights W_ij = (sum_t q_ti q_tj)(sum_m k_mi k_mj) over every prompt key; the
// optimal selector by enumerating all C(6, 3) dropped sets; ThinK (top-k) by
// the diagonal; the mean compensation as column means of the compressed keys;
// the regression's M = S_BA S_AA^-1 by Gaussian elimination.
TYPED_TEST(PromptTest, MatchesABruteForceOracleOnASmallPrompt) {
  using Scalar = TypeParam;
  using test::LD;
  const Index d = 6, n0 = 40, w = 5, r = 8, n_c = n0 - r, kept = 3;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(n0, d, 31, 2.0);
  const RowMatrix<Scalar> qw = test::correlated_rows<Scalar>(w, d, 32, 1.0);
  RowMatrix<LD> wm(d, d);
  for (Index i = 0; i < d; ++i)
    for (Index j = 0; j < d; ++j) {
      LD gq = 0, gk = 0;
      for (Index t = 0; t < w; ++t)
        gq += static_cast<LD>(qw(t, i)) * static_cast<LD>(qw(t, j));
      for (Index m = 0; m < n0; ++m)
        gk += static_cast<LD>(k(m, i)) * static_cast<LD>(k(m, j));
      wm(i, j) = gq * gk;
    }
  // All 20 dropped sets; the best and the runner-up (a unique optimum).
  LD best = std::numeric_limits<LD>::infinity(), second = best;
  std::vector<Index> best_drop;
  for (Index a = 0; a < d; ++a)
    for (Index b = a + 1; b < d; ++b)
      for (Index c = b + 1; c < d; ++c) {
        const Index drop[3] = {a, b, c};
        LD f = 0;
        for (const Index i : drop)
          for (const Index j : drop)
            f += wm(i, j);
        if (f < best) {
          second = best;
          best = f;
          best_drop = {a, b, c};
        } else if (f < second) {
          second = f;
        }
      }
  // The weights' double rounding (merged statistics, ~ (w + 2 n0) eps_d
  // relative) must not be able to swap the two best sets.
  ASSERT_GT(static_cast<double>((second - best) / best), 1e-9);
  std::vector<Index> best_keep;
  for (Index i = 0; i < d; ++i)
    if (std::find(best_drop.begin(), best_drop.end(), i) == best_drop.end()) best_keep.push_back(i);
  // ThinK: the three largest diagonal entries.
  std::vector<Index> order(static_cast<std::size_t>(d));
  std::iota(order.begin(), order.end(), Index(0));
  std::stable_sort(order.begin(), order.end(), [&](Index x, Index y) { return wm(x, x) > wm(y, y); });
  std::vector<Index> think(order.begin(), order.begin() + kept);
  std::sort(think.begin(), think.end());

  PruneOptions o;
  o.ratio = 0.5;
  o.recent = r;
  o.config.selector = PruneSelector::optimal;
  o.config.compensation = PruneCompensation::regression;
  const PrunedPrompt<Scalar> optimal = prune_prompt(qw, k, o);
  EXPECT_EQ(optimal.cache.selection(), DimSelection(d, best_keep));
  o.config.selector = PruneSelector::topk;
  o.config.compensation = PruneCompensation::mean;
  const PrunedPrompt<Scalar> topk = prune_prompt(qw, k, o);
  EXPECT_EQ(topk.cache.selection(), DimSelection(d, think));

  // Mean compensation: the dropped columns' means over the compressed keys
  // (n_c-term double sums, then rounded to Scalar).
  const DimSelection& ts = topk.cache.selection();
  for (Index t = 0; t < ts.dropped_count(); ++t) {
    const Index b = ts.dropped()[static_cast<std::size_t>(t)];
    LD mu = 0, amax = 0;
    for (Index m = 0; m < n_c; ++m) {
      mu += static_cast<LD>(k(m, b));
      amax = std::max(amax, std::fabs(static_cast<LD>(k(m, b))));
    }
    mu /= n_c;
    EXPECT_NEAR(static_cast<double>(topk.cache.compensation().offset(t)), static_cast<double>(mu),
                0.5 * test::eps<Scalar>() * std::fabs(static_cast<double>(mu)) +
                    n_c * test::eps<double>() * static_cast<double>(amax));
  }
  // Regression: M = S_BA S_AA^-1 + ridge, S the centred scatter of the
  // compressed keys, by Gaussian elimination with partial pivoting in long
  // double on the kept set of the optimal run.
  const DimSelection& os = optimal.cache.selection();
  std::vector<LD> mean(static_cast<std::size_t>(d), 0);
  for (Index c = 0; c < d; ++c) {
    for (Index m = 0; m < n_c; ++m)
      mean[static_cast<std::size_t>(c)] += static_cast<LD>(k(m, c));
    mean[static_cast<std::size_t>(c)] /= n_c;
  }
  const auto scatter = [&](Index i, Index j) {
    LD s = 0;
    for (Index m = 0; m < n_c; ++m)
      s += (static_cast<LD>(k(m, i)) - mean[static_cast<std::size_t>(i)]) *
           (static_cast<LD>(k(m, j)) - mean[static_cast<std::size_t>(j)]);
    return s;
  };
  LD trace = 0;
  for (Index c = 0; c < d; ++c)
    trace += scatter(c, c);
  const LD rho = LD(1e-6) * trace / d;  // the documented default ridge, relative to tr(S) / D
  const Index na = os.kept_count(), nb = os.dropped_count();
  // kappa = cond(S_AA + rho I), which bounds how much the library's double
  // solve can amplify the double rounding of the scatter (n_c eps_d relative).
  Eigen::MatrixXd saa(na, na);
  for (Index i = 0; i < na; ++i)
    for (Index j = 0; j < na; ++j)
      saa(i, j) = static_cast<double>(
          scatter(os.kept()[static_cast<std::size_t>(i)], os.kept()[static_cast<std::size_t>(j)]) +
          (i == j ? rho : 0));
  const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(saa).eigenvalues();
  const double kappa = ev.maxCoeff() / ev.minCoeff();
  for (Index t = 0; t < nb; ++t) {
    // Solve S_AA m = S_A,b for row t of M (S_AA symmetric).
    std::vector<std::vector<LD>> a(static_cast<std::size_t>(na),
                                   std::vector<LD>(static_cast<std::size_t>(na + 1)));
    for (Index i = 0; i < na; ++i) {
      for (Index j = 0; j < na; ++j)
        a[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] =
            scatter(os.kept()[static_cast<std::size_t>(i)], os.kept()[static_cast<std::size_t>(j)]) +
            (i == j ? rho : 0);
      a[static_cast<std::size_t>(i)][static_cast<std::size_t>(na)] =
          scatter(os.kept()[static_cast<std::size_t>(i)], os.dropped()[static_cast<std::size_t>(t)]);
    }
    for (Index c = 0; c < na; ++c) {
      Index piv = c;
      for (Index i = c + 1; i < na; ++i)
        if (std::fabs(a[static_cast<std::size_t>(i)][static_cast<std::size_t>(c)]) >
            std::fabs(a[static_cast<std::size_t>(piv)][static_cast<std::size_t>(c)]))
          piv = i;
      std::swap(a[static_cast<std::size_t>(c)], a[static_cast<std::size_t>(piv)]);
      for (Index i = 0; i < na; ++i) {
        if (i == c) continue;
        const LD f = a[static_cast<std::size_t>(i)][static_cast<std::size_t>(c)] /
                     a[static_cast<std::size_t>(c)][static_cast<std::size_t>(c)];
        for (Index j = c; j <= na; ++j)
          a[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] -=
              f * a[static_cast<std::size_t>(c)][static_cast<std::size_t>(j)];
      }
    }
    for (Index i = 0; i < na; ++i) {
      const LD m_ti = a[static_cast<std::size_t>(i)][static_cast<std::size_t>(na)] /
                      a[static_cast<std::size_t>(i)][static_cast<std::size_t>(i)];
      // The library solves the same system in double (relative error at most
      // 2 kappa n_c eps_d of max(|M|, 1)) and rounds to Scalar (eps_S / 2 |M|).
      const double got = static_cast<double>(optimal.cache.compensation().coefficients(t, i));
      EXPECT_NEAR(
          got, static_cast<double>(m_ti),
          0.5 * test::eps<Scalar>() * std::fabs(static_cast<double>(m_ti)) +
              2 * kappa * n_c * test::eps<double>() * std::max(1.0, std::fabs(static_cast<double>(m_ti))))
          << "M(" << t << ", " << i << ")";
    }
  }
}

TYPED_TEST(PromptTest, ComposesItsDocumentedSteps) {
  using Scalar = TypeParam;
  const Index d = 12, n0 = 200, w = 16, r = 32, n_c = n0 - r;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(n0, d, 21, 3.0);
  const RowMatrix<Scalar> qw = test::correlated_rows<Scalar>(w, d, 22, 1.0);
  const RowMatrix<double> g = query_gram(qw);
  const KeyStatistics compressed = key_statistics(k.topRows(n_c));
  int cases = 0;
  for (const PruneWeights weights : {PruneWeights::gram, PruneWeights::centered, PruneWeights::attention})
    for (const WeightKeys weight_keys : {WeightKeys::prompt, WeightKeys::compressed})
      for (const PruneSelector selector :
           {PruneSelector::topk, PruneSelector::greedy_remove_literal, PruneSelector::swap,
            PruneSelector::residual, PruneSelector::optimal})
        for (const PruneCompensation comp :
             {PruneCompensation::none, PruneCompensation::mean, PruneCompensation::regression}) {
          PruneOptions o;
          o.ratio = 0.5;
          o.recent = r;
          o.weight_keys = weight_keys;
          o.config = PruneConfig{weights, selector, comp, std::nullopt, false};
          const std::string label =
              to_string(o.config) + (weight_keys == WeightKeys::prompt ? " prompt" : " compressed");
          const PrunedPrompt<Scalar> p = prune_prompt(qw, k, o);

          // 1. The weights over the chosen keys (attention: causal rows over
          //    the whole prompt, errors on the chosen keys, centred when
          //    compensated).
          const Index error_keys = weight_keys == WeightKeys::prompt ? n0 : n_c;
          RowMatrix<double> want_w;
          if (weights == PruneWeights::attention) {
            AttentionWeightOptions ao;
            ao.error_keys = error_keys;
            ao.centre = comp != PruneCompensation::none;
            want_w = attention_weights(qw, k, ao);
          } else if (weights == PruneWeights::gram) {
            want_w = gram_weights(qw, k.topRows(error_keys));
          } else {
            want_w = centered_weights(qw, k.topRows(error_keys));
          }
          if (selector == PruneSelector::residual && weights == PruneWeights::attention) {
            EXPECT_EQ(p.weights.size(), 0) << label;  // documented: not computed
          } else {
            // Same sums in another order (merged statistics): double rounding
            // of n0-term sums, 20 n0 u relative to the largest entry.
            ASSERT_EQ(p.weights.rows(), d) << label;
            EXPECT_TRUE(
                test::matrices_near(p.weights, want_w, 20 * n0 * 0x1p-53 * want_w.cwiseAbs().maxCoeff()))
                << label;
          }
          // 2. The named selector on those weights.
          const DimSelection want_sel = expected_selection(want_w, g, compressed, d / 2, o.config);
          EXPECT_EQ(p.cache.selection(), want_sel) << label;
          // 3. The compensation, fitted on the compressed keys only.
          const Compensation<Scalar> want_c = fit_compensation(k.topRows(n_c), want_sel, comp);
          const Compensation<Scalar>& c = p.cache.compensation();
          EXPECT_EQ(c.kind, comp) << label;
          ASSERT_EQ(c.offset.size(), want_c.offset.size()) << label;
          ASSERT_EQ(c.coefficients.rows(), want_c.coefficients.rows()) << label;
          // Both are double fits of the same statistics cast to Scalar: at
          // most an ulp of Scalar apart, plus the double rounding.
          const double tol_o = 2 * test::eps<Scalar>() * (1 + max_abs(want_c.offset));
          EXPECT_TRUE(test::matrices_near(c.offset, want_c.offset, tol_o)) << label;
          const double tol_m = 2 * test::eps<Scalar>() * (1 + max_abs(want_c.coefficients));
          EXPECT_TRUE(test::matrices_near(c.coefficients, want_c.coefficients, tol_m)) << label;
          // 4. The cache: n0 - r compressed keys restricted to the kept
          //    columns, the last r at full dimension, both copied exactly.
          ASSERT_EQ(p.cache.compressed_size(), n_c);
          ASSERT_EQ(p.cache.window_size(), r);
          RowMatrix<Scalar> kept_cols(n_c, d / 2);
          for (Index j = 0; j < d / 2; ++j)
            kept_cols.col(j) = k.col(want_sel.kept()[static_cast<std::size_t>(j)]).head(n_c);
          EXPECT_EQ(RowMatrix<Scalar>(p.cache.compressed_keys()), kept_cols) << label;
          EXPECT_EQ(RowMatrix<Scalar>(p.cache.window_keys()), RowMatrix<Scalar>(k.bottomRows(r))) << label;
          ++cases;
        }
  EXPECT_EQ(cases, 3 * 2 * 5 * 3);
}

TYPED_TEST(PromptTest, RotaryPairsAndScaleCorrectionReachTheCache) {
  using Scalar = TypeParam;
  const Index d = 12;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(100, d, 23);
  const RowMatrix<Scalar> qw = test::correlated_rows<Scalar>(8, d, 24);
  for (const RotaryLayout layout : {RotaryLayout::interleaved, RotaryLayout::half}) {
    PruneOptions o;
    o.ratio = 0.25;  // D' = 9, rounded down to whole pairs: 8
    o.config.rope_pairs = layout;
    o.config.scale_correction = true;
    const PrunedPrompt<Scalar> p = prune_prompt(qw, k, o);
    EXPECT_EQ(p.cache.kept_dim(), 8);
    for (const Index i : p.cache.selection().kept())
      EXPECT_TRUE(p.cache.selection().keeps(rotary_partner(i, d, layout))) << i;
    EXPECT_EQ(p.cache.selection(), select_topk(gram_weights(qw, k), 9, SelectOptions{layout}));
    EXPECT_DOUBLE_EQ(p.cache.kept_scale(), std::sqrt(12.0 / 8.0));
  }
}

TYPED_TEST(PromptTest, BadInputNamesTheArgument) {
  using Scalar = TypeParam;
  const RowMatrix<Scalar> k = test::correlated_rows<Scalar>(40, 12, 25);
  const RowMatrix<Scalar> qw = test::correlated_rows<Scalar>(8, 12, 26);
  const auto with = [](auto change) {
    PruneOptions o;
    change(o);
    return o;
  };
  EXPECT_TRUE(throws_invalid_argument([&] { prune_prompt(RowMatrix<Scalar>(0, 12), k); },
                                      {"prune_prompt", "window queries", "empty"}));
  EXPECT_TRUE(throws_invalid_argument([&] { prune_prompt(qw, RowMatrix<Scalar>(0, 12)); },
                                      {"prune_prompt", "prompt keys"}));
  EXPECT_TRUE(throws_invalid_argument([&] { prune_prompt(qw, RowMatrix<Scalar>(k.leftCols(10))); },
                                      {"prune_prompt", "(8 x 12)", "(40 x 10)", "same width"}));
  EXPECT_TRUE(throws_invalid_argument([&] { prune_prompt(qw, RowMatrix<Scalar>(k.topRows(5))); },
                                      {"prune_prompt", "w = 8", "n0 = 5"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] { prune_prompt(qw, k, with([](PruneOptions& o) { o.ratio = 1.0; })); }, {"ratio"}));
  EXPECT_TRUE(throws_invalid_argument(
      [&] { prune_prompt(qw, k, with([](PruneOptions& o) { o.ratio = -0.1; })); }, {"ratio"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { prune_prompt(qw, k, with([](PruneOptions& o) { o.ratio = 0.95; })); },
                              {"D' = floor", "at least one dimension"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { prune_prompt(qw, k, with([](PruneOptions& o) { o.recent = -1; })); },
                              {"prune_prompt", "recent r = -1"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { prune_prompt(qw, k, with([](PruneOptions& o) { o.scale = 0.0; })); },
                              {"prune_prompt", "scale = 0"}));
  EXPECT_TRUE(
      throws_invalid_argument([&] { prune_prompt(qw, k, with([](PruneOptions& o) { o.fit.ridge = -1; })); },
                              {"prune_prompt", "ridge"}));
  const RowMatrix<Scalar> k_odd = test::correlated_rows<Scalar>(40, 11, 27);
  const RowMatrix<Scalar> q_odd = test::correlated_rows<Scalar>(8, 11, 28);
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        prune_prompt(q_odd, k_odd, with([](PruneOptions& o) { o.config.rope_pairs = RotaryLayout::half; }));
      },
      {"even key width", "D = 11"}));
  const RowMatrix<Scalar> k_wide = test::correlated_rows<Scalar>(40, 26, 29);
  const RowMatrix<Scalar> q_wide = test::correlated_rows<Scalar>(8, 26, 30);
  EXPECT_TRUE(throws_invalid_argument(
      [&] {
        prune_prompt(q_wide, k_wide,
                     with([](PruneOptions& o) { o.config.selector = PruneSelector::optimal; }));
      },
      {"select_optimal", "26 dimensions", "limit of 24"}));
}

}  // namespace
}  // namespace attnkit
