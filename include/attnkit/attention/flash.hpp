#pragma once

/// \file attnkit/attention/flash.hpp
/// Fast exact attention: a fused, tiled, online-softmax kernel (the
/// FlashAttention recurrence) for prefill and decode, on every core.
///
/// Computes exactly what reference_attention computes (see
/// attnkit/attention/problem.hpp: O = softmax(scale Q K^T + mask) V and the
/// per-row lse, every mask and offset, the same NaN and -inf conventions) in
/// the input's own precision, without ever forming the n_q x n_k score
/// matrix: per thread it holds one block of queries, one tile of scores and
/// one output accumulator (O((d + d_v + block_k) block_q) memory).
///
/// Work split (deterministic for a given shape, thread count and config):
///  - prefill: blocks of `block_q` queries are distributed over the threads;
///    causal masks skip every tile above the diagonal and mask only the tiles
///    that cross it;
///  - few query blocks against many keys (decode): the keys are split into
///    contiguous chunks, each thread computes the partial (max, sum,
///    accumulator) of its chunk, and the partials are merged exactly
///    (attnkit/attention/merge.hpp), as flash-decoding does.
/// Results do not depend on the thread count as long as the keys are not
/// split (every prefill with at least two query blocks per thread): then they
/// are bit-identical. When the keys are split (decode, or fewer query blocks
/// than twice the threads), the chunks' partials are merged exactly, but the
/// split changes the order of the blocked sums: results then differ within
/// the rounding bound below, not bit for bit.
///
/// Accuracy (float, unit roundoff u = 2^-24): each logit carries the error of
/// a d-term dot product (about sqrt(d) u |q||k| typically, d u |q||k| at worst),
/// each exp2 at most 1 ulp, and the n_k-term sums of P and P V their own
/// rounding, so |O - O_ref| is of order (|logit error| + sqrt(n_k) u) max|v|:
/// measured at n = 4096, d = 64: 2e-8 (iid) to 5e-7 (LLM-like) times max|v|,
/// within bounds of order 1e-5 max|v| derived in tests/attention/flash_test.cpp
/// (docs/flash.md, "Accuracy").
///
/// Threads: OpenMP, if the including translation unit is compiled with it
/// (link attnkit::openmp, see the README); otherwise single-threaded.
/// The function is reentrant: concurrent calls are safe.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "attnkit/attention/detail/flash_kernel.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/problem.hpp"
#include "attnkit/detail/parallel.hpp"

namespace attnkit {

/// Tuning knobs of flash_attention; the defaults are what the benchmarks
/// chose on AVX-512 and AVX2 machines (docs/benchmarks.md).
struct FlashConfig {
  /// Threads to use; 0 = OpenMP's default (all cores). Ignored without OpenMP.
  int threads = 0;
  /// Queries per block; 0 = automatic (64 floats with AVX-512). Capped at n_q
  /// and rounded up to the SIMD width.
  Index block_q = 0;
  /// Keys per tile; 0 = automatic (128). Capped at n_k and rounded up to the
  /// SIMD width.
  Index block_k = 0;
};

namespace detail {

template <typename Scalar>
Index flash_default_block_q() {
  return 4 * FlashPacket<Scalar>::size * (FlashPacket<Scalar>::registers >= 32 ? 1 : 2);
}

template <typename Scalar>
Index flash_default_block_k() {
  return 128;
}

/// Runs the kernel over all of `in` with `threads` threads, writing out
/// (n_q x d_v, row stride ldo) and lse (n_q).
template <typename Scalar>
void flash_run(const FlashInputs<Scalar>& in, const FlashConfig& config, Scalar* out, Index ldo,
               Scalar* lse) {
  constexpr int P = FlashPacket<Scalar>::size;
  // Capped at the problem size first (no oversized workspace, no overflow),
  // then whole packets (the decode kernel pads score rows to them).
  const auto round_up = [](Index x) { return (x + P - 1) / P * P; };
  const Index requested_q = config.block_q > 0 ? config.block_q : flash_default_block_q<Scalar>();
  const Index block_q = round_up(std::min(requested_q, in.n_q));
  const Index requested_k = config.block_k > 0 ? config.block_k : flash_default_block_k<Scalar>();
  const Index block_k = round_up(std::min(requested_k, in.n_k));
  const int threads = resolve_threads(config.threads);
  const Index blocks = (in.n_q + block_q - 1) / block_q;

  // Split the keys when there are too few query blocks to keep every thread
  // busy (decode, or a short prefill against a long cache): chunks of at
  // least 4 tiles.
  Index splits = 1;
  if (threads > 1 && blocks < 2 * threads) {
    const Index wanted = (2 * threads + blocks - 1) / blocks;
    splits = std::max<Index>(1, std::min(wanted, in.n_k / (4 * block_k)));
  }
  const Index items = blocks * splits;
  const int team = static_cast<int>(std::min<Index>(threads, items));

  // Partial results of key chunks 1.. (chunk 0 writes straight into out).
  const Index n_q = in.n_q, d_v = in.d_v;
  std::vector<Scalar, Eigen::aligned_allocator<Scalar>> part_o(
      static_cast<std::size_t>((splits - 1) * n_q * d_v));
  std::vector<Scalar> part_lse(static_cast<std::size_t>((splits - 1) * n_q));
  std::vector<FlashWorkspace<Scalar>> workspaces(static_cast<std::size_t>(team));
  for (auto& ws : workspaces)
    ws.reserve(in.d, d_v, block_q, block_k);

  ATTNKIT_PRAGMA(omp parallel num_threads(team)) {
#if defined(_OPENMP)
    FlashWorkspace<Scalar>& ws = workspaces[static_cast<std::size_t>(omp_get_thread_num())];
#else
    FlashWorkspace<Scalar>& ws = workspaces[0];
#endif
    // Most expensive items first (causal: the last query blocks).
    ATTNKIT_PRAGMA(omp for schedule(dynamic, 1))
    for (Index item = 0; item < items; ++item) {
      const Index b = blocks - 1 - item / splits, s = item % splits;
      const Index i0 = b * block_q, i1 = std::min(n_q, i0 + block_q);
      const Index ka = in.n_k * s / splits, kb = in.n_k * (s + 1) / splits;
      Scalar* po = s == 0 ? out + i0 * ldo : part_o.data() + ((s - 1) * n_q + i0) * d_v;
      Scalar* pl = s == 0 ? lse + i0 : part_lse.data() + (s - 1) * n_q + i0;
      const Index ld = s == 0 ? ldo : d_v;
      if (i1 - i0 <= decode_max_rows<Scalar>())
        decode_block(in, i0, i1, ka, kb, block_k, ws, po, ld, pl);
      else
        flash_block(in, i0, i1, ka, kb, block_k, ws, po, ld, pl);
    }
  }
  // Merge the chunks in key order (deterministic).
  for (Index s = 1; s < splits; ++s)
    merge_rows(out, ldo, lse, part_o.data() + (s - 1) * n_q * d_v, d_v, part_lse.data() + (s - 1) * n_q, n_q,
               d_v);
}

template <typename Scalar>
FlashInputs<Scalar> flash_inputs(const Eigen::Ref<const RowMatrix<Scalar>>& q,
                                 const Eigen::Ref<const RowMatrix<Scalar>>& k,
                                 const Eigen::Ref<const RowMatrix<Scalar>>& v, const AttentionProblem& pb) {
  constexpr double log2e = 1.442695040888963407359924681001892137;
  return FlashInputs<Scalar>{q.data(),
                             q.outerStride(),
                             k.data(),
                             k.outerStride(),
                             v.data(),
                             v.outerStride(),
                             pb.n_q,
                             pb.n_k,
                             pb.d,
                             pb.d_v,
                             static_cast<Scalar>(pb.scale * log2e),
                             pb.mask};
}

}  // namespace detail

/// Exact attention with the fused kernel, written into caller-owned outputs.
/// \param q (n_q x d), \param k (n_k x d), \param v (n_k x d_v): any Eigen
///        expression; row-major matrices (or row blocks of them) are used in
///        place, anything else is copied once into row-major form.
/// \param out (n_q x d_v) and \param lse (n_q): written, not resized.
/// \throws std::invalid_argument for bad shapes, scale or mask offset (see
///         make_attention_problem) or wrongly sized outputs; nothing is
///         written then.
template <typename DQ, typename DK, typename DV>
void flash_attention_into(const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
                          const Eigen::MatrixBase<DV>& v, Eigen::Ref<RowMatrix<typename DQ::Scalar>> out,
                          Eigen::Ref<Vector<typename DQ::Scalar>> lse, const AttentionOptions& options = {},
                          const FlashConfig& config = {}) {
  using Scalar = typename DQ::Scalar;
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "flash_attention supports float and double");
  const AttentionProblem pb = make_attention_problem("flash_attention", q, k, v, options);
  if (out.rows() != pb.n_q || out.cols() != pb.d_v)
    detail::fail("flash_attention: out ", detail::shape(out), " must be (n_q x d_v) = (", pb.n_q, " x ",
                 pb.d_v, ")");
  if (lse.size() != pb.n_q)
    detail::fail("flash_attention: lse has ", lse.size(), " entries, needs n_q = ", pb.n_q);
  if (config.threads < 0 || config.block_q < 0 || config.block_k < 0)
    detail::fail("flash_attention: config threads = ", config.threads, ", block_q = ", config.block_q,
                 ", block_k = ", config.block_k, " must be >= 0 (0 = automatic)");
  const Eigen::Ref<const RowMatrix<Scalar>> qr(q), kr(k), vr(v);
  detail::flash_run(detail::flash_inputs<Scalar>(qr, kr, vr, pb), config, out.data(), out.outerStride(),
                    lse.data());
}

/// Exact attention with the fused kernel.
/// \returns output (n_q x d_v) and lse (n_q), equal to reference_attention's
///          within the accuracy stated in the file comment.
/// \throws std::invalid_argument as flash_attention_into.
///
/// \code
///   auto r = attnkit::flash_attention(q, k, v, {attnkit::Mask::causal()});
///   auto one_thread = attnkit::flash_attention(q, k, v, {}, attnkit::FlashConfig{1});
/// \endcode
template <typename DQ, typename DK, typename DV>
AttentionResult<typename DQ::Scalar> flash_attention(const Eigen::MatrixBase<DQ>& q,
                                                     const Eigen::MatrixBase<DK>& k,
                                                     const Eigen::MatrixBase<DV>& v,
                                                     const AttentionOptions& options = {},
                                                     const FlashConfig& config = {}) {
  using Scalar = typename DQ::Scalar;
  AttentionResult<Scalar> r{RowMatrix<Scalar>(q.rows(), v.cols()), Vector<Scalar>(q.rows())};
  flash_attention_into(q, k, v, r.output, r.lse, options, config);
  return r;
}

}  // namespace attnkit
