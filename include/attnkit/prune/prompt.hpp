#pragma once

/// \file attnkit/prune/prompt.hpp
/// Pruning a prompt's keys in one call: weights -> selection -> compensation ->
/// PrunedKeyCache, as decided once after the prompt from its last w queries.
///
/// Given window queries Q_w (w x D, the last w prompt queries) and the prompt
/// keys K (n0 x D), with r = recent:
///  1. statistics (mean, centred scatter) of the compressed keys K[0, n0 - r)
///     and of the recent ones, merged for the whole prompt: O(n0 D^2);
///  2. the weight matrix of config.weights over the weight keys (all prompt
///     keys by default, as ThinK does; or only the compressed
///     ones, the keys that actually receive the error): O(D^2) for gram and
///     centered given step 1, O(w n0 D^2) for attention;
///  3. the selection of D' = floor((1 - ratio) D) dimensions by
///     config.selector (swap = exact greedy-remain then 1-swap search;
///     residual = forward selection on the regression residual of the
///     compressed keys, which ignores the weights): O(D^2) .. O(D' D^3);
///  4. the compensation fitted on the compressed keys and the cache.
/// ThinK is PruneOptions{} with the default config (gram, topk, none).
/// Thread safety: pure function.

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <utility>

#include "attnkit/prune/cache.hpp"
#include "attnkit/prune/config.hpp"
#include "attnkit/prune/greedy.hpp"
#include "attnkit/prune/local_search.hpp"
#include "attnkit/prune/optimum.hpp"
#include "attnkit/prune/residual.hpp"
#include "attnkit/prune/selection.hpp"
#include "attnkit/prune/statistics.hpp"
#include "attnkit/prune/weights.hpp"

namespace attnkit {

/// Which keys the weights are computed over.
enum class WeightKeys {
  prompt,     ///< all n0 prompt keys (ThinK's definition)
  compressed  ///< the n0 - r keys that are compressed (the only ones whose logits change)
};

/// Options of prune_prompt.
struct PruneOptions {
  /// lambda, the pruned fraction: D' = floor((1 - ratio) D). In [0, 1).
  double ratio = 0.5;
  /// Weights, selector, compensation, rotary pairs, scale correction.
  PruneConfig config{};
  /// r, the most recent prompt tokens kept at full dimension (>= 0).
  Index recent = 32;
  /// Keys the weights are computed over.
  WeightKeys weight_keys = WeightKeys::prompt;
  /// Ridge of the regression compensation and of the residual selector.
  CompensationOptions fit{};
  /// Logit scale of the attention rows behind the attention-aware weights;
  /// std::nullopt = 1/sqrt(D). Pass the same scale to the cache's attention()
  /// and logits() calls (the protocol does).
  std::optional<double> scale{};
  /// PrunedCacheOptions::compress_overflow of the resulting cache.
  bool compress_overflow = true;
  /// PrunedCacheOptions::refit_growth of the resulting cache.
  std::optional<double> refit_growth = 2.0;
};

/// The outcome of prune_prompt.
template <typename Scalar>
struct PrunedPrompt {
  /// The pruned cache of the n0 prompt keys.
  PrunedKeyCache<Scalar> cache;
  /// The config's weight matrix (D x D), or (0 x 0) when the selector did not
  /// need it (residual with attention weights).
  RowMatrix<double> weights;
};

/// Validates the option values shared by prune_prompt and the protocol.
namespace detail {
inline void check_prune_options(const char* where, const PruneOptions& o) {
  if (o.recent < 0) fail(where, ": recent r = ", o.recent, " must be >= 0");
  check_ridge(where, o.fit.ridge);
  if (o.scale && !(std::isfinite(*o.scale) && *o.scale > 0))
    fail(where, ": scale = ", *o.scale, " must be finite and > 0");
}
}  // namespace detail

/// Chooses D' dimensions for `config` from a weight matrix or (residual) from
/// the query Gram and the compressed keys' statistics.
/// \param weights (D x D), may be empty for the residual selector.
/// \throws std::invalid_argument from the selector (bad kept, optimal with
///         more than 24 groups, rotary pairs with an odd D, ...).
inline DimSelection choose_dimensions(const RowMatrix<double>& weights, const RowMatrix<double>& query_gram,
                                      const KeyStatistics& compressed, Index kept, const PruneConfig& config,
                                      const CompensationOptions& fit = {}) {
  const SelectOptions so{config.rope_pairs};
  switch (config.selector) {
    case PruneSelector::topk:
      return select_topk(weights, kept, so);
    case PruneSelector::greedy_remove:
      return select_greedy_remove(weights, kept, GreedyRule::exact, so);
    case PruneSelector::greedy_remain:
      return select_greedy_remain(weights, kept, GreedyRule::exact, so);
    case PruneSelector::greedy_remove_literal:
      return select_greedy_remove(weights, kept, GreedyRule::literal, so);
    case PruneSelector::greedy_remain_literal:
      return select_greedy_remain(weights, kept, GreedyRule::literal, so);
    case PruneSelector::swap:
      return local_search_swap(weights, select_greedy_remain(weights, kept, GreedyRule::exact, so), so)
          .selection;
    case PruneSelector::residual:
      return select_residual(query_gram, compressed, kept, fit, so);
    case PruneSelector::optimal:
      return select_optimal(weights, kept, so);
  }
  detail::fail("choose_dimensions: unknown selector");
}

namespace detail {

/// prune_prompt for `heads` query heads sharing the prompt keys: their
/// window queries stacked (heads w x D); the weights are the sum of the
/// heads' weights.
template <typename DQ, typename DK>
PrunedPrompt<typename DQ::Scalar> prune_prompt_heads(const char* where,
                                                     const Eigen::MatrixBase<DQ>& window_queries, Index heads,
                                                     const Eigen::MatrixBase<DK>& prompt_keys,
                                                     const PruneOptions& options) {
  using Scalar = typename DQ::Scalar;
  static_assert(std::is_same_v<Scalar, typename DK::Scalar>, "queries and keys must share one Scalar type");
  detail::require_non_empty(where, "window queries", window_queries);
  detail::require_non_empty(where, "prompt keys", prompt_keys);
  if (heads < 1 || window_queries.rows() % heads != 0)
    detail::fail(where, ": window queries ", detail::shape(window_queries),
                 " do not split into heads = ", heads, " blocks of equal rows");
  if (window_queries.cols() != prompt_keys.cols())
    detail::fail(where, ": window queries ", detail::shape(window_queries), " and prompt keys ",
                 detail::shape(prompt_keys), " must have the same width D");
  const Index w = window_queries.rows() / heads;
  if (w > prompt_keys.rows())
    detail::fail(where, ": the window (w = ", w, ") is longer than the prompt (n0 = ", prompt_keys.rows(),
                 ")");
  detail::check_prune_options(where, options);
  const Index d = prompt_keys.cols(), n0 = prompt_keys.rows();
  const Index kept = kept_dimension_count(d, options.ratio);
  const Index n_c = std::max<Index>(0, n0 - options.recent);
  const PruneConfig& config = options.config;

  const KeyStatistics compressed = key_statistics(prompt_keys.topRows(n_c));
  // The stacked queries' Gram is the sum of the heads' Grams.
  const RowMatrix<double> g = query_gram(window_queries);
  RowMatrix<double> wm;
  const bool need_weights =
      !(config.selector == PruneSelector::residual && config.weights == PruneWeights::attention);
  if (config.weights == PruneWeights::attention) {
    if (need_weights) {
      AttentionWeightOptions ao;
      ao.attention = AttentionOptions{Mask::causal(), options.scale};
      ao.error_keys = options.weight_keys == WeightKeys::prompt ? n0 : n_c;
      ao.centre = config.compensation != PruneCompensation::none;
      // Each head's window queries are the last w prompt positions.
      for (Index h = 0; h < heads; ++h) {
        RowMatrix<double> wh = attention_weights(window_queries.middleRows(h * w, w), prompt_keys, ao);
        if (h == 0)
          wm = std::move(wh);
        else
          wm += wh;
      }
    }
  } else {
    KeyStatistics keys = compressed;
    if (options.weight_keys == WeightKeys::prompt)
      keys.merge(key_statistics(prompt_keys.bottomRows(n0 - n_c)));
    wm = config.weights == PruneWeights::gram ? gram_weights_from_statistics(g, keys)
                                              : centered_weights_from_statistics(g, keys);
  }
  DimSelection selection = choose_dimensions(wm, g, compressed, kept, config, options.fit);

  PrunedCacheOptions co;
  co.recent = options.recent;
  co.compensation = config.compensation;
  co.fit = options.fit;
  co.scale_correction = config.scale_correction;
  co.compress_overflow = options.compress_overflow;
  co.refit_growth = options.refit_growth;
  return PrunedPrompt<Scalar>{PrunedKeyCache<Scalar>(prompt_keys, std::move(selection), co, compressed),
                              std::move(wm)};
}

}  // namespace detail

/// Prunes the prompt keys (see the file comment).
/// \param window_queries (w x D), the last w prompt queries (w >= 1).
/// \param prompt_keys (n0 x D), n0 >= 1: the window queries are its last w
///        tokens for the attention weights' causal mask (so w <= n0).
/// \throws std::invalid_argument for empty inputs, mismatched widths, w > n0,
///         a ratio outside [0, 1) or D' = 0, and the errors of the selector,
///         the compensation fit and the cache.
template <typename DQ, typename DK>
PrunedPrompt<typename DQ::Scalar> prune_prompt(const Eigen::MatrixBase<DQ>& window_queries,
                                               const Eigen::MatrixBase<DK>& prompt_keys,
                                               const PruneOptions& options = {}) {
  return detail::prune_prompt_heads("prune_prompt", window_queries, 1, prompt_keys, options);
}

/// Prunes the prompt keys of one key/value head for ALL the query heads that
/// share it (grouped-query attention): one selection, one compensation and
/// one cache for the group, so the pruned cache keeps the GQA saving. The
/// selection minimises the sum of the heads' objectives: the weights are the
/// sum of the heads' weight matrices (for gram and centered weights and the
/// residual selector, the heads' query Grams add up; attention weights are
/// computed per head and added).
/// \param window_queries (heads w x D): rows [h w, (h + 1) w) are query head
///        h's last w prompt queries.
/// \param heads the query heads in the group (>= 1).
/// \param prompt_keys (n0 x D) the group's prompt keys.
/// \throws std::invalid_argument as prune_prompt, and when the rows of
///         window_queries do not split into `heads` blocks.
/// Cost: prune_prompt's, with the attention weights once per head.
template <typename DQ, typename DK>
PrunedPrompt<typename DQ::Scalar> prune_prompt_shared(const Eigen::MatrixBase<DQ>& window_queries,
                                                      Index heads, const Eigen::MatrixBase<DK>& prompt_keys,
                                                      const PruneOptions& options = {}) {
  return detail::prune_prompt_heads("prune_prompt_shared", window_queries, heads, prompt_keys, options);
}

}  // namespace attnkit
