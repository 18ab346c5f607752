#pragma once

/// \file attnkit/prune/config.hpp
/// The key-dimension pruning methods (docs/pruning.md) by name, and the
/// configuration that combines them:
///
/// | part                          | names                                                              |
/// |-------------------------------|--------------------------------------------------------------------|
/// | weights (PruneWeights)        | `gram`, `centered`, `attention`                                    |
/// | selector (PruneSelector)      | `topk`, `greedy-remove`, `greedy-remain`, `greedy-remove-literal`, |
/// |                               | `greedy-remain-literal`, `swap`, `residual`, `optimal`             |
/// | compensation                  | `none`, `mean`, `regression`                                       |
/// | rotary pairs (RotaryLayout)   | `interleaved`, `half`                                              |
///
/// `PruneConfig{}` (gram weights, top-k, no compensation) is ThinK. Every
/// parser returns std::nullopt for an unknown name (the caller reports it,
/// listing the `*_names()` string); `to_string` gives back exactly the name
/// the parser accepts. Pure functions; thread-safe.

#include <optional>
#include <string>
#include <string_view>

#include "attnkit/position/rotary.hpp"

namespace attnkit {

/// Which weight matrix W scores a set B of dropped dimensions by sum_{i,j in B} W_ij
/// (attnkit/prune/weights.hpp).
enum class PruneWeights {
  gram,      ///< (Q_w^T Q_w) o (K^T K): the note's Frobenius loss; its diagonal is ThinK's score squared
  centered,  ///< (Q_w^T Q_w) o (K_c^T K_c), K_c = K - mean(K): the softmax row-variance score
  attention  ///< sum_n q_n q_n^T o Cov_{p_n}(K): first-order effect on each window query's softmax
};

/// How the dropped set is chosen (attnkit/prune/selection.hpp, local_search.hpp,
/// optimum.hpp, residual.hpp).
enum class PruneSelector {
  topk,                   ///< keep the D' largest diagonal entries of W (with gram weights: ThinK)
  greedy_remove,          ///< grow the dropped set by the smallest exact marginal of sum_{B x B} W
  greedy_remain,          ///< grow the kept set by the largest exact marginal (the note's preferred order)
  greedy_remove_literal,  ///< greedy_remove with the note's literal marginal (each edge counted once)
  greedy_remain_literal,  ///< greedy_remain with the note's literal marginal
  swap,                   ///< greedy_remain, then 1-swap local search to a local optimum
  residual,               ///< forward selection on the regression residual tr(G_BB R_B^T R_B)
  optimal                 ///< exact minimum of sum_{B x B} W by enumeration (at most 24 groups)
};

/// What the dropped dimensions still contribute to a compressed key's logit
/// (attnkit/prune/compensation.hpp).
enum class PruneCompensation {
  none,       ///< nothing (ThinK)
  mean,       ///< q_B . mu_B, mu_B the mean of the dropped dimensions over the compressed keys
  regression  ///< q_B . (mu_B + M (k_A - mu_A)), M fitted by ridge least squares, folded into the query
};

/// One pruning method: weights, selector, compensation, rotary pairs and
/// scale correction. The default is ThinK.
struct PruneConfig {
  PruneWeights weights = PruneWeights::gram;
  PruneSelector selector = PruneSelector::topk;
  PruneCompensation compensation = PruneCompensation::none;
  /// Keep both dimensions of each rotary pair together, in this layout;
  /// std::nullopt treats the dimensions independently.
  std::optional<RotaryLayout> rope_pairs{};
  /// Multiply the kept-dimension part of a compressed key's logit by
  /// sqrt(D / D'), as one public ThinK implementation does.
  bool scale_correction = false;
};

inline bool operator==(const PruneConfig& a, const PruneConfig& b) {
  return a.weights == b.weights && a.selector == b.selector && a.compensation == b.compensation &&
         a.rope_pairs == b.rope_pairs && a.scale_correction == b.scale_correction;
}
inline bool operator!=(const PruneConfig& a, const PruneConfig& b) {
  return !(a == b);
}

/// "gram", "centered", "attention".
inline const char* to_string(PruneWeights w) {
  switch (w) {
    case PruneWeights::gram:
      return "gram";
    case PruneWeights::centered:
      return "centered";
    case PruneWeights::attention:
      return "attention";
  }
  return "?";
}

/// "topk", "greedy-remove", "greedy-remain", "greedy-remove-literal",
/// "greedy-remain-literal", "swap", "residual", "optimal".
inline const char* to_string(PruneSelector s) {
  switch (s) {
    case PruneSelector::topk:
      return "topk";
    case PruneSelector::greedy_remove:
      return "greedy-remove";
    case PruneSelector::greedy_remain:
      return "greedy-remain";
    case PruneSelector::greedy_remove_literal:
      return "greedy-remove-literal";
    case PruneSelector::greedy_remain_literal:
      return "greedy-remain-literal";
    case PruneSelector::swap:
      return "swap";
    case PruneSelector::residual:
      return "residual";
    case PruneSelector::optimal:
      return "optimal";
  }
  return "?";
}

/// "none", "mean", "regression".
inline const char* to_string(PruneCompensation c) {
  switch (c) {
    case PruneCompensation::none:
      return "none";
    case PruneCompensation::mean:
      return "mean";
    case PruneCompensation::regression:
      return "regression";
  }
  return "?";
}

/// The accepted names, '|'-separated, for usage and error messages.
inline const char* prune_weights_names() {
  return "gram|centered|attention";
}
inline const char* prune_selector_names() {
  return "topk|greedy-remove|greedy-remain|greedy-remove-literal|greedy-remain-literal|swap|residual|optimal";
}
inline const char* prune_compensation_names() {
  return "none|mean|regression";
}
inline const char* rope_pairs_names() {
  return "interleaved|half";
}

/// Parses exactly the names of to_string(PruneWeights).
inline std::optional<PruneWeights> parse_prune_weights(std::string_view name) {
  for (const PruneWeights w : {PruneWeights::gram, PruneWeights::centered, PruneWeights::attention})
    if (name == to_string(w)) return w;
  return std::nullopt;
}

/// Parses exactly the names of to_string(PruneSelector).
inline std::optional<PruneSelector> parse_prune_selector(std::string_view name) {
  for (const PruneSelector s :
       {PruneSelector::topk, PruneSelector::greedy_remove, PruneSelector::greedy_remain,
        PruneSelector::greedy_remove_literal, PruneSelector::greedy_remain_literal, PruneSelector::swap,
        PruneSelector::residual, PruneSelector::optimal})
    if (name == to_string(s)) return s;
  return std::nullopt;
}

/// Parses exactly the names of to_string(PruneCompensation).
inline std::optional<PruneCompensation> parse_prune_compensation(std::string_view name) {
  for (const PruneCompensation c :
       {PruneCompensation::none, PruneCompensation::mean, PruneCompensation::regression})
    if (name == to_string(c)) return c;
  return std::nullopt;
}

/// Parses the rotary-pair layout names "interleaved" and "half" (to_string(RotaryLayout)).
inline std::optional<RotaryLayout> parse_rope_pairs(std::string_view name) {
  for (const RotaryLayout l : {RotaryLayout::interleaved, RotaryLayout::half})
    if (name == to_string(l)) return l;
  return std::nullopt;
}

/// A one-token description for tables and logs: "weights/selector/compensation",
/// plus "/rope-<layout>" and "/scale" when those options are on, e.g.
/// "gram/topk/none" (ThinK) or "centered/swap/regression/rope-half".
inline std::string to_string(const PruneConfig& c) {
  std::string s =
      std::string(to_string(c.weights)) + '/' + to_string(c.selector) + '/' + to_string(c.compensation);
  if (c.rope_pairs) s += std::string("/rope-") + to_string(*c.rope_pairs);
  if (c.scale_correction) s += "/scale";
  return s;
}

}  // namespace attnkit
