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
///  - a NaN anywhere in Q row i, in a key row visible to query i, or in a
///    visible value row reaches exactly the output rows (and, for V, the
///    columns) it enters; no other row changes. A +-inf input makes the rows it
///    reaches non-finite in the same way;
///  - finite logits of any magnitude (+-1e4 and beyond) neither overflow nor
///    produce NaN: each row's running maximum is subtracted before exp.

#include <cmath>
#include <optional>
#include <type_traits>

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

/// Validates the arguments of an attention call named `where`.
/// \throws std::invalid_argument naming the argument and the shapes when Q, K
///         or V is empty, Q and K differ in width, K and V differ in rows, the
///         scale is non-finite or <= 0, or the mask offset is invalid.
template <typename DQ, typename DK, typename DV>
AttentionProblem make_attention_problem(const char* where, const Eigen::MatrixBase<DQ>& q,
                                        const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
                                        const AttentionOptions& options) {
  static_assert(std::is_same_v<typename DQ::Scalar, typename DK::Scalar> &&
                    std::is_same_v<typename DQ::Scalar, typename DV::Scalar>,
                "Q, K and V must share one Scalar type");
  static_assert(std::is_floating_point_v<typename DQ::Scalar>, "attention needs a floating-point Scalar");
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
  return AttentionProblem{q.rows(), k.rows(), q.cols(),
                          v.cols(), scale,    resolve_mask(options.mask, q.rows(), k.rows())};
}

}  // namespace attnkit
