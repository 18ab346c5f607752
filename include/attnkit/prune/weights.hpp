#pragma once

/// \file attnkit/prune/weights.hpp
/// The weight matrices W (D x D, symmetric positive semi-definite) whose
/// objective F(B) = sum_{i,j in B} W_ij scores a set B of dropped key
/// dimensions, from window queries Q_w (w x D) and keys K (n x D):
///
///  - gram:      W = (Q_w^T Q_w) o (K^T K). F(B) = ||Q_w K^T - Q_w S K^T||_F^2, the
///               note's loss; W_ii = ||q_i||^2 ||k_i||^2 (ThinK's score squared).
///  - centered:  W = (Q_w^T Q_w) o (K_c^T K_c), K_c = K - 1 mean(K)^T. W_ii =
///               ||q_i||^2 ||k_i - mean(k_i)||^2 is n times the summed row variance
///               of q_i k_i^T (the note's softmax row-variance score). F(B) is the
///               logit error left after mean compensation (compensation.hpp)
///               when the error keys are exactly K.
///  - attention: W^p = sum_n (q_n q_n^T) o Cov_{p_n}(K~), p_n the attention row of
///               window query n, Cov_p(X) = X^T (diag(p) - p p^T) X = X^T J X with
///               the softmax Jacobian J of note 002, and K~ the keys that
///               receive an error (optionally centred). F(B) = sum_n Var_{p_n}(dz_n)
///               with dz_n = q_{n,B} . k~_B the logit error of query n (before the
///               logit scale), which is twice the second-order KL divergence
///               between the exact and the pruned attention row divided by the
///               squared logit scale (J is the softmax's Fisher information).
///
/// The Hadamard product of PSD matrices is PSD (Schur), so every W is PSD and
/// F(B) >= 0. All weights are computed and returned in double.
///
/// Cost: gram and centered O(n D^2 + w D^2) (two Gram matrices);
/// attention O(w n D^2) (one D x D covariance per window query), about w
/// times more: see docs/benchmarks.md for measured times.
/// Thread safety: pure functions.

#include <algorithm>
#include <optional>
#include <type_traits>

#include "attnkit/attention/reference.hpp"
#include "attnkit/prune/statistics.hpp"

namespace attnkit {

namespace detail {

template <typename DQ, typename DK>
void check_weight_inputs(const char* where, const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k) {
  static_assert(std::is_same_v<typename DQ::Scalar, typename DK::Scalar>,
                "queries and keys must share one Scalar type");
  require_non_empty(where, "window queries", q);
  if (k.cols() == 0) fail(where, ": keys ", shape(k), " have no columns");
  if (q.cols() != k.cols())
    fail(where, ": window queries ", shape(q), " and keys ", shape(k), " must have the same width D");
}

}  // namespace detail

/// (Q_w^T Q_w) o (K^T K) from precomputed query Gram G (D x D) and key statistics.
/// \throws std::invalid_argument if the sizes differ.
inline RowMatrix<double> gram_weights_from_statistics(const RowMatrix<double>& query_gram,
                                                      const KeyStatistics& keys) {
  if (query_gram.rows() != keys.dim() || query_gram.cols() != keys.dim())
    detail::fail("gram_weights_from_statistics: query Gram ", detail::shape(query_gram),
                 " does not match keys of width ", keys.dim());
  return query_gram.cwiseProduct(keys.gram());
}

/// (Q_w^T Q_w) o (K_c^T K_c) from precomputed query Gram and key statistics.
/// \throws std::invalid_argument if the sizes differ.
inline RowMatrix<double> centered_weights_from_statistics(const RowMatrix<double>& query_gram,
                                                          const KeyStatistics& keys) {
  if (query_gram.rows() != keys.dim() || query_gram.cols() != keys.dim())
    detail::fail("centered_weights_from_statistics: query Gram ", detail::shape(query_gram),
                 " does not match keys of width ", keys.dim());
  return query_gram.cwiseProduct(keys.scatter);
}

/// The note's weights W = (Q_w^T Q_w) o (K^T K).
/// \param window_queries (w x D), w >= 1; \param keys (n x D), n >= 0.
/// \returns (D x D) in double. O((n + w) D^2).
/// \throws std::invalid_argument for empty queries or mismatched widths.
template <typename DQ, typename DK>
RowMatrix<double> gram_weights(const Eigen::MatrixBase<DQ>& window_queries,
                               const Eigen::MatrixBase<DK>& keys) {
  detail::check_weight_inputs("gram_weights", window_queries, keys);
  return gram_weights_from_statistics(query_gram(window_queries), key_statistics(keys));
}

/// The centred weights W = (Q_w^T Q_w) o (K_c^T K_c), K_c = K - mean(K). Invariant
/// to adding one vector to every key (it only moves the mean).
/// Shapes, cost and errors as gram_weights.
template <typename DQ, typename DK>
RowMatrix<double> centered_weights(const Eigen::MatrixBase<DQ>& window_queries,
                                   const Eigen::MatrixBase<DK>& keys) {
  detail::check_weight_inputs("centered_weights", window_queries, keys);
  return centered_weights_from_statistics(query_gram(window_queries), key_statistics(keys));
}

/// Options of attention_weights.
struct AttentionWeightOptions {
  /// The attention rows p_n: mask and logit scale of the window queries over
  /// the keys. Default: causal with the window queries as the last w tokens of
  /// the key sequence (offset n - w), scale 1/sqrt(D).
  AttentionOptions attention{Mask::causal(), {}};
  /// Only keys [0, error_keys) are pruned and carry a logit error; the later
  /// ones (the recent window kept at full dimension) keep exact logits, so a
  /// uniform shift of the pruned logits is NOT free. std::nullopt: all keys.
  std::optional<Index> error_keys{};
  /// Use k - mean before the covariance, the mean taken over the error keys:
  /// the error that remains after mean or regression compensation.
  bool centre = false;
};

/// The attention-aware weights W^p_ij = sum_n Q_ni Q_nj Cov_{p_n}(K~_i, K~_j),
/// K~ = the keys with rows >= error_keys set to 0 (and the error rows centred
/// when options.centre), p_n the exact (reference) attention row of window
/// query n. Cov_{p_n}(K~) = K~^T J_n K~ with J_n = diag(p_n) - p_n p_n^T, the
/// softmax Jacobian of note 002, is formed in its symmetric, centred form and
/// folded with q_n q_n^T into rank updates of one D x D accumulator (see the
/// comments in the code): w n D^2 / 2 multiply-adds, no cancellation.
/// \param window_queries (w x D); \param keys (n x D), n >= 1.
/// \returns (D x D) symmetric PSD, double. O(w n D^2) time, O(n D + 8192 D)
///          memory.
/// \throws std::invalid_argument for empty inputs, mismatched widths, a bad
///         mask/scale, or error_keys outside [0, n].
template <typename DQ, typename DK>
RowMatrix<double> attention_weights(const Eigen::MatrixBase<DQ>& window_queries,
                                    const Eigen::MatrixBase<DK>& keys,
                                    const AttentionWeightOptions& options = {}) {
  const char* where = "attention_weights";
  detail::check_weight_inputs(where, window_queries, keys);
  detail::require_non_empty(where, "keys", keys);
  const Index w = window_queries.rows(), n = keys.rows(), d = keys.cols();
  const Index error_keys = options.error_keys.value_or(n);
  if (error_keys < 0 || error_keys > n)
    detail::fail(where, ": error_keys = ", error_keys, " must be in [0, n] for keys ", detail::shape(keys));
  const AttentionProblem pb =
      make_attention_problem(where, window_queries, keys, keys.leftCols(1), options.attention);
  const RowMatrix<double> p =
      reference_attention_probabilities(window_queries, keys, options.attention).template cast<double>();
  RowMatrix<double> kt = keys.topRows(error_keys).template cast<double>();
  if (options.centre && error_keys > 0) kt.rowwise() -= kt.colwise().mean();
  const RowMatrix<double> q = window_queries.template cast<double>();

  // C_n = K~^T J_n K~ with J_n = diag(p_n) - p_n p_n^T over the keys query n
  // sees, in the symmetric form
  //   C_n = (K~ - 1 mu_n^T)^T diag(p_n) (K~ - 1 mu_n^T) + tail_n mu_n mu_n^T,
  // mu_n = K~^T p_n, tail_n = p_n's mass on visible keys without error (K~ = 0
  // there). Then (q q^T) o (X^T X) = (X diag(q))^T (X diag(q)), so every term
  // is a rank update of one D x D accumulator with the rows
  //   sqrt(p_nm) (k~_m - mu_n) o q_n,   and   sqrt(tail_n) (mu_n o q_n).
  // Masked keys have p_nm = 0 and add nothing. The rows of all window queries
  // for one block of keys are stacked, so each key block is read from cache w
  // times and the update is one large symmetric rank-k product.
  const RowMatrix<double> mu = p.leftCols(error_keys) * kt;  // (w x D)
  Eigen::MatrixXd acc = Eigen::MatrixXd::Zero(d, d);
  const Index block = std::max<Index>(16, 8192 / std::max<Index>(w, 1));
  RowMatrix<double> stack;  // row-major: stack^T is the column-major D x (w r) factor of the rank update
  for (Index b0 = 0; b0 < error_keys; b0 += block) {
    const Index r = std::min(block, error_keys - b0);
    stack.resize(w * r, d);
    for (Index t = 0; t < w; ++t) {
      const Eigen::VectorXd sqrt_p = p.row(t).segment(b0, r).transpose().cwiseSqrt();
      stack.middleRows(t * r, r) =
          sqrt_p.asDiagonal() * (kt.middleRows(b0, r).rowwise() - mu.row(t)) * q.row(t).asDiagonal();
    }
    acc.selfadjointView<Eigen::Lower>().rankUpdate(stack.transpose());
  }
  for (Index t = 0; t < w; ++t) {
    const Index visible = pb.mask.key_end(t);
    if (visible <= error_keys || error_keys == 0) continue;
    const double tail = p.row(t).segment(error_keys, visible - error_keys).sum();
    const Eigen::VectorXd v = mu.row(t).cwiseProduct(q.row(t)).transpose();
    acc.selfadjointView<Eigen::Lower>().rankUpdate(v, tail);
  }
  acc.triangularView<Eigen::StrictlyUpper>() = acc.transpose();
  const RowMatrix<double> weights = acc;
  return weights;
}

}  // namespace attnkit
