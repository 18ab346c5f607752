#pragma once

/// \file attnkit/sparse/topk.hpp
/// Top-k attention: each query attends only to the k visible keys with the
/// highest logits,
///
///   O_i = sum_{j in T_i} softmax_{T_i}(z_i)_j v_j,   T_i = the k largest z_ij over
///                                                    the keys row i sees,
///
/// with lse_i the log-sum-exp over T_i (so the result is a partial result
/// over T_i: merge_attention combines it exactly with attention over keys
/// outside T_i). The logits come from a score policy (default: scale q . k),
/// the masks are attnkit's (attnkit/core/mask.hpp). A row that sees at most k
/// keys attends to all of them, exactly as flash_attention does.
///
/// Ties: among keys with equal logits the earlier positions are kept (the
/// selection visits keys in increasing position and replaces a candidate only
/// by a strictly larger logit). -inf logits are never selected (a row whose
/// visible logits are all -inf sees no key); a NaN logit makes its row NaN, as
/// in every attnkit kernel.
///
/// Algorithm, per block of queries, in the fused kernel's tiles (no n_q x n_k
/// buffer, no sort): pass 1 computes each tile of scores with the kernel's
/// micro-kernel (and the policy's transform and the mask), takes each query's
/// tile maximum, and only for queries whose maximum beats their current k-th
/// best scans the tile and updates a k-entry min-heap of (logit, key); after
/// the first tiles this is rare, so pass 1 costs about the Q K^T half of
/// flash_attention. Pass 2 is a softmax over the k kept logits (the ones
/// pass 1 computed) and a k-term sum of value rows. Time O(n_q n_k d +
/// n_q k (d_v + log k log(n_k / k))) expected for keys in random order,
/// memory O(block_q k) per thread.
///
/// Threads: query blocks in parallel (OpenMP, as flash_attention). Results do
/// not depend on the thread count. A call with a single query (decode) runs
/// on one thread in the same tiles, its SIMD lanes mostly idle: top-k decode
/// is not optimised. Accuracy: the selected set is the exact top k up to the
/// rounding of the logits (keys whose logits differ by less than the logit
/// error may be exchanged); over that set the output has flash_attention's
/// accuracy.

#include <algorithm>
#include <cstddef>
#include <limits>
#include <utility>
#include <vector>

#include "attnkit/attention/detail/flash_decode.hpp"
#include "attnkit/attention/detail/flash_prefill.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/detail/parallel.hpp"

namespace attnkit {

/// Options of topk_attention.
struct TopkOptions {
  /// k >= 1: the number of keys each query keeps.
  Index k = 64;
};

namespace detail {

/// One query's k best (logit, key) candidates: a binary min-heap on the
/// logit, ties ordered so that the LATER key is the smaller (it is evicted
/// first, keeping the earlier one).
template <typename C>
struct TopkHeap {
  C* score;
  Index* key;
  Index size = 0, capacity = 0;
  bool nan = false;

  static bool less(C a, Index ka, C b, Index kb) { return a < b || (a == b && ka > kb); }
  C threshold() const { return size < capacity ? -std::numeric_limits<C>::infinity() : score[0]; }

  /// Offers key j with logit s (s > threshold() is the caller's filter).
  void offer(C s, Index j) {
    if (s != s) {
      nan = true;
      return;
    }
    if (!(s > threshold())) return;
    if (size < capacity) {
      Index i = size++;
      score[i] = s;
      key[i] = j;
      while (i > 0) {  // sift up
        const Index p = (i - 1) / 2;
        if (!less(score[i], key[i], score[p], key[p])) break;
        std::swap(score[i], score[p]);
        std::swap(key[i], key[p]);
        i = p;
      }
      return;
    }
    score[0] = s;
    key[0] = j;
    Index i = 0;
    for (;;) {  // sift down
      const Index l = 2 * i + 1, r = l + 1;
      Index m = i;
      if (l < size && less(score[l], key[l], score[m], key[m])) m = l;
      if (r < size && less(score[r], key[r], score[m], key[m])) m = r;
      if (m == i) break;
      std::swap(score[i], score[m]);
      std::swap(key[i], key[m]);
      i = m;
    }
  }
};

/// Per-thread buffers of the top-k driver.
template <typename C>
struct TopkWorkspace {
  FlashWorkspace<C> flash;
  std::vector<C> heap_score;
  std::vector<Index> heap_key;
  std::vector<C> probs, orow;
  std::vector<TopkHeap<C>> heaps;
  void reserve(Index d, Index d_v, Index block_q, Index block_k, Index k, int key_terms, int query_terms,
               bool stage_keys, bool pair_queries) {
    flash.reserve(d, d_v, block_q, block_k, key_terms, query_terms, stage_keys, false, pair_queries);
    const auto bq = static_cast<std::size_t>(flash.bq);
    heap_score.resize(bq * static_cast<std::size_t>(k));
    heap_key.resize(bq * static_cast<std::size_t>(k));
    probs.resize(static_cast<std::size_t>(k));
    orow.resize(static_cast<std::size_t>(d_v));
    heaps.reserve(bq);
  }
  TopkHeap<C> heap(Index lane, Index k) {
    const auto o = static_cast<std::size_t>(lane * k);
    return TopkHeap<C>{heap_score.data() + o, heap_key.data() + o, 0, k, false};
  }
};

/// Pass 2 for one row: softmax over its heap's base-2 logits, the value sum,
/// written as output row and natural-log lse (+ the row constant).
template <typename In>
void topk_finish_row(const In& in, const TopkHeap<typename In::Compute>& h, typename In::Compute constant,
                     TopkWorkspace<typename In::Compute>& ws, typename In::Compute* out,
                     typename In::Compute* lse, Index* selected, Index k) {
  using C = typename In::Compute;
  constexpr C inf = std::numeric_limits<C>::infinity();
  if (selected) {
    for (Index t = 0; t < k; ++t)
      selected[t] = t < h.size ? h.key[t] : Index(-1);
    std::sort(selected, selected + h.size);
  }
  if (h.nan) {
    std::fill(out, out + in.d_v, std::numeric_limits<C>::quiet_NaN());
    *lse = std::numeric_limits<C>::quiet_NaN();
    return;
  }
  C m = -inf;
  for (Index t = 0; t < h.size; ++t)
    m = std::max(m, h.score[t]);
  C l = 0;
  std::fill(ws.orow.begin(), ws.orow.end(), C(0));
  for (Index t = 0; t < h.size; ++t) {
    const C p = exp2_nonpositive<C>(h.score[t] - m);
    l += p;
    const auto* vr = in.value_row(h.key[t]);
    for (Index c = 0; c < in.d_v; ++c)
      ws.orow[static_cast<std::size_t>(c)] += p * to_compute<C>(vr[c]);
  }
  finish_row(m, l, ws.orow.data(), 1, in.d_v, constant, out, lse);
}

/// Top-k over query rows [i0, i1) of `in` (keys: every position of K).
template <typename In>
void topk_block(const In& in, Index n_keys, Index i0, Index i1, Index k, Index block_k,
                TopkWorkspace<typename In::Compute>& ws, typename In::Compute* out, Index ldo,
                typename In::Compute* lse, Index* selected) {
  using C = typename In::Compute;
  using Packet = typename FlashPacket<C>::Packet;
  constexpr int P = FlashPacket<C>::size;
  FlashWorkspace<C>& fw = ws.flash;
  const BlockShape b = block_shape<C>(i1 - i0);
  block_begin(in, i0, b, fw);
  std::vector<TopkHeap<C>>& heaps = ws.heaps;  // capacity reserved: no allocation here
  heaps.clear();
  for (Index i = 0; i < b.rows; ++i)
    heaps.push_back(ws.heap(i, k));
  const MaskLayout& mask = in.mask;
  // The keys some row of the block sees: the sinks and the band's union.
  const Index sink_hi = mask.sink_end(i1 - 1), band_lo = mask.key_begin(i0);
  const Index last_end = std::min(mask.key_end(i1 - 1), n_keys);
  const bool merged = sink_hi >= band_lo;
  const KeyRange segs[2] = {{0, merged ? last_end : sink_hi}, {merged ? last_end : band_lo, last_end}};
  for (const KeyRange& seg : segs) {
    const Index hi = std::min(seg.end, last_end);
    for (Index j0 = seg.begin; j0 < hi; j0 += block_k) {
      const Index nk = std::min(j0 + block_k, hi) - j0;
      tile_scores(in, b, j0, nk, fw);
      if (!tile_is_full(mask, i0, b.rows, j0, j0 + nk)) tile_mask(in, i0, b, j0, nk, fw);
      for (Index p = 0; p < b.npk; ++p) {
        // Each lane's tile maximum, and whether its column holds a NaN
        // (which pmax would drop): one vertical pass.
        const C* col = fw.st.data() + p * P;
        Packet mxp = ei::pset1<Packet>(-std::numeric_limits<C>::infinity());
        Packet finite = ei::ptrue(mxp);
        for (Index j = 0; j < nk; ++j) {
          const Packet x = ei::pload<Packet>(col + j * b.bq);
          mxp = ei::pmax(mxp, x);
          finite = ei::pand(finite, ei::pcmp_eq(x, x));
        }
        alignas(64) C mx[P], ok[P];
        ei::pstore(mx, mxp);
        ei::pstore(ok, finite);
        for (Index t = 0; t < P; ++t) {
          const Index lane = p * P + t;
          if (lane >= b.rows) break;
          TopkHeap<C>& h = heaps[static_cast<std::size_t>(lane)];
          if (ok[t] == C(0)) h.nan = true;  // all-zero bits: a NaN in the column
          if (!(mx[t] > h.threshold()) || h.nan) continue;
          for (Index j = 0; j < nk; ++j) {
            const C x = col[j * b.bq + t];
            if (x > h.threshold()) h.offer(x, j0 + j);
          }
        }
      }
    }
  }
  for (Index i = 0; i < b.rows; ++i)
    topk_finish_row(in, heaps[static_cast<std::size_t>(i)], fw.qconst[static_cast<std::size_t>(i)], ws,
                    out + i * ldo, lse + i, selected ? selected + (i0 + i) * k : nullptr, k);
}

template <typename Compute, typename DQ, typename DK, typename DV, typename Policy>
void topk_call(const char* where, const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
               const Eigen::MatrixBase<DV>& v, const TopkOptions& topk, Compute* out, Index ldo, Compute* lse,
               Index* selected, const AttentionOptions& options, const FlashConfig& config,
               const Policy& policy) {
  using SQ = typename DQ::Scalar;
  using SK = typename DK::Scalar;
  using SV = typename DV::Scalar;
  const AttentionProblem pb = make_attention_problem(where, q, k, v, options);
  if (topk.k < 1) fail(where, ": k = ", topk.k, " must be >= 1");
  const FlashTiling tiling = flash_tiling<Compute>(where, config, pb.n_q, pb.n_k);
  policy.check(where, pb, options);
  const Index kk = std::min(topk.k, pb.n_k);
  checked_product("topk_attention", "block_q x k", flash_max_block_q, kk);
  const Eigen::Ref<const RowMatrix<SQ>> qr(q);
  const Eigen::Ref<const RowMatrix<SK>> kr(k);
  const Eigen::Ref<const RowMatrix<SV>> vr(v);
  using In = FlashInputs<Compute, SQ, SK, SV, Policy>;
  const In in{qr.data(), qr.outerStride(),
              kr.data(), kr.outerStride(),
              vr.data(), vr.outerStride(),
              pb.n_q,    pb.d,
              pb.d_v,    0,
              pb.mask,   policy.template kernel<Compute>(pb)};
  const Index block_q = tiling.block_q, block_k = tiling.block_k;
  const Index blocks = (pb.n_q + block_q - 1) / block_q;
  const int team = static_cast<int>(std::min<Index>(tiling.threads, blocks));
  std::vector<TopkWorkspace<Compute>> workspaces(static_cast<std::size_t>(team));
  for (auto& ws : workspaces)
    ws.reserve(pb.d, pb.d_v, block_q, block_k, kk, In::key_terms, In::query_terms,
               !std::is_same_v<SK, Compute> && !In::bf16_dot, In::bf16_dot);
  ATTNKIT_PRAGMA(omp parallel num_threads(team)) {
#if defined(_OPENMP)
    TopkWorkspace<Compute>& ws = workspaces[static_cast<std::size_t>(omp_get_thread_num())];
#else
    TopkWorkspace<Compute>& ws = workspaces[0];
#endif
    ATTNKIT_PRAGMA(omp for schedule(dynamic, 1))
    for (Index item = 0; item < blocks; ++item) {
      const Index b = blocks - 1 - item, i0 = b * block_q, i1 = std::min(pb.n_q, i0 + block_q);
      topk_block(in, pb.n_k, i0, i1, kk, block_k, ws, out + i0 * ldo, ldo, lse + i0, selected);
    }
  }
}

}  // namespace detail

/// Top-k attention (see the file comment), into caller-owned outputs.
/// \param q (n_q x d), \param k (n_k x d), \param v (n_k x d_v).
/// \param out (n_q x d_v), \param lse (n_q): written, not resized.
/// \throws std::invalid_argument for k < 1 and as flash_attention_into
///         (shapes, scale, mask, config, policy); nothing is written then.
template <typename Compute = void, typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
void topk_attention_into(
    const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
    const TopkOptions& topk,
    Eigen::Ref<RowMatrix<
        detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>>
        out,
    Eigen::Ref<Vector<
        detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>>
        lse,
    const AttentionOptions& options = {}, const FlashConfig& config = {}, const Policy& policy = {}) {
  using C = detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>;
  const char* where = "topk_attention";
  if (out.rows() != q.rows() || out.cols() != v.cols())
    detail::fail(where, ": out ", detail::shape(out), " must be (n_q x d_v) = (", q.rows(), " x ", v.cols(),
                 ")");
  if (lse.size() != q.rows())
    detail::fail(where, ": lse has ", lse.size(), " entries, needs n_q = ", q.rows());
  detail::topk_call<C>(where, q, k, v, topk, out.data(), out.outerStride(), lse.data(), nullptr, options,
                       config, policy);
}

/// Top-k attention (see the file comment).
/// \returns output (n_q x d_v) and lse (n_q) over each row's kept keys.
/// \code
///   auto r = attnkit::topk_attention(q, k, v, {64}, {attnkit::Mask::causal()});
/// \endcode
template <typename Compute = void, typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
AttentionResult<
    detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>
topk_attention(const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
               const TopkOptions& topk, const AttentionOptions& options = {}, const FlashConfig& config = {},
               const Policy& policy = {}) {
  using C = detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>;
  AttentionResult<C> r{RowMatrix<C>(q.rows(), v.cols()), Vector<C>(q.rows())};
  topk_attention_into<C>(q, k, v, topk, r.output, r.lse, options, config, policy);
  return r;
}

/// The keys top-k attention keeps for each query: (n_q x min(k, n_k)) key
/// positions in increasing order, -1 where a row sees fewer keys; plus the
/// attention result.
template <typename Scalar>
struct TopkSelection {
  RowMatrix<Index> keys;
  AttentionResult<Scalar> result;
};

/// As topk_attention, also returning the kept keys.
template <typename Compute = void, typename DQ, typename DK, typename DV, typename Policy = DotProductScore>
TopkSelection<detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>>
topk_attention_selection(const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
                         const Eigen::MatrixBase<DV>& v, const TopkOptions& topk,
                         const AttentionOptions& options = {}, const FlashConfig& config = {},
                         const Policy& policy = {}) {
  using C = detail::flash_compute_t<Compute, typename DQ::Scalar, typename DK::Scalar, typename DV::Scalar>;
  TopkSelection<C> s{RowMatrix<Index>(q.rows(), std::max<Index>(1, std::min(topk.k, k.rows()))),
                     {RowMatrix<C>(q.rows(), v.cols()), Vector<C>(q.rows())}};
  detail::topk_call<C>("topk_attention", q, k, v, topk, s.result.output.data(), s.result.output.outerStride(),
                       s.result.lse.data(), s.keys.data(), options, config, policy);
  return s;
}

}  // namespace attnkit
