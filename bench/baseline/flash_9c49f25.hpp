#pragma once

// The fused kernel as it was at commit 9c49f25 (before the kernel layer was
// split by role and given score policies, bands and partial results), kept
// verbatim under its own namespace as the BEFORE of same-binary, same-run
// comparisons: flash_bench's "prev" rows and flash_test's bit-identity test
// of the default policy. Not part of the library; do not change it.

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "attnkit/attention/detail/packet_exp.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/problem.hpp"
#include "attnkit/core/mask.hpp"
#include "attnkit/core/types.hpp"
#include "attnkit/detail/parallel.hpp"

namespace attnkit::baseline_9c49f25 {

namespace ei = Eigen::internal;
using attnkit::detail::exp2_nonpositive;
using attnkit::detail::merge_rows;
using attnkit::detail::resolve_threads;

/// Packet type and register-tile shape for Scalar under the current ISA.
template <typename Scalar>
struct FlashPacket {
  using Packet = typename ei::packet_traits<Scalar>::type;
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

/// Row-major views of the inputs and the bound problem.
template <typename Scalar>
struct FlashInputs {
  const Scalar* q;
  Index ldq;
  const Scalar* k;
  Index ldk;
  const Scalar* v;
  Index ldv;
  Index n_q, n_k, d, d_v;
  /// scale * log2(e): logits are kept in base 2 so exp becomes exp2.
  Scalar logit_scale;
  MaskLayout mask;
};

/// Per-thread scratch, sized once per call and reused for every block.
template <typename Scalar>
struct FlashWorkspace {
  using Buffer = std::vector<Scalar, Eigen::aligned_allocator<Scalar>>;
  Buffer qt, st, ot, m, l, alpha, lane;
  std::vector<Index> first_lane;

  void reserve(Index d, Index d_v, Index block_q, Index block_k) {
    constexpr int P = FlashPacket<Scalar>::size;
    const Index bq = (block_q + P - 1) / P * P;
    qt.resize(static_cast<std::size_t>(d * bq));
    st.resize(static_cast<std::size_t>(block_k * bq));
    ot.resize(static_cast<std::size_t>(d_v * bq));
    m.resize(static_cast<std::size_t>(bq));
    l.resize(static_cast<std::size_t>(bq));
    alpha.resize(static_cast<std::size_t>(bq));
    lane.resize(static_cast<std::size_t>(bq));
    for (Index i = 0; i < bq; ++i)
      lane[static_cast<std::size_t>(i)] = static_cast<Scalar>(i);
    first_lane.resize(static_cast<std::size_t>(block_k));
    // The decode kernel (rows <= P / 2 <= bq / 2) uses st as rows x block_k
    // scores (block_k is a multiple of P, see flash_run), qt as rows x d
    // queries and ot as two rows x d_v accumulators: all fit the sizes above
    // (asserted in decode_block).
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

/// Micro-kernel A: st[r][p] = sum_c k[r][c] * qt[c][p] for R keys and C query
/// packets. k rows have stride ldk; qt and st rows have stride ld (= Bq).
template <int R, int C, typename Scalar>
EIGEN_STRONG_INLINE void qk_micro(const Scalar* k, Index ldk, const Scalar* qt, Index ld, Index d,
                                  Scalar* st) {
  using Packet = typename FlashPacket<Scalar>::Packet;
  constexpr int P = FlashPacket<Scalar>::size;
  Packet acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < C; ++p)
      acc[r][p] = ei::pset1<Packet>(Scalar(0));
  for (Index c = 0; c < d; ++c) {
    Packet qv[C];
    for (int p = 0; p < C; ++p)
      qv[p] = ei::pload<Packet>(qt + c * ld + p * P);
    for (int r = 0; r < R; ++r) {
      const Packet kb = ei::pset1<Packet>(k[r * ldk + c]);
      for (int p = 0; p < C; ++p)
        acc[r][p] = ei::pmadd(kb, qv[p], acc[r][p]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < C; ++p)
      ei::pstore(st + r * ld + p * P, acc[r][p]);
}

/// Micro-kernel B: ot[r][p] = alpha[p] * ot[r][p] + sum_j v[j][r] * pt[j][p]
/// for R value columns and C query packets over nk keys. The tile's sum is
/// accumulated on its own and added to the rescaled ot once (blocked
/// summation: rounding grows with the tile length plus the number of tiles,
/// not with n_k). With Masked, key j only reaches lanes >= first_lane[j].
template <int R, int C, bool Masked, typename Scalar>
EIGEN_STRONG_INLINE void pv_micro(const Scalar* v, Index ldv, const Scalar* pt, Index ld, Index nk,
                                  Scalar* ot, const Scalar* alpha, const Scalar* lane,
                                  const Index* first_lane) {
  using Packet = typename FlashPacket<Scalar>::Packet;
  constexpr int P = FlashPacket<Scalar>::size;
  Packet acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < C; ++p)
      acc[r][p] = ei::pset1<Packet>(Scalar(0));
  for (Index j = 0; j < nk; ++j) {
    Packet pv[C];
    for (int p = 0; p < C; ++p)
      pv[p] = ei::pload<Packet>(pt + j * ld + p * P);
    if constexpr (Masked) {
      const Packet first = ei::pset1<Packet>(static_cast<Scalar>(first_lane[j]));
      Packet keep[C];
      for (int p = 0; p < C; ++p)
        keep[p] = ei::pcmp_le(first, ei::pload<Packet>(lane + p * P));
      for (int r = 0; r < R; ++r) {
        const Packet vb = ei::pset1<Packet>(v[j * ldv + r]);
        for (int p = 0; p < C; ++p)
          acc[r][p] = ei::pselect(keep[p], ei::pmadd(vb, pv[p], acc[r][p]), acc[r][p]);
      }
    } else {
      for (int r = 0; r < R; ++r) {
        const Packet vb = ei::pset1<Packet>(v[j * ldv + r]);
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

/// Geometry of one query block: `rows` real queries padded to `npk` packets
/// (`bq` = npk * P lanes, the row stride of qt, st and ot).
struct BlockShape {
  Index rows, npk, bq;
};

template <typename Scalar>
BlockShape block_shape(Index rows) {
  constexpr int P = FlashPacket<Scalar>::size;
  const Index npk = (rows + P - 1) / P;
  return {rows, npk, npk * P};
}

/// Phase 0: Q^T of rows [i0, i0 + rows) scaled into base-2 logits (padded
/// lanes zero); m = -inf, l = 0, O^T = 0.
template <typename Scalar>
void block_begin(const FlashInputs<Scalar>& in, Index i0, const BlockShape& b, FlashWorkspace<Scalar>& ws) {
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  Scalar* qt = ws.qt.data();
  for (Index i = 0; i < b.bq; ++i) {
    if (i < b.rows) {
      const Scalar* qrow = in.q + (i0 + i) * in.ldq;
      for (Index c = 0; c < in.d; ++c)
        qt[c * b.bq + i] = qrow[c] * in.logit_scale;
    } else {
      for (Index c = 0; c < in.d; ++c)
        qt[c * b.bq + i] = Scalar(0);
    }
    ws.m[static_cast<std::size_t>(i)] = -inf;
    ws.l[static_cast<std::size_t>(i)] = Scalar(0);
  }
  std::fill(ws.ot.begin(), ws.ot.begin() + in.d_v * b.bq, Scalar(0));
}

/// Phase 1 (micro-kernel A): S^T = K[j0, j0 + nk) Q^T into st.
template <typename Scalar>
void tile_scores(const FlashInputs<Scalar>& in, const BlockShape& b, Index j0, Index nk,
                 FlashWorkspace<Scalar>& ws) {
  constexpr int P = FlashPacket<Scalar>::size, MR = FlashPacket<Scalar>::mr, NR = FlashPacket<Scalar>::nr;
  for (Index jr = 0; jr < nk; jr += MR) {
    const int r = static_cast<int>(std::min<Index>(MR, nk - jr));
    for (Index pq = 0; pq < b.npk; pq += NR) {
      const int c = static_cast<int>(std::min<Index>(NR, b.npk - pq));
      const Scalar* krow = in.k + (j0 + jr) * in.ldk;
      Scalar* srow = ws.st.data() + jr * b.bq + pq * P;
      const Scalar* qcol = ws.qt.data() + pq * P;
      dispatch_rows<MR>(r, [&](auto R) {
        dispatch_rows<NR>(c, [&](auto C) {
          qk_micro<decltype(R)::value, decltype(C)::value>(krow, in.ldk, qcol, b.bq, in.d, srow);
        });
      });
    }
  }
}

/// Phase 1b, crossing tiles only: key j reaches lanes >= first_lane[j]; the
/// scores of the lanes below are set to -inf.
template <typename Scalar>
void tile_mask(const FlashInputs<Scalar>& in, Index i0, const BlockShape& b, Index j0, Index nk,
               FlashWorkspace<Scalar>& ws) {
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  Index lane0 = 0;
  for (Index j = j0; j < j0 + nk; ++j) {
    while (lane0 < b.rows && in.mask.key_end(i0 + lane0) <= j)
      ++lane0;
    ws.first_lane[static_cast<std::size_t>(j - j0)] = lane0;
    Scalar* srow = ws.st.data() + (j - j0) * b.bq;
    for (Index i = 0; i < lane0; ++i)
      srow[i] = -inf;
  }
}

/// Phase 2: online softmax, vertically over the tile's nk keys: m, l and
/// alpha updated, st overwritten by P^T = 2^(S^T - m).
template <typename Scalar>
void tile_softmax(const BlockShape& b, Index nk, FlashWorkspace<Scalar>& ws) {
  using Packet = typename FlashPacket<Scalar>::Packet;
  constexpr int P = FlashPacket<Scalar>::size;
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  const Packet neg_inf = ei::pset1<Packet>(-inf);
  const Packet one = ei::pset1<Packet>(Scalar(1));
  Scalar* st = ws.st.data();
  const Index bq = b.bq;
  for (Index p = 0; p < b.npk; ++p) {
    Packet tile_max = neg_inf;
    for (Index j = 0; j < nk; ++j)
      tile_max = ei::pmax(tile_max, ei::pload<Packet>(st + j * bq + p * P));
    const Packet m_old = ei::pload<Packet>(ws.m.data() + p * P);
    const Packet m_new = ei::pmax(m_old, tile_max);
    const Packet a =
        ei::pselect(ei::pcmp_eq(m_old, m_new), one, exp2_nonpositive<Scalar>(ei::psub(m_old, m_new)));
    // A lane that has seen no finite logit yet keeps m = -inf: subtract 0
    // instead, so its (all -inf) logits give 0 rather than NaN.
    const Packet m_sub = ei::pselect(ei::pcmp_eq(m_new, neg_inf), ei::pzero(m_new), m_new);
    Packet sum0 = ei::pzero(m_new), sum1 = ei::pzero(m_new);
    Index j = 0;
    for (; j + 1 < nk; j += 2) {
      Scalar* s0 = st + j * bq + p * P;
      Scalar* s1 = s0 + bq;
      const Packet e0 = exp2_nonpositive<Scalar>(ei::psub(ei::pload<Packet>(s0), m_sub));
      const Packet e1 = exp2_nonpositive<Scalar>(ei::psub(ei::pload<Packet>(s1), m_sub));
      ei::pstore(s0, e0);
      ei::pstore(s1, e1);
      sum0 = ei::padd(sum0, e0);
      sum1 = ei::padd(sum1, e1);
    }
    if (j < nk) {
      Scalar* s0 = st + j * bq + p * P;
      const Packet e0 = exp2_nonpositive<Scalar>(ei::psub(ei::pload<Packet>(s0), m_sub));
      ei::pstore(s0, e0);
      sum0 = ei::padd(sum0, e0);
    }
    ei::pstore(ws.l.data() + p * P,
               ei::pmadd(ei::pload<Packet>(ws.l.data() + p * P), a, ei::padd(sum0, sum1)));
    ei::pstore(ws.m.data() + p * P, m_new);
    ei::pstore(ws.alpha.data() + p * P, a);
  }
}

/// Phase 3 (micro-kernel B): O^T = alpha O^T + V[j0, j0 + nk)^T P^T, skipping
/// masked lanes explicitly in crossing tiles.
template <typename Scalar>
void tile_accumulate(const FlashInputs<Scalar>& in, const BlockShape& b, Index j0, Index nk, bool crossing,
                     FlashWorkspace<Scalar>& ws) {
  constexpr int P = FlashPacket<Scalar>::size, MR = FlashPacket<Scalar>::mr, NR = FlashPacket<Scalar>::nr;
  const Scalar* vtile = in.v + j0 * in.ldv;
  for (Index cr = 0; cr < in.d_v; cr += MR) {
    const int r = static_cast<int>(std::min<Index>(MR, in.d_v - cr));
    for (Index pq = 0; pq < b.npk; pq += NR) {
      const int c = static_cast<int>(std::min<Index>(NR, b.npk - pq));
      const Scalar* pcol = ws.st.data() + pq * P;
      Scalar* ocol = ws.ot.data() + cr * b.bq + pq * P;
      const Scalar* acol = ws.alpha.data() + pq * P;
      const Scalar* lcol = ws.lane.data() + pq * P;
      dispatch_rows<MR>(r, [&](auto R) {
        dispatch_rows<NR>(c, [&](auto C) {
          constexpr int RR = decltype(R)::value, CC = decltype(C)::value;
          if (crossing)
            pv_micro<RR, CC, true>(vtile + cr, in.ldv, pcol, b.bq, nk, ocol, acol, lcol,
                                   ws.first_lane.data());
          else
            pv_micro<RR, CC, false>(vtile + cr, in.ldv, pcol, b.bq, nk, ocol, acol, lcol, nullptr);
        });
      });
    }
  }
}

/// Phase 4: O = (O^T)^T / l, natural-log lse; rows with l = 0 (no key seen)
/// become zero with lse = -inf.
template <typename Scalar>
void block_end(const BlockShape& b, Index d_v, const FlashWorkspace<Scalar>& ws, Scalar* out, Index ldo,
               Scalar* lse) {
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  constexpr Scalar ln2 = Scalar(0.693147180559945309417232121458176568L);
  for (Index i = 0; i < b.rows; ++i) {
    Scalar* orow = out + i * ldo;
    const Scalar li = ws.l[static_cast<std::size_t>(i)];
    if (li == Scalar(0)) {
      std::fill(orow, orow + d_v, Scalar(0));
      lse[i] = -inf;
      continue;
    }
    const Scalar inv = Scalar(1) / li;
    for (Index c = 0; c < d_v; ++c)
      orow[c] = ws.ot[static_cast<std::size_t>(c * b.bq + i)] * inv;
    lse[i] = (ws.m[static_cast<std::size_t>(i)] + std::log2(li)) * ln2;
  }
}

/// Attention of query rows [i0, i1) over keys [ka, kb) (intersected with each
/// row's mask prefix), tile by tile. Writes the normalised output rows to
/// out (row stride ldo) and their natural-log lse; a row that sees no key in
/// the range gets a zero row and lse = -inf. Requires i1 - i0 <= block_q and
/// a workspace reserved for (d, d_v, block_q, block_k).
template <typename Scalar>
void flash_block(const FlashInputs<Scalar>& in, Index i0, Index i1, Index ka, Index kb, Index block_k,
                 FlashWorkspace<Scalar>& ws, Scalar* out, Index ldo, Scalar* lse) {
  const BlockShape b = block_shape<Scalar>(i1 - i0);
  assert(i1 > i0 && static_cast<std::size_t>(in.d * b.bq) <= ws.qt.size() &&
         static_cast<std::size_t>(block_k * b.bq) <= ws.st.size() &&
         static_cast<std::size_t>(in.d_v * b.bq) <= ws.ot.size());
  block_begin(in, i0, b, ws);
  // Keys every row of the block sees: [ka, full); the last row sees up to hi.
  const Index hi = std::min(kb, in.mask.key_end(i1 - 1));
  const Index full = std::clamp(in.mask.key_end(i0), ka, std::max(ka, hi));
  for (Index j0 = ka; j0 < hi; j0 += block_k) {
    const Index nk = std::min(j0 + block_k, hi) - j0;
    const bool crossing = j0 + nk > full;
    tile_scores(in, b, j0, nk, ws);
    if (crossing) tile_mask(in, i0, b, j0, nk, ws);
    tile_softmax(b, nk, ws);
    tile_accumulate(in, b, j0, nk, crossing, ws);
  }
  block_end(b, in.d_v, ws, out, ldo, lse);
}

/// Largest number of query rows the decode kernel takes (half a packet, for
/// packets of 8 or more lanes); more rows go to the transposed kernel, whose
/// SIMD lanes are then mostly busy.
template <typename Scalar>
constexpr Index decode_max_rows() {
  return FlashPacket<Scalar>::size >= 8 ? FlashPacket<Scalar>::size / 2 : 0;
}

/// Dot product of two length-d rows with packets (two accumulators) and a
/// scalar tail.
template <typename Scalar>
EIGEN_STRONG_INLINE Scalar packet_dot(const Scalar* a, const Scalar* b, Index d) {
  using Packet = typename FlashPacket<Scalar>::Packet;
  constexpr int P = FlashPacket<Scalar>::size;
  Packet acc0 = ei::pset1<Packet>(Scalar(0)), acc1 = acc0;
  Index c = 0;
  for (; c + 2 * P <= d; c += 2 * P) {
    acc0 = ei::pmadd(ei::ploadu<Packet>(a + c), ei::ploadu<Packet>(b + c), acc0);
    acc1 = ei::pmadd(ei::ploadu<Packet>(a + c + P), ei::ploadu<Packet>(b + c + P), acc1);
  }
  if (c + P <= d) {
    acc0 = ei::pmadd(ei::ploadu<Packet>(a + c), ei::ploadu<Packet>(b + c), acc0);
    c += P;
  }
  Scalar sum = ei::predux(ei::padd(acc0, acc1));
  for (; c < d; ++c)
    sum += a[c] * b[c];
  return sum;
}

/// Decode kernel: the same contract as flash_block for a few query rows
/// (rows <= decode_max_rows) against many keys. Keys run along the SIMD lanes:
/// each key row is read once and dotted with every query that sees it, the
/// softmax runs over packets of keys, and P V accumulates four keys at a time
/// into an L1-resident output. Memory traffic: K and V once.
template <typename Scalar>
void decode_block(const FlashInputs<Scalar>& in, Index i0, Index i1, Index ka, Index kb, Index block_k,
                  FlashWorkspace<Scalar>& ws, Scalar* out, Index ldo, Scalar* lse) {
  using FP = FlashPacket<Scalar>;
  using Packet = typename FP::Packet;
  constexpr int P = FP::size;
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  const Index rows = i1 - i0, d = in.d, d_v = in.d_v;
  const Index ldk = (block_k + P - 1) / P * P;  // padded score row
  Scalar* qs = ws.qt.data();                    // rows x d, scaled queries
  Scalar* s = ws.st.data();                     // rows x ldk scores / probabilities
  Scalar* o = ws.ot.data();                     // rows x d_v accumulators
  Scalar* ot = o + rows * d_v;                  // rows x d_v: this tile's P V
  Scalar* m = ws.m.data();
  Scalar* l = ws.l.data();
  Scalar* alpha = ws.alpha.data();
  assert(rows >= 1 && rows <= decode_max_rows<Scalar>());
  assert(block_k % P == 0 && static_cast<std::size_t>(rows * ldk) <= ws.st.size());
  assert(static_cast<std::size_t>(2 * rows * d_v) <= ws.ot.size() &&
         static_cast<std::size_t>(rows * d) <= ws.qt.size());
  Index end[FlashPacket<Scalar>::size] = {};
  for (Index i = 0; i < rows; ++i) {
    for (Index c = 0; c < d; ++c)
      qs[i * d + c] = in.q[(i0 + i) * in.ldq + c] * in.logit_scale;
    m[i] = -inf;
    l[i] = Scalar(0);
    end[i] = std::min(kb, in.mask.key_end(i0 + i));
  }
  std::fill(o, o + rows * d_v, Scalar(0));
  const Index hi = end[rows - 1];  // the last row sees the most keys

  for (Index j0 = ka; j0 < hi; j0 += block_k) {
    const Index j1 = std::min(j0 + block_k, hi);
    const Index nk = j1 - j0;
    // Scores; keys a row does not see are -inf (never computed).
    for (Index i = 0; i < rows; ++i)
      std::fill(s + i * ldk, s + (i + 1) * ldk, -inf);
    for (Index j = j0; j < j1; ++j) {
      const Scalar* krow = in.k + j * in.ldk;
      for (Index i = 0; i < rows; ++i)
        if (j < end[i]) s[i * ldk + (j - j0)] = packet_dot(qs + i * d, krow, d);
    }
    // Online softmax along the keys of each row.
    for (Index i = 0; i < rows; ++i) {
      Scalar* srow = s + i * ldk;
      Packet pmx = ei::pset1<Packet>(-inf);
      for (Index j = 0; j < ldk; j += P)
        pmx = ei::pmax(pmx, ei::pload<Packet>(srow + j));
      Scalar tile_max = ei::predux_max(pmx);
      for (Index j = 0; j < nk; ++j)  // predux_max may drop a NaN: let the row see it
        if (srow[j] != srow[j]) tile_max = srow[j];
      // A NaN must win even against m = -inf (std::max(-inf, NaN) is -inf):
      // it then makes alpha, the probabilities and l NaN, as it should.
      const Scalar m_new = tile_max != tile_max ? tile_max : std::max(m[i], tile_max);
      if (m_new == -inf) continue;  // nothing seen yet
      const Scalar a = m[i] == m_new ? Scalar(1) : std::exp2(m[i] - m_new);
      const Packet msub = ei::pset1<Packet>(m_new);
      Packet sum = ei::pset1<Packet>(Scalar(0));
      for (Index j = 0; j < ldk; j += P) {
        const Packet e = exp2_nonpositive<Scalar>(ei::psub(ei::pload<Packet>(srow + j), msub));
        ei::pstore(srow + j, e);
        sum = ei::padd(sum, e);
      }
      l[i] = l[i] * a + ei::predux(sum);
      m[i] = m_new;
      alpha[i] = a;
    }
    // O = a O + P V: the tile's P V on its own (four keys at a time), then
    // added to the rescaled accumulator (blocked summation).
    for (Index i = 0; i < rows; ++i) {
      if (m[i] == -inf) continue;
      const Scalar* prow = s + i * ldk;
      Scalar* orow = ot + i * d_v;
      std::fill(orow, orow + d_v, Scalar(0));
      const Index nki = std::min(nk, std::max<Index>(0, end[i] - j0));
      Index j = 0;
      for (; j + 4 <= nki; j += 4) {
        const Scalar* v0 = in.v + (j0 + j) * in.ldv;
        const Scalar* v1 = v0 + in.ldv;
        const Scalar* v2 = v1 + in.ldv;
        const Scalar* v3 = v2 + in.ldv;
        const Packet p0 = ei::pset1<Packet>(prow[j]), p1 = ei::pset1<Packet>(prow[j + 1]);
        const Packet p2 = ei::pset1<Packet>(prow[j + 2]), p3 = ei::pset1<Packet>(prow[j + 3]);
        Index c = 0;
        for (; c + P <= d_v; c += P) {
          Packet acc = ei::ploadu<Packet>(orow + c);
          acc = ei::pmadd(p0, ei::ploadu<Packet>(v0 + c), acc);
          acc = ei::pmadd(p1, ei::ploadu<Packet>(v1 + c), acc);
          acc = ei::pmadd(p2, ei::ploadu<Packet>(v2 + c), acc);
          acc = ei::pmadd(p3, ei::ploadu<Packet>(v3 + c), acc);
          ei::pstoreu(orow + c, acc);
        }
        for (; c < d_v; ++c)
          orow[c] += prow[j] * v0[c] + prow[j + 1] * v1[c] + prow[j + 2] * v2[c] + prow[j + 3] * v3[c];
      }
      for (; j < nki; ++j) {
        const Scalar* vr = in.v + (j0 + j) * in.ldv;
        const Packet pj = ei::pset1<Packet>(prow[j]);
        Index c = 0;
        for (; c + P <= d_v; c += P)
          ei::pstoreu(orow + c, ei::pmadd(pj, ei::ploadu<Packet>(vr + c), ei::ploadu<Packet>(orow + c)));
        for (; c < d_v; ++c)
          orow[c] += prow[j] * vr[c];
      }
      Scalar* acc = o + i * d_v;
      for (Index c = 0; c < d_v; ++c)
        acc[c] = alpha[i] * acc[c] + orow[c];
    }
  }

  constexpr Scalar ln2 = Scalar(0.693147180559945309417232121458176568L);
  for (Index i = 0; i < rows; ++i) {
    Scalar* orow = out + i * ldo;
    if (l[i] == Scalar(0)) {
      std::fill(orow, orow + d_v, Scalar(0));
      lse[i] = -inf;
      continue;
    }
    const Scalar inv = Scalar(1) / l[i];
    for (Index c = 0; c < d_v; ++c)
      orow[c] = o[i * d_v + c] * inv;
    lse[i] = (m[i] + std::log2(l[i])) * ln2;
  }
}

/// The FlashConfig of 9c49f25.
struct FlashConfig {
  int threads = 0;
  Index block_q = 0;
  Index block_k = 0;
};

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

/// flash_attention_into of 9c49f25, for row-major inputs of one Scalar type
/// (its argument checks are the callers' business here).
template <typename Scalar>
void flash_attention_into(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, const RowMatrix<Scalar>& v,
                          RowMatrix<Scalar>& out, Vector<Scalar>& lse, const AttentionOptions& options = {},
                          const FlashConfig& config = {}) {
  const AttentionProblem pb = make_attention_problem("flash_attention", q, k, v, options);
  flash_run(flash_inputs<Scalar>(q, k, v, pb), config, out.data(), out.outerStride(), lse.data());
}

}  // namespace attnkit::baseline_9c49f25
