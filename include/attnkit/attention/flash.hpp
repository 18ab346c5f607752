#pragma once

/// \file attnkit/attention/flash.hpp
/// Fast exact attention: a fused, tiled, online-softmax kernel (the
/// FlashAttention recurrence) for prefill and decode, on every core, and its
/// partial results.
///
/// Computes exactly what reference_attention computes (see
/// attnkit/attention/problem.hpp: O = softmax(Z + mask) V and the per-row
/// lse, with Z the score policy's logits — scale Q K^T by default — every
/// mask, the same NaN and -inf conventions) without ever forming the
/// n_q x n_k score matrix: per thread it holds one block of queries, one tile
/// of scores and one output accumulator (O((d + d_v + block_k) block_q)
/// memory); a score policy with per-key terms adds one table of them per
/// head for the call (key_terms values per key) when several query blocks
/// read them.
///
/// Types: Q, K and V may each be stored in its own element type; the kernel
/// computes in `Compute` (a template argument, default: double if any input
/// is double, float otherwise) and returns results in it.
///
/// Partial results: flash_attention_partial attends to a subset of the keys
/// (ranges of positions, or keys that are part of a longer sequence) and
/// returns (O, lse) over that subset, which merge_attention
/// (attnkit/attention/merge.hpp) combines exactly with the results over the
/// other keys. flash_attention is the partial over all keys.
///
/// Work split (attention/detail/flash_schedule.hpp): query blocks are
/// distributed over the threads; causal and banded masks skip every tile no
/// row of a block sees and mask only the tiles that cross a row's boundary;
/// few query blocks against many keys (decode) also split the keys into
/// chunks whose partials are merged exactly, as flash-decoding does.
/// Results do not depend on the thread count as long as the keys are not
/// split (every prefill with at least two query blocks per thread): then they
/// are bit-identical. When the keys are split the chunks' partials are merged
/// exactly, but the split changes the order of the blocked sums: results then
/// differ within the rounding bound below, not bit for bit.
///
/// Accuracy (float, unit roundoff u = 2^-24, default policy): each logit
/// carries the error of a d-term dot product (about sqrt(d) u |q||k|
/// typically, d u |q||k| at worst), each exp2 at most 1 ulp, and the n_k-term
/// sums of P and P V their own rounding, so |O - O_ref| is of order
/// (|logit error| + sqrt(n_k) u) max|v|: measured at n = 4096, d = 64: 2e-8
/// (iid) to 5e-7 (LLM-like) times max|v|, within bounds of order 1e-5 max|v|
/// derived in tests/attention/flash_bounds.hpp (docs/flash.md, "Accuracy").
///
/// Threads: OpenMP, if the including translation unit is compiled with it
/// (link attnkit::openmp, see the README); otherwise single-threaded. The
/// functions are reentrant: concurrent calls are safe.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit/attention/detail/flash_schedule.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/problem.hpp"
#include "attnkit/detail/parallel.hpp"
#include "attnkit/similarity/score.hpp"

namespace attnkit {

/// Tuning knobs of the fused kernel; the defaults are what the benchmarks
/// chose on AVX-512 and AVX2 machines (docs/benchmarks.md).
struct FlashConfig {
  /// Threads to use; 0 = OpenMP's default (all cores). Ignored without OpenMP.
  int threads = 0;
  /// Queries per block; 0 = automatic (64 floats with AVX-512). Capped at n_q
  /// and at flash_max_block_q, rounded up to the SIMD width.
  Index block_q = 0;
  /// Keys per tile; 0 = automatic (128). Capped at n_k and at
  /// flash_max_block_k, rounded up to the SIMD width.
  Index block_k = 0;
};

/// Working-set limits of FlashConfig: a thread's score tile holds at most
/// flash_max_block_q x flash_max_block_k values (4 MiB in float), its query
/// block and accumulator at most flash_max_block_q x (d + d_v).
inline constexpr Index flash_max_block_q = 512;
inline constexpr Index flash_max_block_k = 2048;
/// Largest FlashConfig::threads accepted.
inline constexpr int flash_max_threads = 4096;

/// Which keys a partial call attends to.
struct KeySet {
  /// Position of K's row 0 in the key sequence the mask is defined on.
  Index first_position = 0;
  /// Length of that sequence (the n_k the mask is resolved with);
  /// std::nullopt = first_position + K.rows().
  std::optional<Index> sequence_length{};
  /// Sorted, disjoint ranges of positions to attend to, each inside
  /// [first_position, first_position + K.rows()); empty = every row of K.
  std::vector<KeyRange> ranges{};
};

namespace detail {

template <typename Compute>
Index flash_default_block_q() {
  return 4 * FlashPacket<Compute>::size * (FlashPacket<Compute>::registers >= 32 ? 1 : 2);
}

template <typename Compute>
Index flash_default_block_k() {
  return 128;
}

/// The compute type for stored types SQ, SK, SV when none is requested.
template <typename Requested, typename SQ, typename SK, typename SV>
using flash_compute_t = std::conditional_t<
    !std::is_void_v<Requested>, Requested,
    std::conditional_t<std::is_same_v<SQ, double> || std::is_same_v<SK, double> || std::is_same_v<SV, double>,
                       double, float>>;

/// Validated tile sizes and thread count of a call.
struct FlashTiling {
  Index block_q, block_k;
  int threads;
};

/// Validates `config` (naming `where`) and resolves it for n_q queries over
/// n_k keys: requested or default tiles, capped at the problem size and the
/// working-set limits, rounded up to whole packets (the decode kernel and the
/// score rows need that); the thread count resolved against OpenMP.
template <typename Compute>
FlashTiling flash_tiling(const char* where, const FlashConfig& config, Index n_q, Index n_k);

/// [first, last] byte addresses a row-major view touches.
template <typename T>
std::pair<std::uintptr_t, std::uintptr_t> byte_span(const T* data, Index rows, Index cols, Index stride) {
  const auto first = reinterpret_cast<std::uintptr_t>(data);
  const auto count = static_cast<std::uintptr_t>((rows - 1) * stride + cols);
  return {first, first + count * sizeof(T) - 1};
}

inline bool spans_overlap(std::pair<std::uintptr_t, std::uintptr_t> a,
                          std::pair<std::uintptr_t, std::uintptr_t> b) {
  return a.first <= b.second && b.first <= a.second;
}

/// The key ranges of a call, validated: the KeySet's, or all of K.
inline std::vector<KeyRange> call_ranges(const char* where, const KeySet* keys, Index n_k) {
  const Index first = keys ? keys->first_position : 0;
  if (!keys || keys->ranges.empty()) return {KeyRange{first, first + n_k}};
  Index prev_end = first;
  for (std::size_t r = 0; r < keys->ranges.size(); ++r) {
    const KeyRange& kr = keys->ranges[r];
    if (kr.begin < first || kr.end > first + n_k || kr.begin > kr.end)
      fail(where, ": key range ", r, " [", kr.begin, ", ", kr.end, ") is not inside the keys' positions [",
           first, ", ", first + n_k, ")");
    if (kr.begin < prev_end)
      fail(where, ": key range ", r, " [", kr.begin, ", ", kr.end,
           ") overlaps or precedes the range before it (ranges must be sorted and disjoint)");
    prev_end = kr.end;
  }
  return keys->ranges;
}

/// Everything behind the public entry points: validates, binds every head
/// and runs the scheduler. q (q_heads n_q x d), k (kv_heads n_k x d), v
/// (kv_heads n_k x d_v); out (q_heads n_q x d_v) with row stride ldo, lse
/// (q_heads n_q). Query head h uses key/value head h / (q_heads / kv_heads).
template <typename Compute, typename DQ, typename DK, typename DV, typename Policy>
void flash_call(const char* where, const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
                const Eigen::MatrixBase<DV>& v, Index q_heads, Index kv_heads, const KeySet* keys,
                Compute* out, Index out_rows, Index out_cols, Index ldo, Compute* lse, Index lse_size,
                const AttentionOptions& options, const FlashConfig& config, const Policy& policy,
                Index batch = 1) {
  using SQ = typename DQ::Scalar;
  using SK = typename DK::Scalar;
  using SV = typename DV::Scalar;
  static_assert(std::is_same_v<Compute, float> || std::is_same_v<Compute, double>,
                "the fused kernel computes in float or double");
  if (q_heads < 1 || kv_heads < 1 || q_heads % kv_heads != 0)
    fail(where, ": q_heads = ", q_heads, " and kv_heads = ", kv_heads,
         " must be >= 1 with q_heads a multiple of kv_heads");
  if (batch < 1 || q_heads % batch != 0 || kv_heads % batch != 0)
    fail(where, ": batch = ", batch, " must be >= 1 and divide q_heads = ", q_heads,
         " and kv_heads = ", kv_heads);
  if (q.rows() % q_heads != 0)
    fail(where, ": Q ", shape(q), " does not split into q_heads = ", q_heads, " heads of equal rows");
  if (k.rows() % kv_heads != 0 || v.rows() != k.rows())
    fail(where, ": K ", shape(k), " and V ", shape(v), " must both split into kv_heads = ", kv_heads,
         " heads of equal rows");
  const Index n_q = q.rows() / q_heads, n_k = k.rows() / kv_heads;
  if (keys && keys->first_position < 0)
    fail(where, ": first_position = ", keys->first_position, " must be >= 0");
  const Index first = keys ? keys->first_position : 0;
  const Index seq = keys && keys->sequence_length ? *keys->sequence_length : first + n_k;
  if (seq < first + n_k)
    fail(where, ": sequence_length = ", seq, " is shorter than the keys' last position + 1 (", first, " + ",
         n_k, ")");
  const AttentionProblem pb =
      make_attention_problem(where, q.topRows(n_q), k.topRows(n_k), v.topRows(n_k), options, seq);
  const std::vector<KeyRange> ranges = call_ranges(where, keys, n_k);
  if (out_rows != q_heads * n_q || out_cols != pb.d_v)
    fail(where, ": out (", out_rows, " x ", out_cols, ") must be (", q_heads * n_q, " x ", pb.d_v, ")");
  if (lse_size != q_heads * n_q) fail(where, ": lse has ", lse_size, " entries, needs ", q_heads * n_q);
  const FlashTiling tiling = flash_tiling<Compute>(where, config, n_q, n_k);
  policy.check(where, pb, options);

  const Eigen::Ref<const RowMatrix<SQ>> qr(q);
  const Eigen::Ref<const RowMatrix<SK>> kr(k);
  const Eigen::Ref<const RowMatrix<SV>> vr(v);
  // The output must not share memory with an input (blocks read inputs while
  // others write): refused, nothing written.
  const auto out_span = byte_span(out, out_rows, out_cols, ldo), lse_span = byte_span(lse, lse_size, 1, 1);
  const auto q_span = byte_span(qr.data(), qr.rows(), qr.cols(), qr.outerStride());
  const auto k_span = byte_span(kr.data(), kr.rows(), kr.cols(), kr.outerStride());
  const auto v_span = byte_span(vr.data(), vr.rows(), vr.cols(), vr.outerStride());
  for (const auto& [name, span] : {std::pair{"out", out_span}, std::pair{"lse", lse_span}}) {
    if (spans_overlap(span, q_span))
      fail(where, ": ", name, " shares memory with Q (outputs must not alias inputs)");
    if (spans_overlap(span, k_span))
      fail(where, ": ", name, " shares memory with K (outputs must not alias inputs)");
    if (spans_overlap(span, v_span))
      fail(where, ": ", name, " shares memory with V (outputs must not alias inputs)");
  }
  if (spans_overlap(out_span, lse_span)) fail(where, ": out and lse share memory");

  using In = FlashInputs<Compute, SQ, SK, SV, Policy>;
  std::vector<FlashHead<In>> heads;
  heads.reserve(static_cast<std::size_t>(q_heads));
  const Index group = q_heads / kv_heads;
  for (Index h = 0; h < q_heads; ++h) {
    const Index g = h / group;
    const Policy ph = policy_for_head(policy, h % (q_heads / batch), q_heads / batch);
    heads.push_back(FlashHead<In>{
        In{qr.data() + h * n_q * qr.outerStride(), qr.outerStride(), kr.data() + g * n_k * kr.outerStride(),
           kr.outerStride(), vr.data() + g * n_k * vr.outerStride(), vr.outerStride(), n_q, pb.d, pb.d_v,
           first, pb.mask, ph.template kernel<Compute>(pb)},
        out + h * n_q * ldo, ldo, lse + h * n_q});
  }
  flash_run(std::move(heads), ranges, tiling.block_q, tiling.block_k, tiling.threads);
}

template <typename Compute>
FlashTiling flash_tiling(const char* where, const FlashConfig& config, Index n_q, Index n_k) {
  if (config.threads < 0 || config.block_q < 0 || config.block_k < 0 || config.threads > flash_max_threads)
    fail(where, ": config threads = ", config.threads, ", block_q = ", config.block_q,
         ", block_k = ", config.block_k, " must be >= 0 (0 = automatic), threads <= ", flash_max_threads);
  constexpr int P = FlashPacket<Compute>::size;
  const auto round_up = [](Index x) { return (x + P - 1) / P * P; };
  const Index requested_q = config.block_q > 0 ? config.block_q : flash_default_block_q<Compute>();
  const Index requested_k = config.block_k > 0 ? config.block_k : flash_default_block_k<Compute>();
  return {round_up(std::min({requested_q, flash_max_block_q, n_q})),
          round_up(std::min({requested_k, flash_max_block_k, n_k})), resolve_threads(config.threads)};
}

}  // namespace detail

/// Attention of q over the keys of `keys` (see KeySet) only: the partial
/// result (O, lse) over that subset, written into caller-owned outputs. Rows
/// that see no key of the subset get a zero row and lse = -inf, so the
/// result merges exactly with partials over the other keys
/// (merge_attention_into). The mask is resolved on the whole key sequence
/// (keys.sequence_length keys); query row i is at the mask's position
/// offset + i of that sequence, key row r of K at keys.first_position + r.
/// \tparam Compute float or double (default: see the file comment).
/// \param q (n_q x d), \param k (n_k x d), \param v (n_k x d_v): any Eigen
///        expression; row-major matrices (or row blocks of them) are used in
///        place, anything else is copied once into row-major form.
/// \param out (n_q x d_v) and \param lse (n_q): written, not resized; they
///        must not share memory with q, k or v.
/// \param policy the score policy (attnkit/similarity/score.hpp).
/// \throws std::invalid_argument for bad shapes, scale, mask, key set
///         (a range outside the keys, unsorted or overlapping ranges, a
///         sequence shorter than the keys), config (negative values,
///         threads > flash_max_threads), policy parameters, outputs of the
///         wrong size or aliasing an input; nothing is written then.
/// O(n_q |keys| (d + d_v)) time.
template <typename Compute = void, typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
void flash_attention_partial_into(
    const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
    const KeySet& keys,
    Eigen::Ref<RowMatrix<
        detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>>
        out,
    Eigen::Ref<Vector<
        detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>>
        lse,
    const AttentionOptions& options = {}, const FlashConfig& config = {}, const Policy& policy = {}) {
  using C = detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>;
  detail::flash_call<C>("flash_attention_partial", q, k, v, 1, 1, &keys, out.data(), out.rows(), out.cols(),
                        out.outerStride(), lse.data(), lse.size(), options, config, policy);
}

/// As flash_attention_partial_into, returning the result.
template <typename Compute = void, typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
AttentionResult<
    detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>
flash_attention_partial(const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
                        const Eigen::MatrixBase<DV>& v, const KeySet& keys,
                        const AttentionOptions& options = {}, const FlashConfig& config = {},
                        const Policy& policy = {}) {
  using C = detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>;
  AttentionResult<C> r{RowMatrix<C>(q.rows(), v.cols()), Vector<C>(q.rows())};
  flash_attention_partial_into<C>(q, k, v, keys, r.output, r.lse, options, config, policy);
  return r;
}

/// Exact attention with the fused kernel, written into caller-owned outputs:
/// the partial over every key.
/// \param out (n_q x d_v) and \param lse (n_q): written, not resized; they
///        must not share memory with q, k or v.
/// \throws std::invalid_argument as flash_attention_partial_into.
template <typename Compute = void, typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
void flash_attention_into(
    const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
    Eigen::Ref<RowMatrix<
        detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>>
        out,
    Eigen::Ref<Vector<
        detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>>
        lse,
    const AttentionOptions& options = {}, const FlashConfig& config = {}, const Policy& policy = {}) {
  using C = detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>;
  detail::flash_call<C>("flash_attention", q, k, v, 1, 1, nullptr, out.data(), out.rows(), out.cols(),
                        out.outerStride(), lse.data(), lse.size(), options, config, policy);
}

/// Exact attention with the fused kernel.
/// \returns output (n_q x d_v) and lse (n_q), equal to reference_attention's
///          within the accuracy stated in the file comment.
/// \throws std::invalid_argument as flash_attention_partial_into.
///
/// \code
///   auto r = attnkit::flash_attention(q, k, v, {attnkit::Mask::causal()});
///   auto one_thread = attnkit::flash_attention(q, k, v, {}, attnkit::FlashConfig{1});
///   auto windowed = attnkit::flash_attention(q, k, v,
///   {attnkit::Mask::causal().with_window(4096).with_sinks(4)});
/// \endcode
template <typename Compute = void, typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
AttentionResult<
    detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>
flash_attention(const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
                const Eigen::MatrixBase<DV>& v, const AttentionOptions& options = {},
                const FlashConfig& config = {}, const Policy& policy = {}) {
  using C = detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>;
  AttentionResult<C> r{RowMatrix<C>(q.rows(), v.cols()), Vector<C>(q.rows())};
  flash_attention_into<C>(q, k, v, r.output, r.lse, options, config, policy);
  return r;
}

}  // namespace attnkit
