#pragma once

/// \file attnkit/attention/heads.hpp
/// Multi-head and grouped-query attention over stacked heads.
///
/// Layout: a (heads, n, d) tensor in C order — what NumPy and PyTorch hold —
/// is a row-major (heads * n) x d matrix whose rows [h n, (h + 1) n) are head
/// h. Q stacks q_heads heads of n_q rows, K and V stack kv_heads heads of
/// n_k rows; q_heads must be a multiple of kv_heads, and query head h
/// attends with key/value head
///
///   kv_head(h) = h / (q_heads / kv_heads)
///
/// (grouped-query attention as PyTorch's enable_gqa and Hugging Face's
/// repeat_kv lay it out; kv_heads = 1 is multi-query attention). A batch of B
/// sequences is B * q_heads query heads over B * kv_heads key/value heads:
/// the same rule maps them. Every head uses the same mask and options.
///
/// flash_attention_heads runs all heads in ONE scheduler call: the query
/// blocks of every head and, for decode, the key chunks are spread over the
/// threads together (attention/detail/flash_schedule.hpp), so a decode step
/// of 32 heads keeps every core busy without splitting each head's keys.

#include <type_traits>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/detail/parallel.hpp"

namespace attnkit {

/// Head counts of stacked inputs.
struct HeadLayout {
  /// Query heads stacked in Q (and in the output), over every sequence of the batch.
  Index q_heads = 1;
  /// Key/value heads stacked in K and V; divides q_heads.
  Index kv_heads = 1;
  /// Sequences in the batch (divides both head counts): a per-head policy
  /// (ALiBi's slopes) sees head h as head h mod (q_heads / batch) of
  /// q_heads / batch. The kv-head mapping does not depend on it.
  Index batch = 1;

  /// The key/value head query head h attends with.
  Index kv_head(Index h) const { return h / (q_heads / kv_heads); }
};

/// Multi-head exact attention with the fused kernel, into caller-owned
/// outputs.
/// \param q (q_heads n_q x d), \param k (kv_heads n_k x d), \param v
///        (kv_heads n_k x d_v): stacked heads (see the file comment).
/// \param out (q_heads n_q x d_v), \param lse (q_heads n_q): stacked like q.
/// \throws std::invalid_argument when the head counts are not >= 1 or do not
///         divide (q_heads by kv_heads, the rows of Q, K and V by their head
///         counts), and as flash_attention_into; nothing is written then.
/// O(q_heads n_q n_k (d + d_v)) time; per thread one workspace.
template <typename Compute = void, typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
void flash_attention_heads_into(
    const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
    const HeadLayout& heads,
    Eigen::Ref<RowMatrix<
        detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>>
        out,
    Eigen::Ref<Vector<
        detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>>
        lse,
    const AttentionOptions& options = {}, const FlashConfig& config = {}, const Policy& policy = {}) {
  using C = detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>;
  detail::flash_call<C>("flash_attention_heads", q, k, v, heads.q_heads, heads.kv_heads, nullptr, out.data(),
                        out.rows(), out.cols(), out.outerStride(), lse.data(), lse.size(), options, config,
                        policy, heads.batch);
}

/// As flash_attention_heads_into over a key subset of every key/value head
/// (see KeySet in attnkit/attention/flash.hpp): the stacked partial results.
template <typename Compute = void, typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
void flash_attention_heads_partial_into(
    const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
    const HeadLayout& heads, const KeySet& keys,
    Eigen::Ref<RowMatrix<
        detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>>
        out,
    Eigen::Ref<Vector<
        detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>>
        lse,
    const AttentionOptions& options = {}, const FlashConfig& config = {}, const Policy& policy = {}) {
  using C = detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>;
  detail::flash_call<C>("flash_attention_heads_partial", q, k, v, heads.q_heads, heads.kv_heads, &keys,
                        out.data(), out.rows(), out.cols(), out.outerStride(), lse.data(), lse.size(),
                        options, config, policy, heads.batch);
}

/// Multi-head exact attention with the fused kernel.
/// \returns output (q_heads n_q x d_v) and lse (q_heads n_q), stacked.
/// \throws std::invalid_argument as flash_attention_heads_into.
///
/// \code
///   // 32 query heads over 8 key/value heads, 4096 tokens each, d = 128:
///   // q (32 * 4096 x 128), k and v (8 * 4096 x 128).
///   auto r = attnkit::flash_attention_heads(q, k, v, {32, 8}, {attnkit::Mask::causal()});
/// \endcode
template <typename Compute = void, typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
AttentionResult<
    detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>
flash_attention_heads(const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
                      const Eigen::MatrixBase<DV>& v, const HeadLayout& heads,
                      const AttentionOptions& options = {}, const FlashConfig& config = {},
                      const Policy& policy = {}) {
  using C = detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>;
  AttentionResult<C> r{RowMatrix<C>(q.rows(), v.cols()), Vector<C>(q.rows())};
  flash_attention_heads_into<C>(q, k, v, heads, r.output, r.lse, options, config, policy);
  return r;
}

namespace detail {

/// Validates stacked heads; returns (n_q, n_k).
template <typename DQ, typename DK, typename DV>
std::pair<Index, Index> check_heads(const char* where, const Eigen::MatrixBase<DQ>& q,
                                    const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
                                    const HeadLayout& heads) {
  if (heads.q_heads < 1 || heads.kv_heads < 1 || heads.q_heads % heads.kv_heads != 0)
    fail(where, ": q_heads = ", heads.q_heads, " and kv_heads = ", heads.kv_heads,
         " must be >= 1 with q_heads a multiple of kv_heads");
  if (heads.batch < 1 || heads.q_heads % heads.batch != 0 || heads.kv_heads % heads.batch != 0)
    fail(where, ": batch = ", heads.batch, " must be >= 1 and divide q_heads = ", heads.q_heads,
         " and kv_heads = ", heads.kv_heads);
  if (q.rows() % heads.q_heads != 0)
    fail(where, ": Q ", shape(q), " does not split into q_heads = ", heads.q_heads, " heads of equal rows");
  if (k.rows() % heads.kv_heads != 0 || v.rows() != k.rows())
    fail(where, ": K ", shape(k), " and V ", shape(v), " must both split into kv_heads = ", heads.kv_heads,
         " heads of equal rows");
  return {q.rows() / heads.q_heads, k.rows() / heads.kv_heads};
}

}  // namespace detail

/// Multi-head reference attention (the oracle), head by head in the wider
/// type; heads run in parallel when OpenMP is on (each head is computed
/// exactly as reference_attention computes it, so the result does not depend
/// on the thread count).
/// \returns output (q_heads n_q x d_v) and lse (q_heads n_q), stacked.
/// \throws std::invalid_argument as flash_attention_heads_into (head counts)
///         and reference_attention.
template <typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
AttentionResult<typename DQ::Scalar> reference_attention_heads(const Eigen::MatrixBase<DQ>& q,
                                                               const Eigen::MatrixBase<DK>& k,
                                                               const Eigen::MatrixBase<DV>& v,
                                                               const HeadLayout& heads,
                                                               const AttentionOptions& options = {},
                                                               const Policy& policy = {}, int threads = 0) {
  using Scalar = typename DQ::Scalar;
  // Not a structured binding: the OpenMP region below uses both, and clang
  // cannot capture a structured binding in an OpenMP region.
  const auto dims = detail::check_heads("reference_attention_heads", q, k, v, heads);
  const Index n_q = dims.first, n_k = dims.second;
  // Validate once on head 0 (every head has the same shapes and options), so
  // no exception escapes the parallel region.
  const AttentionProblem pb = make_attention_problem("reference_attention_heads", q.topRows(n_q),
                                                     k.topRows(n_k), v.topRows(n_k), options);
  const Index per_batch = heads.q_heads / heads.batch;
  for (Index h = 0; h < heads.q_heads; ++h)
    detail::policy_for_head(policy, h % per_batch, per_batch).check("reference_attention_heads", pb, options);
  AttentionResult<Scalar> r{RowMatrix<Scalar>(q.rows(), v.cols()), Vector<Scalar>(q.rows())};
  const Eigen::Ref<const RowMatrix<Scalar>> qr(q), kr(k), vr(v);
  const int team = static_cast<int>(std::min<Index>(detail::resolve_threads(threads), heads.q_heads));
  static_cast<void>(team);
  ATTNKIT_PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(team))
  for (Index h = 0; h < heads.q_heads; ++h) {
    const Index g = heads.kv_head(h);
    const AttentionResult<Scalar> one = reference_attention(
        qr.middleRows(h * n_q, n_q), kr.middleRows(g * n_k, n_k), vr.middleRows(g * n_k, n_k), options,
        detail::policy_for_head(policy, h % per_batch, per_batch));
    r.output.middleRows(h * n_q, n_q) = one.output;
    r.lse.segment(h * n_q, n_q) = one.lse;
  }
  return r;
}

}  // namespace attnkit
