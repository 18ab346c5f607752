#pragma once

/// \file attnkit/prune/protocol.hpp
/// The evaluation protocol of key-dimension pruning (docs/pruning.md), as a function:
/// pruning is decided once, after the prompt, and judged by the queries that
/// come after it.
///
/// Given a sequence of n tokens (Q, K: n x D; V: n x d_v) and a prompt length n0:
///  - the dimensions are chosen from the last w prompt queries Q[n0 - w, n0)
///    over the prompt keys K[0, n0) (prune_prompt);
///  - the cache holds the n0 prompt keys, the last r at full dimension and the
///    rest pruned and compensated;
///  - every later query t >= n0 attends causally to the cache plus the keys of
///    tokens n0 .. t, which enter at full dimension (with compress_new_keys they
///    instead push the oldest window tokens into the compressed part, token by
///    token, as a running PrunedKeyCache would);
///  - quality: the relative Frobenius error of the outputs of the queries
///    t >= n0 against exact attention (reference_attention, causal).
/// When n0 = n nothing comes after the prompt; then EVERY query t in [0, n) is
/// judged, causally over the pruned cache (the window queries are judged on the
/// data they were selected from, which flatters the result: use a real n0).
///
/// Metrics (PruneProtocolResult):
///  - output_error: ||O~ - O||_F / ||O||_F over the judged queries;
///  - logit_rmse: root mean square of z~ - z, the scaled logit error of the
///    judged queries on the compressed prompt keys they see, with the
///    compensation fitted on the prompt (includes the rounding of z~ to Scalar,
///    about eps |z|);
///  - objective: F(B) = sum_{i,j in B} W_ij of the configuration's weight
///    matrix and its total sum_ij W_ij (objective / objective_total is the
///    share of the weight that is dropped).
///
/// Cost: prune_prompt; the judged queries over the cache through the fused
/// kernel, O(n_j n (D' + d_v)); the logit error in the wide type,
/// O(n_j n_c (D + D')), per block of 256 queries; and the exact outputs
/// (reference_attention, O(n_j n (D + d_v)) in the wide type) unless given.
/// Thread safety: pure function.

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit/attention/reference.hpp"
#include "attnkit/core/metrics.hpp"
#include "attnkit/prune/prompt.hpp"

namespace attnkit {

/// Options of run_prune_protocol.
struct PruneProtocolOptions {
  /// n0, the prompt length, in [1, n]; std::nullopt = n (every query judged).
  std::optional<Index> prompt{};
  /// w, the number of prompt queries the selection sees, in [1, n0].
  Index window = 32;
  /// How to prune: ratio, config, recent r, weight keys, ridge, scale.
  /// prune.compress_overflow is replaced by compress_new_keys.
  PruneOptions prune{};
  /// False (the protocol): tokens after the prompt stay at full dimension.
  /// True: they enter the window and push its oldest tokens into the
  /// compressed part (judged token by token).
  bool compress_new_keys = false;
};

/// Outcome of run_prune_protocol.
template <typename Scalar>
struct PruneProtocolResult {
  /// The kept (and dropped) dimensions.
  DimSelection selection;
  /// n0.
  Index prompt = 0;
  /// The judged queries are the rows [first_judged, n): n0, or 0 when n0 = n.
  Index first_judged = 0;
  /// (n - first_judged) x d_v: attention outputs of the judged queries over the pruned cache.
  RowMatrix<Scalar> output;
  /// The exact outputs of the same queries.
  RowMatrix<Scalar> exact;
  /// ||output - exact||_F / ||exact||_F.
  double output_error = 0;
  /// RMS scaled-logit error on the compressed prompt keys (0 if none is compressed).
  double logit_rmse = 0;
  /// F(B) for the configuration's weight matrix, and sum_ij W_ij.
  double objective = 0;
  double objective_total = 0;
  /// The cache's memory after the judged tokens were appended.
  PrunedCacheMemory memory;
};

namespace detail {

struct ProtocolLayout {
  Index n = 0, n0 = 0, first_judged = 0;
};

template <typename DQ, typename DK, typename DV>
ProtocolLayout check_protocol(const char* where, const Eigen::MatrixBase<DQ>& q,
                              const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
                              const PruneProtocolOptions& o, Index heads = 1) {
  static_assert(std::is_same_v<typename DQ::Scalar, typename DK::Scalar> &&
                    std::is_same_v<typename DQ::Scalar, typename DV::Scalar>,
                "Q, K and V must share one Scalar type");
  require_non_empty(where, "Q", q);
  require_non_empty(where, "K", k);
  require_non_empty(where, "V", v);
  if (q.cols() != k.cols())
    fail(where, ": Q ", shape(q), " and K ", shape(k), " must have the same width D (columns)");
  if (heads < 1) fail(where, ": heads = ", heads, " must be >= 1");
  if (q.rows() != heads * k.rows() || k.rows() != v.rows())
    fail(where, ": Q ", shape(q), ", K ", shape(k), " and V ", shape(v), " must have one row per token",
         heads > 1 ? " (Q: one per token and query head)" : "", " (n rows; heads = ", heads, ")");
  ProtocolLayout l;
  l.n = k.rows();
  l.n0 = o.prompt.value_or(l.n);
  if (l.n0 < 1 || l.n0 > l.n) fail(where, ": prompt n0 = ", l.n0, " must be in [1, n] = [1, ", l.n, "]");
  if (o.window < 1) fail(where, ": window w = ", o.window, " must be >= 1");
  if (o.window > l.n0)
    fail(where, ": the window (w = ", o.window, ") is longer than the prompt (n0 = ", l.n0, ")");
  check_prune_options(where, o.prune);
  static_cast<void>(kept_dimension_count(q.cols(), o.prune.ratio));  // throws for a bad ratio or D' = 0
  l.first_judged = l.n0 < l.n ? l.n0 : 0;
  return l;
}

/// The exact outputs of the judged queries, after validation (layout `l`).
template <typename DQ, typename DK, typename DV>
RowMatrix<typename DQ::Scalar> exact_outputs_checked(const Eigen::MatrixBase<DQ>& q,
                                                     const Eigen::MatrixBase<DK>& k,
                                                     const Eigen::MatrixBase<DV>& v,
                                                     const PruneProtocolOptions& options,
                                                     const ProtocolLayout& l) {
  const AttentionOptions causal{Mask::causal(), options.prune.scale};
  return reference_attention(q.bottomRows(l.n - l.first_judged), k, v, causal).output;
}

/// The exact outputs of every head's judged queries (heads n_j x d_v).
template <typename DQ, typename DK, typename DV>
RowMatrix<typename DQ::Scalar> exact_outputs_heads(const Eigen::MatrixBase<DQ>& q, Index heads,
                                                   const Eigen::MatrixBase<DK>& k,
                                                   const Eigen::MatrixBase<DV>& v,
                                                   const PruneProtocolOptions& options,
                                                   const ProtocolLayout& l) {
  const Index n_j = l.n - l.first_judged;
  RowMatrix<typename DQ::Scalar> out(heads * n_j, v.cols());
  for (Index h = 0; h < heads; ++h)
    out.middleRows(h * n_j, n_j) = exact_outputs_checked(q.middleRows(h * l.n, l.n), k, v, options, l);
  return out;
}

}  // namespace detail

/// The exact outputs of the judged queries (reference_attention, causal):
/// what run_prune_protocol compares against. Pass them to the overload below
/// to evaluate several configurations on one sequence without recomputing.
/// \throws std::invalid_argument as run_prune_protocol.
template <typename DQ, typename DK, typename DV>
RowMatrix<typename DQ::Scalar> protocol_exact_outputs(const Eigen::MatrixBase<DQ>& q,
                                                      const Eigen::MatrixBase<DK>& k,
                                                      const Eigen::MatrixBase<DV>& v,
                                                      const PruneProtocolOptions& options) {
  const detail::ProtocolLayout l = detail::check_protocol("protocol_exact_outputs", q, k, v, options);
  return detail::exact_outputs_checked(q, k, v, options, l);
}

namespace detail {

/// The protocol for `heads` query heads (q: heads n x D, head h in rows
/// [h n, (h + 1) n)) sharing K and V, after validation (layout `l`): one
/// selection and one cache for the group (prune_prompt_shared); exact holds
/// every head's exact judged outputs (heads n_j x d_v). One result per head.
template <typename DQ, typename DK, typename DV, typename DE>
std::vector<PruneProtocolResult<typename DQ::Scalar>> run_protocol_heads_checked(
    const char* where, const Eigen::MatrixBase<DQ>& q, Index heads, const Eigen::MatrixBase<DK>& k,
    const Eigen::MatrixBase<DV>& v, const PruneProtocolOptions& options, const Eigen::MatrixBase<DE>& exact,
    const ProtocolLayout& l) {
  using Scalar = typename DQ::Scalar;
  using Wide = wider_t<Scalar>;
  const Index n_j = l.n - l.first_judged, n = l.n, w = options.window;
  if (exact.rows() != heads * n_j || exact.cols() != v.cols())
    detail::fail(where, ": exact outputs ", detail::shape(exact), " must be (", heads * n_j, " x ", v.cols(),
                 "), one row per judged query", heads > 1 ? " and head" : "");

  PruneOptions po = options.prune;
  po.compress_overflow = options.compress_new_keys;
  RowMatrix<Scalar> windows(heads * w, q.cols());
  for (Index h = 0; h < heads; ++h)
    windows.middleRows(h * w, w) = q.middleRows(h * n + l.n0 - w, w);
  PrunedPrompt<Scalar> pruned = prune_prompt_heads(where, windows, heads, k.topRows(l.n0), po);
  PrunedKeyCache<Scalar>& cache = pruned.cache;

  std::vector<PruneProtocolResult<Scalar>> results(static_cast<std::size_t>(heads));
  std::vector<RowMatrix<Scalar>> qj(static_cast<std::size_t>(heads));
  for (Index h = 0; h < heads; ++h) {
    PruneProtocolResult<Scalar>& r = results[static_cast<std::size_t>(h)];
    r.selection = cache.selection();
    r.prompt = l.n0;
    r.first_judged = l.first_judged;
    qj[static_cast<std::size_t>(h)] = q.middleRows(h * n + l.first_judged, n_j);
  }

  // Logit error on the compressed prompt keys, before anything is appended,
  // accumulated per block of queries (no n_j x n logit matrix).
  const Index n_c = cache.compressed_size();
  if (n_c > 0) {
    const double scale = po.scale.value_or(1.0 / std::sqrt(static_cast<double>(q.cols())));
    const RowMatrix<Wide> kc = k.topRows(n_c).template cast<Wide>();
    constexpr Index block = 256;
    for (Index h = 0; h < heads; ++h) {
      const RowMatrix<Scalar>& qh = qj[static_cast<std::size_t>(h)];
      long double sum = 0;
      long double count = 0;
      for (Index t0 = 0; t0 < n_j; t0 += block) {
        const Index rows = std::min(block, n_j - t0);
        const RowMatrix<Scalar> approx = cache.logits(qh.middleRows(t0, rows), po.scale);
        const RowMatrix<Wide> exact_z =
            static_cast<Wide>(scale) * (qh.middleRows(t0, rows).template cast<Wide>() * kc.transpose());
        for (Index t = 0; t < rows; ++t) {
          const Index visible = std::min(n_c, l.first_judged + t0 + t + 1);
          for (Index m = 0; m < visible; ++m) {
            const long double diff =
                static_cast<long double>(approx(t, m)) - static_cast<long double>(exact_z(t, m));
            sum += diff * diff;
          }
          count += static_cast<long double>(visible);
        }
      }
      results[static_cast<std::size_t>(h)].logit_rmse =
          count > 0 ? static_cast<double>(std::sqrt(sum / count)) : 0.0;
    }
  }

  // The judged queries over the cache.
  const AttentionOptions causal{Mask::causal(), po.scale};
  if (l.n0 != l.n && !options.compress_new_keys) cache.append(k.bottomRows(n_j));
  if (!options.compress_new_keys || l.n0 == l.n) {
    for (Index h = 0; h < heads; ++h)
      results[static_cast<std::size_t>(h)].output =
          cache.attention(qj[static_cast<std::size_t>(h)], v, causal).output;
  } else {
    for (Index h = 0; h < heads; ++h)
      results[static_cast<std::size_t>(h)].output.resize(n_j, v.cols());
    const AttentionOptions all{Mask::none(), po.scale};
    for (Index t = 0; t < n_j; ++t) {
      const Index pos = l.n0 + t;
      cache.append(k.middleRows(pos, 1));
      for (Index h = 0; h < heads; ++h)
        results[static_cast<std::size_t>(h)].output.row(t) =
            cache.attention(qj[static_cast<std::size_t>(h)].middleRows(t, 1), v.topRows(pos + 1), all).output;
    }
  }

  // The objective under the configuration's weights (summed over the heads).
  RowMatrix<double> wm = std::move(pruned.weights);
  if (wm.size() == 0) {
    AttentionWeightOptions ao;
    ao.attention = AttentionOptions{Mask::causal(), po.scale};
    ao.error_keys = po.weight_keys == WeightKeys::prompt ? l.n0 : n_c;
    ao.centre = po.config.compensation != PruneCompensation::none;
    for (Index h = 0; h < heads; ++h) {
      RowMatrix<double> wh = attention_weights(windows.middleRows(h * w, w), k.topRows(l.n0), ao);
      if (h == 0)
        wm = std::move(wh);
      else
        wm += wh;
    }
  }
  const double objective = selection_objective(wm, cache.selection()), total = total_objective(wm);
  for (Index h = 0; h < heads; ++h) {
    PruneProtocolResult<Scalar>& r = results[static_cast<std::size_t>(h)];
    r.exact = exact.middleRows(h * n_j, n_j);
    r.output_error = relative_frobenius_error(r.output, r.exact);
    r.memory = cache.memory();
    r.objective = objective;
    r.objective_total = total;
  }
  return results;
}

/// run_prune_protocol after its arguments were validated (layout `l`).
template <typename DQ, typename DK, typename DV, typename DE>
PruneProtocolResult<typename DQ::Scalar> run_protocol_checked(
    const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
    const PruneProtocolOptions& options, const Eigen::MatrixBase<DE>& exact, const ProtocolLayout& l) {
  return std::move(run_protocol_heads_checked("run_prune_protocol", q, 1, k, v, options, exact, l)[0]);
}

}  // namespace detail

/// Runs the protocol with precomputed exact outputs (from
/// protocol_exact_outputs with the same prompt length).
/// \throws std::invalid_argument for empty or mismatched Q, K, V; n0 outside
///         [1, n]; w < 1 or w > n0; r < 0; a ratio outside [0, 1) or D' = 0;
///         exact outputs of the wrong shape; and the errors of prune_prompt.
template <typename DQ, typename DK, typename DV, typename DE>
PruneProtocolResult<typename DQ::Scalar> run_prune_protocol(const Eigen::MatrixBase<DQ>& q,
                                                            const Eigen::MatrixBase<DK>& k,
                                                            const Eigen::MatrixBase<DV>& v,
                                                            const PruneProtocolOptions& options,
                                                            const Eigen::MatrixBase<DE>& exact) {
  const detail::ProtocolLayout l = detail::check_protocol("run_prune_protocol", q, k, v, options);
  return detail::run_protocol_checked(q, k, v, options, exact, l);
}

/// Runs the protocol (see the file comment), computing the exact outputs too.
/// \param q, k (n x D), \param v (n x d_v): one row per token.
/// \returns kept dimensions, judged and exact outputs, metrics, memory.
/// \throws std::invalid_argument as the overload above.
template <typename DQ, typename DK, typename DV>
PruneProtocolResult<typename DQ::Scalar> run_prune_protocol(const Eigen::MatrixBase<DQ>& q,
                                                            const Eigen::MatrixBase<DK>& k,
                                                            const Eigen::MatrixBase<DV>& v,
                                                            const PruneProtocolOptions& options = {}) {
  const detail::ProtocolLayout l = detail::check_protocol("run_prune_protocol", q, k, v, options);
  return detail::run_protocol_checked(q, k, v, options, detail::exact_outputs_checked(q, k, v, options, l),
                                      l);
}

/// The protocol for a group of query heads that share one key/value head
/// (grouped-query attention): the dimensions are chosen ONCE for the group
/// from all its heads' windows (prune_prompt_shared), one pruned cache holds
/// the group's keys, and every head's judged queries attend to it.
/// \param q (heads n x D): query head h in rows [h n, (h + 1) n);
/// \param k (n x D), \param v (n x d_v): the shared key/value head.
/// \returns one result per query head (the same selection, cache memory and
///          objective — of the summed weights — in each).
/// \throws std::invalid_argument as run_prune_protocol, and when Q's rows are
///         not heads * n.
template <typename DQ, typename DK, typename DV>
std::vector<PruneProtocolResult<typename DQ::Scalar>> run_prune_protocol_shared(
    const Eigen::MatrixBase<DQ>& q, Index heads, const Eigen::MatrixBase<DK>& k,
    const Eigen::MatrixBase<DV>& v, const PruneProtocolOptions& options = {}) {
  const char* where = "run_prune_protocol_shared";
  const detail::ProtocolLayout l = detail::check_protocol(where, q, k, v, options, heads);
  return detail::run_protocol_heads_checked(where, q, heads, k, v, options,
                                            detail::exact_outputs_heads(q, heads, k, v, options, l), l);
}

}  // namespace attnkit
