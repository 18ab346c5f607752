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
/// when options.centre). Per window query n: p_n from the exact (reference)
/// probabilities, then C_n = K~^T J_n K~ (J_n = diag(p_n) - p_n p_n^T, the
/// softmax Jacobian of note 002) in its symmetric form
/// (K~ - 1 mu^T)^T diag(p) (K~ - 1 mu^T) + tail mu mu^T (mu = K~^T p_n, tail =
/// the probability on the visible keys without error): one rank-update of a
/// centred block, half the flops of a general product and no cancellation, and
/// W += (q_n q_n^T) o C_n, over the keys query n sees.
/// \param window_queries (w x D); \param keys (n x D), n >= 1.
/// \returns (D x D) symmetric PSD, double. O(w n D^2) time (w n D^2 / 2
///          multiply-adds), O(n D) memory.
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

  RowMatrix<double> weights = RowMatrix<double>::Zero(d, d);
  Eigen::MatrixXd x, c(d, d);
  for (Index t = 0; t < w; ++t) {
    // Query t sees keys [0, visible); K~ is zero beyond the error keys.
    const Index visible = pb.mask.key_end(t);
    const Index rows = std::min(visible, error_keys);
    if (rows == 0) continue;
    const auto pt = p.row(t).head(rows);
    const double tail = p.row(t).segment(rows, visible - rows).sum();
    // C = K~^T J K~ with J = diag(p) - p p^T over the visible keys, in the
    // symmetric form (K~ - 1 mu^T)^T diag(p) (K~ - 1 mu^T) + tail mu mu^T,
    // mu = K~^T p, tail = the probability of the visible keys without error.
    const Eigen::RowVectorXd mu = pt * kt.topRows(rows);
    x = kt.topRows(rows);
    x.rowwise() -= mu;
    x = pt.transpose().cwiseSqrt().asDiagonal() * x;
    c.setZero();
    c.selfadjointView<Eigen::Lower>().rankUpdate(x.transpose());
    c.triangularView<Eigen::StrictlyUpper>() = c.transpose();
    const Eigen::MatrixXd outer = mu.transpose() * mu;  // mu_i mu_j, then the scale: exactly symmetric
    c += tail * outer;
    const Eigen::RowVectorXd q = window_queries.row(t).template cast<double>();
    weights += (q.transpose() * q).cwiseProduct(c);
  }
  return weights;
}

}  // namespace attnkit
