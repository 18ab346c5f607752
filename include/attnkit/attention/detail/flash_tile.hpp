#pragma once

/// \file attnkit/attention/detail/flash_tile.hpp
/// The tile layer of the fused kernel (attnkit/attention/flash.hpp):
/// packet traits, the bound inputs of one head, the per-thread workspace,
/// stored-type loaders and the two GEMM-like micro-kernels. Internal: no
/// argument checks here.
///
/// Formulation ("keys x queries"): for a block of Bq queries the kernel keeps
///   Q^T  (d x Bq)    the block's prepared queries, transposed (for the
///                    default policy: scaled by scale * log2(e)),
///   m, l (Bq)        running maximum (base-2 logits) and running sum,
///   O^T  (d_v x Bq)  running, unnormalised output, transposed,
/// and for each tile of Bk keys computes
///   S^T = K_tile Q^T            (Bk x Bq)   micro-kernel A (+ the policy's transform)
///   online softmax over S^T                 (attention/detail/online_softmax.hpp)
///   O^T = a O^T + V_tile^T P^T  (d_v x Bq)  micro-kernel B (rescale fused).
/// Queries run along SIMD lanes, so the softmax statistics are plain
/// vertical packet operations. Both micro-kernels keep an (MR rows) x
/// (NR packets) accumulator tile in registers and broadcast one operand from
/// memory: the structure of a GEMM micro-kernel. Everything is written
/// against Eigen::internal packets, so the instruction set is whatever the
/// including translation unit is compiled for (AVX-512, AVX2, SSE, NEON or
/// scalar).
///
/// Types: Q, K and V each have a STORED element type; the kernel computes in
/// Compute (float or double). Stored elements are converted as they are
/// broadcast or loaded (load_broadcast, load_packet); when the stored type is
/// Compute this is a plain load.

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "attnkit/attention/detail/packet_exp.hpp"
#include "attnkit/core/mask.hpp"
#include "attnkit/core/types.hpp"
#include "attnkit/detail/half_packets.hpp"
#include "attnkit/similarity/score.hpp"

namespace attnkit::detail {

/// Packet type and register-tile shape for Compute under the current ISA.
template <typename Compute>
struct FlashPacket {
  using Packet = typename ei::packet_traits<Compute>::type;
  static constexpr int size = ei::unpacket_traits<Packet>::size;
#ifdef EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS
  static constexpr int registers = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS;
#else
  static constexpr int registers = 16;
#endif
  /// Query packets per micro-tile.
  static constexpr int nr = registers >= 32 ? 4 : 2;
  /// Rows (keys in A, value columns in B) per micro-tile: mr * nr accumulators.
  static constexpr int mr = registers >= 32 ? 6 : 5;
};

/// One stored element broadcast to a packet of Compute.
template <typename Packet, typename Stored>
EIGEN_STRONG_INLINE Packet load_broadcast(const Stored* p) {
  using Compute = typename ei::unpacket_traits<Packet>::type;
  return ei::pset1<Packet>(to_compute<Compute>(*p));
}

/// A packet's worth of consecutive stored elements (unaligned) as Compute.
template <typename Packet, typename Stored>
EIGEN_STRONG_INLINE Packet load_packet(const Stored* p) {
  using Compute = typename ei::unpacket_traits<Packet>::type;
  if constexpr (std::is_same_v<Compute, Stored>) {
    return ei::ploadu<Packet>(p);
  } else if constexpr (is_16bit_float_v<Stored> && std::is_same_v<Compute, float>) {
    Packet out;
    if (load_16bit_packet(p, out)) return out;
    constexpr int P = ei::unpacket_traits<Packet>::size;
    alignas(64) Compute tmp[P];
    for (int i = 0; i < P; ++i)
      tmp[i] = to_compute<Compute>(p[i]);
    return ei::pload<Packet>(tmp);
  } else {
    constexpr int P = ei::unpacket_traits<Packet>::size;
    alignas(64) Compute tmp[P];
    for (int i = 0; i < P; ++i)
      tmp[i] = to_compute<Compute>(p[i]);
    return ei::pload<Packet>(tmp);
  }
}

/// Converts rows x cols stored elements (row stride ld) to Compute into dst
/// (row stride cols): one tile's worth, vectorised through load_packet.
template <typename Compute, typename Stored>
void stage_rows(const Stored* src, Index ld, Index rows, Index cols, Compute* dst) {
  using Packet = typename FlashPacket<Compute>::Packet;
  constexpr int P = FlashPacket<Compute>::size;
  for (Index r = 0; r < rows; ++r) {
    const Stored* s = src + r * ld;
    Compute* o = dst + r * cols;
    Index c = 0;
    for (; c + P <= cols; c += P)
      ei::pstoreu(o + c, load_packet<Packet>(s + c));
    for (; c < cols; ++c)
      o[c] = to_compute<Compute>(s[c]);
  }
}

/// The bound inputs of one head: row-major views of Q, K, V in their stored
/// types, the bound mask, the position of K's first row in the masked key
/// sequence, and the policy's kernel form in Compute.
template <typename ComputeT, typename SQ, typename SK, typename SV, typename PolicyT>
struct FlashInputs {
  using Compute = ComputeT;
  using Policy = PolicyT;
  using StoredQ = SQ;
  using StoredK = SK;
  using StoredV = SV;
  using Score =
      decltype(std::declval<const Policy&>().template kernel<Compute>(std::declval<AttentionProblem>()));
  static constexpr int key_terms = Policy::key_terms;
  static constexpr int query_terms = Policy::query_terms;
  static constexpr bool transforms = Policy::transforms;
  /// Q K^T on the bfloat16 dot-product instruction (AVX512-BF16 vdpbf16ps):
  /// bfloat16 Q and K, float compute, the default policy. Each product of two
  /// bfloat16 values is exact in float; the sums are float sums.
  static constexpr bool bf16_dot =
#if defined(__AVX512BF16__)
      std::is_same_v<SQ, Eigen::bfloat16> && std::is_same_v<SK, Eigen::bfloat16> &&
      std::is_same_v<ComputeT, float> && is_dot_product_v<PolicyT>;
#else
      false;
#endif

  const SQ* q;
  Index ldq;
  const SK* k;
  Index ldk;
  const SV* v;
  Index ldv;
  Index n_q, d, d_v;
  /// Key j (a POSITION of the masked sequence) is row j - key_position of K and V.
  Index key_position;
  MaskLayout mask;
  Score score;
  /// The policy's key terms of every key, computed once per call when
  /// several query blocks read them (term t of the key at position j at
  /// key_table[t * key_table_stride + j - key_table_first]); null: computed
  /// tile by tile.
  const Compute* key_table = nullptr;
  Index key_table_first = 0, key_table_stride = 0;

  const SK* key_row(Index j) const {
    return k + (j - key_position) * ldk;
  }
  const SV* value_row(Index j) const {
    return v + (j - key_position) * ldv;
  }
};

/// Per-thread scratch, sized once per call and reused for every block.
template <typename Compute>
struct FlashWorkspace {
  using Buffer = std::vector<Compute, Eigen::aligned_allocator<Compute>>;
  Buffer qt, st, ot, m, l, alpha, lane, qrow, qprep, kterms, qterms, qconst;
  /// One tile of keys (block_k x d) and values (block_k x d_v) converted to
  /// Compute, when they are stored in another type (else empty).
  Buffer kstage, vstage;
  std::vector<Index> first_lane, last_lane;
  /// Q^T as bfloat16 pairs (ceil(d / 2) x Bq 32-bit words: dims 2c and 2c + 1
  /// of a query), for the bfloat16 dot-product micro-kernel.
  std::vector<std::uint32_t, Eigen::aligned_allocator<std::uint32_t>> qt2;
  Index block_k = 0, bq = 0;

  void reserve(Index d, Index d_v, Index block_q, Index block_k_, int key_terms, int query_terms,
               bool stage_keys = false, bool stage_values = false, bool pair_queries = false) {
    constexpr int P = FlashPacket<Compute>::size;
    const auto sz = [](Index x) { return static_cast<std::size_t>(x); };
    bq = (block_q + P - 1) / P * P;
    block_k = block_k_;
    qt.resize(sz(d * bq));
    st.resize(sz(block_k * bq));
    ot.resize(sz(d_v * bq));
    m.resize(sz(bq));
    l.resize(sz(bq));
    alpha.resize(sz(bq));
    lane.resize(sz(bq));
    for (Index i = 0; i < bq; ++i)
      lane[sz(i)] = static_cast<Compute>(i);
    qrow.resize(sz(d));
    qprep.resize(sz(d));
    kterms.resize(sz(std::max(1, key_terms) * block_k));
    qterms.resize(sz(std::max(1, query_terms) * bq));
    qconst.resize(sz(bq));
    first_lane.resize(sz(block_k));
    last_lane.resize(sz(block_k));
    if (stage_keys) kstage.resize(sz(block_k * d));
    if (stage_values) vstage.resize(sz(block_k * d_v));
    if (pair_queries) qt2.resize(sz((d + 1) / 2 * bq));
    // The decode kernel (rows <= P / 2 <= bq / 2) uses st as rows x block_k
    // scores (block_k is a multiple of P), qt as rows x d queries and ot as
    // two rows x d_v accumulators: all fit the sizes above (asserted there).
  }
};

/// Calls f(std::integral_constant<int, R>{}) for R = r in [1, MaxR].
template <int MaxR, typename F>
EIGEN_STRONG_INLINE void dispatch_rows(int r, F&& f) {
  if constexpr (MaxR >= 1) {
    if (r == MaxR) return f(std::integral_constant<int, MaxR>{});
    dispatch_rows<MaxR - 1>(r, std::forward<F>(f));
  }
}

/// Converts the stored query row i (absolute row of Q) to Compute and lets
/// the policy prepare it: writes the prepared vector to ws.qprep and the
/// query terms to terms[t * stride]; returns the row constant.
template <typename In>
EIGEN_STRONG_INLINE typename In::Compute prepare_query_row(const In& in, Index i,
                                                           FlashWorkspace<typename In::Compute>& ws,
                                                           typename In::Compute* terms, Index stride) {
  using C = typename In::Compute;
  const typename In::StoredQ* qrow = in.q + i * in.ldq;
  const C* src;
  if constexpr (std::is_same_v<typename In::StoredQ, C>) {
    src = qrow;
  } else {
    for (Index c = 0; c < in.d; ++c)
      ws.qrow[static_cast<std::size_t>(c)] = to_compute<C>(qrow[c]);
    src = ws.qrow.data();
  }
  C t[In::query_terms > 0 ? In::query_terms : 1] = {};
  const C constant = in.score.prepare_query(src, in.d, in.mask.query_position(i), ws.qprep.data(), t);
  for (int q = 0; q < In::query_terms; ++q)
    terms[q * stride] = t[q];
  return constant;
}

/// The key terms of keys [j0, j0 + nk) into ws.kterms (term t of key j at
/// t * block_k + (j - j0)).
template <typename In>
EIGEN_STRONG_INLINE void tile_key_terms(const In& in, Index j0, Index nk,
                                        FlashWorkspace<typename In::Compute>& ws) {
  using C = typename In::Compute;
  if constexpr (In::key_terms > 0) {
    if (in.key_table) {  // precomputed for the call: copied (nk values per term)
      for (int q = 0; q < In::key_terms; ++q)
        std::copy_n(in.key_table + q * in.key_table_stride + (j0 - in.key_table_first), nk,
                    ws.kterms.data() + q * ws.block_k);
      return;
    }
    for (Index j = 0; j < nk; ++j) {
      C t[In::key_terms] = {};
      in.score.key(in.key_row(j0 + j), in.d, j0 + j, t);
      for (int q = 0; q < In::key_terms; ++q)
        ws.kterms[static_cast<std::size_t>(q * ws.block_k + j)] = t[q];
    }
  }
}

/// Micro-kernel A: st[r][p] = transform(sum_c k[r][c] * qt[c][p]) for R keys
/// and C query packets. k rows have stride ldk; qt and st rows have stride ld
/// (= Bq). kt: the R keys' terms (term t of row r at kt[t * kt_stride + r]);
/// qt_terms: the packets' query terms (term t at qt_terms[t * ld + p * P]).
template <int R, int C, typename In, typename SK>
EIGEN_STRONG_INLINE void qk_micro(const In& in, const SK* k, Index ldk, const typename In::Compute* qt,
                                  Index ld, typename In::Compute* st, const typename In::Compute* kt,
                                  Index kt_stride, const typename In::Compute* qt_terms) {
  using Compute = typename In::Compute;
  using Packet = typename FlashPacket<Compute>::Packet;
  constexpr int P = FlashPacket<Compute>::size;
  const Index d = in.d;
  Packet acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < C; ++p)
      acc[r][p] = ei::pset1<Packet>(Compute(0));
  for (Index c = 0; c < d; ++c) {
    Packet qv[C];
    for (int p = 0; p < C; ++p)
      qv[p] = ei::pload<Packet>(qt + c * ld + p * P);
    for (int r = 0; r < R; ++r) {
      const Packet kb = load_broadcast<Packet>(k + r * ldk + c);
      for (int p = 0; p < C; ++p)
        acc[r][p] = ei::pmadd(kb, qv[p], acc[r][p]);
    }
  }
  if constexpr (In::transforms) {
    constexpr int TK = In::key_terms > 0 ? In::key_terms : 1;
    constexpr int TQ = In::query_terms > 0 ? In::query_terms : 1;
    for (int p = 0; p < C; ++p) {
      Packet qterm[TQ];
      for (int t = 0; t < In::query_terms; ++t)
        qterm[t] = ei::pload<Packet>(qt_terms + t * ld + p * P);
      for (int r = 0; r < R; ++r) {
        Packet kterm[TK];
        for (int t = 0; t < In::key_terms; ++t)
          kterm[t] = ei::pset1<Packet>(kt[t * kt_stride + r]);
        acc[r][p] = in.score.transform(acc[r][p], kterm, qterm);
      }
    }
  } else {
    static_cast<void>(kt);
    static_cast<void>(kt_stride);
    static_cast<void>(qt_terms);
  }
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < C; ++p)
      ei::pstore(st + r * ld + p * P, acc[r][p]);
}

#if defined(__AVX512BF16__)
/// Micro-kernel A on vdpbf16ps: st[r][p] = factor * sum_c k[r][c] qt[c][p]
/// for R bfloat16 keys and C packets of 16 queries, two dimensions per
/// instruction: qt2 holds each query's dims (2c, 2c + 1) as one 32-bit word,
/// each key row's pair is broadcast. An odd d pairs the last dim with 0.
template <int R, int C>
EIGEN_STRONG_INLINE void qk_micro_bf16(const Eigen::bfloat16* k, Index ldk, Index d, const std::uint32_t* qt2,
                                       Index ld, float factor, float* st) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < C; ++p)
      acc[r][p] = _mm512_setzero_ps();
  const Index pairs = d / 2;
  for (Index c2 = 0; c2 < pairs; ++c2) {
    __m512bh qv[C];
    for (int p = 0; p < C; ++p)
      qv[p] = reinterpret_cast<__m512bh>(_mm512_load_si512(qt2 + c2 * ld + p * 16));
    for (int r = 0; r < R; ++r) {
      std::uint32_t pair;
      std::memcpy(&pair, k + r * ldk + 2 * c2, sizeof pair);
      const __m512bh kb = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(pair)));
      for (int p = 0; p < C; ++p)
        acc[r][p] = _mm512_dpbf16_ps(acc[r][p], kb, qv[p]);
    }
  }
  if (d % 2 != 0) {  // the last dim, paired with 0
    const Index c2 = pairs;
    __m512bh qv[C];
    for (int p = 0; p < C; ++p)
      qv[p] = reinterpret_cast<__m512bh>(_mm512_load_si512(qt2 + c2 * ld + p * 16));
    for (int r = 0; r < R; ++r) {
      std::uint16_t last;
      std::memcpy(&last, k + r * ldk + d - 1, sizeof last);
      const __m512bh kb = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(last)));
      for (int p = 0; p < C; ++p)
        acc[r][p] = _mm512_dpbf16_ps(acc[r][p], kb, qv[p]);
    }
  }
  const __m512 f = _mm512_set1_ps(factor);
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < C; ++p)
      _mm512_store_ps(st + r * ld + p * 16, _mm512_mul_ps(acc[r][p], f));
}
#endif

/// Micro-kernel B: ot[r][p] = alpha[p] * ot[r][p] + sum_j v[j][r] * pt[j][p]
/// for R value columns and C query packets over nk keys. The tile's sum is
/// accumulated on its own and added to the rescaled ot once (blocked
/// summation: rounding grows with the tile length plus the number of tiles,
/// not with n_k). With Masked >= 1 key j only reaches lanes >= first_lane[j];
/// with Masked == 2 also only lanes < last_lane[j].
template <int R, int C, int Masked, typename Compute, typename SV>
EIGEN_STRONG_INLINE void pv_micro(const SV* v, Index ldv, const Compute* pt, Index ld, Index nk, Compute* ot,
                                  const Compute* alpha, const Compute* lane, const Index* first_lane,
                                  const Index* last_lane) {
  using Packet = typename FlashPacket<Compute>::Packet;
  constexpr int P = FlashPacket<Compute>::size;
  Packet acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < C; ++p)
      acc[r][p] = ei::pset1<Packet>(Compute(0));
  for (Index j = 0; j < nk; ++j) {
    Packet pv[C];
    for (int p = 0; p < C; ++p)
      pv[p] = ei::pload<Packet>(pt + j * ld + p * P);
    if constexpr (Masked > 0) {
      const Packet first = ei::pset1<Packet>(static_cast<Compute>(first_lane[j]));
      Packet keep[C];
      if constexpr (Masked == 2) {
        const Packet last = ei::pset1<Packet>(static_cast<Compute>(last_lane[j]));
        for (int p = 0; p < C; ++p) {
          const Packet ln = ei::pload<Packet>(lane + p * P);
          keep[p] = ei::pand(ei::pcmp_le(first, ln), ei::pcmp_lt(ln, last));
        }
      } else {
        static_cast<void>(last_lane);
        for (int p = 0; p < C; ++p)
          keep[p] = ei::pcmp_le(first, ei::pload<Packet>(lane + p * P));
      }
      for (int r = 0; r < R; ++r) {
        const Packet vb = load_broadcast<Packet>(v + j * ldv + r);
        for (int p = 0; p < C; ++p)
          acc[r][p] = ei::pselect(keep[p], ei::pmadd(vb, pv[p], acc[r][p]), acc[r][p]);
      }
    } else {
      for (int r = 0; r < R; ++r) {
        const Packet vb = load_broadcast<Packet>(v + j * ldv + r);
        for (int p = 0; p < C; ++p)
          acc[r][p] = ei::pmadd(vb, pv[p], acc[r][p]);
      }
    }
  }
  for (int p = 0; p < C; ++p) {
    const Packet a = ei::pload<Packet>(alpha + p * P);
    for (int r = 0; r < R; ++r)
      ei::pstore(ot + r * ld + p * P, ei::pmadd(a, ei::pload<Packet>(ot + r * ld + p * P), acc[r][p]));
  }
}

}  // namespace attnkit::detail
