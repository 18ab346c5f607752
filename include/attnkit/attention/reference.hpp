#pragma once

/// \file attnkit/attention/reference.hpp
/// Exact reference attention: the oracle every fast path in attnkit is tested
/// against. Clarity over speed.
///
/// Computes O = softmax(scale Q K^T + mask) V and the per-row log-sum-exp (see
/// attnkit/attention/problem.hpp) one query row at a time, materialising that
/// row's logits and probabilities, in an accumulation type one step wider than
/// the input (double for float inputs, long double for double inputs), and
/// rounds only the final result to Scalar. Its error against exact arithmetic
/// is therefore half an ulp of Scalar per output entry plus the wide type's
/// rounding, which is negligible at the sizes attnkit handles.
///
/// Complexity: O(n_q n_k (d + d_v)) time, O((n_q + n_k)(d + d_v)) memory in
/// the wide type (a wide copy of the inputs); single-threaded.
/// Thread safety: a pure function; concurrent calls are safe.

#include <cmath>
#include <limits>

#include "attnkit/attention/problem.hpp"
#include "attnkit/core/softmax.hpp"
#include "attnkit/detail/wider.hpp"

namespace attnkit {

namespace detail {

/// Probabilities of one query row over its visible keys (wide type) in the
/// first key_end entries of `probs`, or lse = -inf when it sees none. Returns
/// lse. `logits` and `probs` are caller-owned buffers of n_k entries, so the
/// row loop allocates nothing.
template <typename Wide>
Wide reference_row(const RowMatrix<Wide>& qw, const RowMatrix<Wide>& kw, Wide scale, Index i, Index key_end,
                   Vector<Wide>& logits, Vector<Wide>& probs) {
  if (key_end == 0) return -std::numeric_limits<Wide>::infinity();
  auto z = logits.head(key_end);
  z.noalias() = kw.topRows(key_end) * qw.row(i).transpose();
  z *= scale;
  auto p = probs.head(key_end);
  return softmax_row(z, Wide(1), &p);
}

}  // namespace detail

/// Exact attention, computed row by row in a wider type.
/// \param q (n_q x d) queries; \param k (n_k x d) keys; \param v (n_k x d_v) values.
/// \param options mask (default none) and scale (default 1/sqrt(d)).
/// \returns output (n_q x d_v) and lse (n_q).
/// \throws std::invalid_argument for bad shapes, scale or mask offset.
///
/// \code
///   attnkit::RowMatrix<float> q = ..., k = ..., v = ...;
///   auto r = attnkit::reference_attention(q, k, v, {attnkit::Mask::causal()});
///   // r.output is (n_q x d_v), r.lse is (n_q)
/// \endcode
template <typename DQ, typename DK, typename DV>
AttentionResult<typename DQ::Scalar> reference_attention(const Eigen::MatrixBase<DQ>& q,
                                                         const Eigen::MatrixBase<DK>& k,
                                                         const Eigen::MatrixBase<DV>& v,
                                                         const AttentionOptions& options = {}) {
  using Scalar = typename DQ::Scalar;
  using Wide = detail::wider_t<Scalar>;
  const AttentionProblem pb = make_attention_problem("reference_attention", q, k, v, options);
  const RowMatrix<Wide> qw = q.template cast<Wide>();
  const RowMatrix<Wide> kw = k.template cast<Wide>();
  const RowMatrix<Wide> vw = v.template cast<Wide>();
  const Wide scale = static_cast<Wide>(pb.scale);

  AttentionResult<Scalar> result{RowMatrix<Scalar>(pb.n_q, pb.d_v), Vector<Scalar>(pb.n_q)};
  Vector<Wide> logits(pb.n_k), probs(pb.n_k), out(pb.d_v);
  for (Index i = 0; i < pb.n_q; ++i) {
    const Index end = pb.mask.key_end(i);
    const Wide lse = detail::reference_row(qw, kw, scale, i, end, logits, probs);
    result.lse(i) = static_cast<Scalar>(lse);
    if (end == 0) {
      result.output.row(i).setZero();
    } else {
      out.noalias() = vw.topRows(end).transpose() * probs.head(end);
      result.output.row(i) = out.transpose().template cast<Scalar>();
    }
  }
  return result;
}

/// The attention probabilities P = softmax(scale Q K^T + mask), materialised.
/// Masked entries are exactly 0; a row that sees no key is all zeros.
/// Same validation and precision as reference_attention (V is not needed).
/// \returns (n_q x n_k). O(n_q n_k d) time and O(n_q n_k) memory: for analysis
///          and tests, not for long sequences.
template <typename DQ, typename DK>
RowMatrix<typename DQ::Scalar> reference_attention_probabilities(const Eigen::MatrixBase<DQ>& q,
                                                                 const Eigen::MatrixBase<DK>& k,
                                                                 const AttentionOptions& options = {}) {
  using Scalar = typename DQ::Scalar;
  using Wide = detail::wider_t<Scalar>;
  // V only has to have n_k rows for validation; a zero-copy (n_k x 1) view of K.
  const AttentionProblem pb =
      make_attention_problem("reference_attention_probabilities", q, k, k.leftCols(1), options);
  const RowMatrix<Wide> qw = q.template cast<Wide>();
  const RowMatrix<Wide> kw = k.template cast<Wide>();
  const Wide scale = static_cast<Wide>(pb.scale);

  RowMatrix<Scalar> p = RowMatrix<Scalar>::Zero(pb.n_q, pb.n_k);
  Vector<Wide> logits(pb.n_k), probs(pb.n_k);
  for (Index i = 0; i < pb.n_q; ++i) {
    const Index end = pb.mask.key_end(i);
    detail::reference_row(qw, kw, scale, i, end, logits, probs);
    if (end > 0) p.row(i).head(end) = probs.head(end).transpose().template cast<Scalar>();
  }
  return p;
}

}  // namespace attnkit
