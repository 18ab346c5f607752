// Tests of attnkit/prune/prompt.hpp: prune_prompt is the documented
// composition of its steps (weights over the chosen keys, the named selector,
// the compensation fitted on the compressed keys, the cache layout), each step
// recomputed here through the public single-step functions; and its bad input.

#include "attnkit/prune/prompt.hpp"

#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

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
