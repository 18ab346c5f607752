#pragma once

/// \file attnkit/attention/reference.hpp
/// Exact reference attention: the oracle every fast path in attnkit is tested
/// against. Clarity over speed.
///
/// Computes O = softmax(Z + mask) V and the per-row log-sum-exp (see
/// attnkit/attention/problem.hpp; Z = scale Q K^T, or the logits of a score
/// policy evaluated by its definition, attnkit/similarity/score.hpp) one
/// query row at a time, materialising that row's logits and probabilities
/// over the keys it sees, in an accumulation type one step wider than the
/// input (double for float inputs, long double for double inputs), and rounds
/// only the final result to Scalar. Its error against exact arithmetic is
/// therefore half an ulp of Scalar per output entry plus the wide type's
/// rounding, which is negligible at the sizes attnkit handles.
///
/// Complexity: O(n_q n_k (d + d_v)) time, O((n_q + n_k)(d + d_v)) memory in
/// the wide type (a wide copy of the inputs); single-threaded.
/// Thread safety: a pure function; concurrent calls are safe.

#include <cmath>
#include <limits>
#include <type_traits>

#include "attnkit/attention/problem.hpp"
#include "attnkit/core/softmax.hpp"
#include "attnkit/detail/wider.hpp"
#include "attnkit/similarity/score.hpp"

namespace attnkit {

namespace detail {

/// The keys query row i sees: sinks [0, n_sink) and band [band_begin, band_end).
struct VisibleKeys {
  Index n_sink, band_begin, band_end;
  Index count() const { return n_sink + band_end - band_begin; }
};

inline VisibleKeys visible_keys(const MaskLayout& mask, Index i) {
  return {mask.sink_end(i), mask.key_begin(i), mask.key_end(i)};
}

/// Logits of one query row over its visible keys (wide type), sinks first,
/// into the first count() entries of `logits`.
template <typename Wide, typename Policy>
void reference_logits(const RowMatrix<Wide>& qw, const RowMatrix<Wide>& kw, Wide scale,
                      const MaskLayout& mask, Index i, const VisibleKeys& vk, const Policy& policy,
                      Vector<Wide>& logits) {
  const Index nb = vk.band_end - vk.band_begin;
  if constexpr (is_dot_product_v<Policy>) {
    if (vk.n_sink > 0) logits.head(vk.n_sink).noalias() = kw.topRows(vk.n_sink) * qw.row(i).transpose();
    if (nb > 0)
      logits.segment(vk.n_sink, nb).noalias() = kw.middleRows(vk.band_begin, nb) * qw.row(i).transpose();
    logits.head(vk.count()) *= scale;
  } else {
    const Index qpos = mask.query_position(i), d = qw.cols();
    Index t = 0;
    for (Index j = 0; j < vk.n_sink; ++j)
      logits(t++) = policy.logit(qw.row(i).data(), kw.row(j).data(), d, qpos, j, scale);
    for (Index j = vk.band_begin; j < vk.band_end; ++j)
      logits(t++) = policy.logit(qw.row(i).data(), kw.row(j).data(), d, qpos, j, scale);
  }
}

/// Probabilities of query row i over its visible keys (wide type), sinks
/// first, in the first count() entries of `probs`, or lse = -inf when it
/// sees none. Returns lse. `logits` and `probs` are caller-owned buffers of
/// n_k entries, so the row loop allocates nothing.
template <typename Wide, typename Policy>
Wide reference_row(const RowMatrix<Wide>& qw, const RowMatrix<Wide>& kw, Wide scale, const MaskLayout& mask,
                   Index i, const Policy& policy, Vector<Wide>& logits, Vector<Wide>& probs) {
  const VisibleKeys vk = visible_keys(mask, i);
  if (vk.count() == 0) return -std::numeric_limits<Wide>::infinity();
  reference_logits(qw, kw, scale, mask, i, vk, policy, logits);
  auto p = probs.head(vk.count());
  return softmax_row(logits.head(vk.count()), Wide(1), &p);
}

}  // namespace detail

/// Exact attention, computed row by row in a wider type.
/// \param q (n_q x d) queries; \param k (n_k x d) keys; \param v (n_k x d_v) values.
/// \param options mask (default none) and scale (default 1/sqrt(d)).
/// \param policy the score policy (default: scale q . k); the reference
///        evaluates its logit() definition.
/// \returns output (n_q x d_v) and lse (n_q).
/// \throws std::invalid_argument for bad shapes, scale, mask or policy parameters.
///
/// \code
///   attnkit::RowMatrix<float> q = ..., k = ..., v = ...;
///   auto r = attnkit::reference_attention(q, k, v, {attnkit::Mask::causal()});
///   // r.output is (n_q x d_v), r.lse is (n_q)
/// \endcode
template <typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
AttentionResult<typename DQ::Scalar> reference_attention(const Eigen::MatrixBase<DQ>& q,
                                                         const Eigen::MatrixBase<DK>& k,
                                                         const Eigen::MatrixBase<DV>& v,
                                                         const AttentionOptions& options = {},
                                                         const Policy& policy = {}) {
  using Scalar = typename DQ::Scalar;
  using Wide = detail::wider_t<Scalar>;
  static_assert(std::is_same_v<Scalar, typename DK::Scalar> && std::is_same_v<Scalar, typename DV::Scalar>,
                "Q, K and V must share one Scalar type");
  static_assert(std::is_floating_point_v<Scalar>, "attention needs a floating-point Scalar");
  const AttentionProblem pb = make_attention_problem("reference_attention", q, k, v, options);
  policy.check("reference_attention", pb, options);
  const RowMatrix<Wide> qw = q.template cast<Wide>();
  const RowMatrix<Wide> kw = k.template cast<Wide>();
  const RowMatrix<Wide> vw = v.template cast<Wide>();
  const Wide scale = static_cast<Wide>(pb.scale);

  AttentionResult<Scalar> result{RowMatrix<Scalar>(pb.n_q, pb.d_v), Vector<Scalar>(pb.n_q)};
  Vector<Wide> logits(pb.n_k), probs(pb.n_k), out(pb.d_v);
  for (Index i = 0; i < pb.n_q; ++i) {
    const Wide lse = detail::reference_row(qw, kw, scale, pb.mask, i, policy, logits, probs);
    result.lse(i) = static_cast<Scalar>(lse);
    // A row that sees no key stays zero (out = 0 below).
    const detail::VisibleKeys vk = detail::visible_keys(pb.mask, i);
    const Index nb = vk.band_end - vk.band_begin;
    out.setZero();
    if (vk.n_sink > 0) out.noalias() += vw.topRows(vk.n_sink).transpose() * probs.head(vk.n_sink);
    if (nb > 0) out.noalias() += vw.middleRows(vk.band_begin, nb).transpose() * probs.segment(vk.n_sink, nb);
    result.output.row(i) = out.transpose().template cast<Scalar>();
  }
  return result;
}

/// The attention probabilities P = softmax(Z + mask), materialised.
/// Masked entries are exactly 0; a row that sees no key is all zeros.
/// Same validation and precision as reference_attention (V is not needed).
/// \returns (n_q x n_k). O(n_q n_k d) time and O(n_q n_k) memory: for analysis
///          and tests, not for long sequences.
template <typename DQ, typename DK, typename Policy = DotProductScore>
RowMatrix<typename DQ::Scalar> reference_attention_probabilities(const Eigen::MatrixBase<DQ>& q,
                                                                 const Eigen::MatrixBase<DK>& k,
                                                                 const AttentionOptions& options = {},
                                                                 const Policy& policy = {}) {
  using Scalar = typename DQ::Scalar;
  using Wide = detail::wider_t<Scalar>;
  static_assert(std::is_same_v<Scalar, typename DK::Scalar>, "Q and K must share one Scalar type");
  const char* where = "reference_attention_probabilities";
  // Checked before the (n_k x 1) view of K stands in for V below.
  detail::require_non_empty(where, "K", k);
  const AttentionProblem pb = make_attention_problem(where, q, k, k.leftCols(1), options);
  policy.check(where, pb, options);
  const RowMatrix<Wide> qw = q.template cast<Wide>();
  const RowMatrix<Wide> kw = k.template cast<Wide>();
  const Wide scale = static_cast<Wide>(pb.scale);

  RowMatrix<Scalar> p = RowMatrix<Scalar>::Zero(pb.n_q, pb.n_k);
  Vector<Wide> logits(pb.n_k), probs(pb.n_k);
  for (Index i = 0; i < pb.n_q; ++i) {
    detail::reference_row(qw, kw, scale, pb.mask, i, policy, logits, probs);
    const detail::VisibleKeys vk = detail::visible_keys(pb.mask, i);
    if (vk.count() == 0) continue;
    const Index nb = vk.band_end - vk.band_begin;
    if (vk.n_sink > 0) p.row(i).head(vk.n_sink) = probs.head(vk.n_sink).transpose().template cast<Scalar>();
    if (nb > 0)
      p.row(i).segment(vk.band_begin, nb) = probs.segment(vk.n_sink, nb).transpose().template cast<Scalar>();
  }
  return p;
}

}  // namespace attnkit
