#pragma once

/// \file attnkit/attention/problem.hpp
/// What every attention kernel in attnkit computes, and how its arguments are
/// validated:
///
///   O = softmax(scale * Q K^T + mask) V,   lse_i = log sum_{j visible} exp(scale q_i . k_j)
///
/// with Q (n_q x d), K (n_k x d), V (n_k x d_v), scale defaulting to 1/sqrt(d)
/// and the masks of attnkit/core/mask.hpp. The per-row log-sum-exp is returned
/// so partial results over disjoint key sets can be merged exactly.
///
/// Conventions shared by all kernels:
///  - a query that sees no key has a zero output row and lse = -inf;
///  - non-finite values follow the LOGIT they produce: a logit that evaluates
///    to -inf gives its key probability exactly 0, as a masked key has (a
///    -inf query component against a positive key component, say); a logit
///    that is +inf or NaN makes its query's output row and lse NaN. A row
///    whose visible logits are all -inf is a row that sees no key. The value
///    row of a probability-0 key is still multiplied by that 0 (IEEE
///    arithmetic, as PyTorch does for -inf float masks): a finite value adds
///    nothing, a NaN or +-inf in it makes that output column NaN. Keys the
///    MASK hides are never read at all: nothing in them reaches any output;
///  - so a NaN anywhere in Q row i, in a key row visible to query i, or in a
///    visible value row reaches exactly the output rows (and, for V, the
///    columns) it enters; no other row changes;
///  - finite logits of any magnitude (+-1e4 and beyond) neither overflow nor
///    produce NaN: each row's running maximum is subtracted before exp.

#include <cmath>
#include <optional>

#include "attnkit/core/mask.hpp"
#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

/// Options common to all attention kernels.
struct AttentionOptions {
  /// Which keys each query sees (default: all of them).
  Mask mask{};
  /// Logit scale; std::nullopt means 1/sqrt(d). Must be finite and > 0.
  std::optional<double> scale{};
};

/// A half-open range [begin, end) of key POSITIONS (rows of the key sequence
/// the mask is defined on).
struct KeyRange {
  Index begin = 0;
  Index end = 0;
  Index size() const { return end > begin ? end - begin : 0; }
};

/// Output of an attention kernel.
template <typename Scalar>
struct AttentionResult {
  /// (n_q x d_v) attention output.
  RowMatrix<Scalar> output;
  /// (n_q) natural log of each row's softmax normaliser, over scaled logits;
  /// -inf for a row that sees no key.
  Vector<Scalar> lse;
};

/// A validated attention problem: shapes, bound mask and scale.
struct AttentionProblem {
  Index n_q = 0;
  Index n_k = 0;
  Index d = 0;
  Index d_v = 0;
  double scale = 0;
  MaskLayout mask;
};

/// Validates the arguments of an attention call named `where`. The mask is
/// bound to a key sequence of `n_positions` keys (default: the rows of K;
/// partial calls whose K is a part of a longer sequence pass its length).
/// \throws std::invalid_argument naming the argument and the shapes when Q, K
///         or V is empty, Q and K differ in width, K and V differ in rows, the
///         scale is non-finite or <= 0, or the mask is invalid.
template <typename DQ, typename DK, typename DV>
AttentionProblem make_attention_problem(const char* where, const Eigen::MatrixBase<DQ>& q,
                                        const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
                                        const AttentionOptions& options,
                                        std::optional<Index> n_positions = {}) {
  detail::require_non_empty(where, "Q", q);
  detail::require_non_empty(where, "K", k);
  detail::require_non_empty(where, "V", v);
  if (q.cols() != k.cols())
    detail::fail(where, ": Q ", detail::shape(q), " and K ", detail::shape(k),
                 " must have the same width d (columns)");
  if (k.rows() != v.rows())
    detail::fail(where, ": K ", detail::shape(k), " and V ", detail::shape(v),
                 " must have the same number of rows n_k (one per key)");
  const double scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(q.cols())));
  if (!(std::isfinite(scale) && scale > 0))
    detail::fail(where, ": scale = ", scale, " must be finite and > 0");
  MaskLayout mask = resolve_mask(options.mask, q.rows(), n_positions.value_or(k.rows()));
  return AttentionProblem{q.rows(), k.rows(), q.cols(), v.cols(), scale, mask};
}

}  // namespace attnkit
