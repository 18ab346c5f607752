#pragma once

/// \file attnkit/attention/detail/flash_decode.hpp
/// The decode driver of the fused kernel: a few query rows (at most half a
/// packet) against many keys. Keys run along the SIMD lanes: each key row is
/// read once and dotted with every query that sees it, the softmax runs over
/// packets of keys (attention/detail/online_softmax.hpp), and P V accumulates
/// four keys at a time into an L1-resident output. Memory traffic: K and V
/// once, with software prefetch of both streams. Internal.

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

#include "attnkit/attention/detail/flash_tile.hpp"
#include "attnkit/attention/detail/online_softmax.hpp"
#include "attnkit/attention/problem.hpp"

namespace attnkit::detail {

/// Largest number of query rows the decode kernel takes (half a packet, for
/// packets of 8 or more lanes); more rows go to the transposed kernel, whose
/// SIMD lanes are then mostly busy.
template <typename Compute>
constexpr Index decode_max_rows() {
  return FlashPacket<Compute>::size >= 8 ? FlashPacket<Compute>::size / 2 : 0;
}

/// Dot product of a Compute row with a stored row, with packets (two
/// accumulators) and a scalar tail.
template <typename Compute, typename Stored>
EIGEN_STRONG_INLINE Compute packet_dot(const Compute* a, const Stored* b, Index d) {
  using Packet = typename FlashPacket<Compute>::Packet;
  constexpr int P = FlashPacket<Compute>::size;
  Packet acc0 = ei::pset1<Packet>(Compute(0)), acc1 = acc0;
  Index c = 0;
  for (; c + 2 * P <= d; c += 2 * P) {
    acc0 = ei::pmadd(ei::ploadu<Packet>(a + c), load_packet<Packet>(b + c), acc0);
    acc1 = ei::pmadd(ei::ploadu<Packet>(a + c + P), load_packet<Packet>(b + c + P), acc1);
  }
  if (c + P <= d) {
    acc0 = ei::pmadd(ei::ploadu<Packet>(a + c), load_packet<Packet>(b + c), acc0);
    c += P;
  }
  Compute sum = ei::predux(ei::padd(acc0, acc1));
  for (; c < d; ++c)
    sum += a[c] * to_compute<Compute>(b[c]);
  return sum;
}

/// How many key rows ahead the decode kernel prefetches K (16 rows of d =
/// 128 floats are 8 KB, a few hundred nanoseconds of streaming).
inline constexpr Index decode_prefetch_keys = 16;

/// Asks the cache for the bytes from p on, one hint per 64 bytes up to p +
/// bytes (when p is not 64-byte aligned the row's last line is left to the
/// hardware prefetcher). A hint: it never faults, but p must point into an
/// object, as every caller's row does. A no-op on compilers without
/// __builtin_prefetch.
EIGEN_STRONG_INLINE void prefetch_bytes(const void* p, Index bytes) {
#if defined(__GNUC__) || defined(__clang__)
  const char* c = static_cast<const char*>(p);
  for (Index b = 0; b < bytes; b += 64)
    __builtin_prefetch(c + b);
#else
  static_cast<void>(p);
  static_cast<void>(bytes);
#endif
}

/// orow[0, d_v) += sum_{t in [t0, t1)} prow[t] * V[j0 + t], four keys at a time.
template <typename In>
EIGEN_STRONG_INLINE void decode_accumulate(const In& in, Index j0, Index t0, Index t1,
                                           const typename In::Compute* prow, typename In::Compute* orow) {
  using C = typename In::Compute;
  using Packet = typename FlashPacket<C>::Packet;
  constexpr int P = FlashPacket<C>::size;
  const Index d_v = in.d_v;
  Index t = t0;
  for (; t + 4 <= t1; t += 4) {
    const auto* v0 = in.value_row(j0 + t);
    const auto* v1 = v0 + in.ldv;
    const auto* v2 = v1 + in.ldv;
    const auto* v3 = v2 + in.ldv;
    const Packet p0 = ei::pset1<Packet>(prow[t]), p1 = ei::pset1<Packet>(prow[t + 1]);
    const Packet p2 = ei::pset1<Packet>(prow[t + 2]), p3 = ei::pset1<Packet>(prow[t + 3]);
    Index c = 0;
    for (; c + P <= d_v; c += P) {
      Packet acc = ei::ploadu<Packet>(orow + c);
      acc = ei::pmadd(p0, load_packet<Packet>(v0 + c), acc);
      acc = ei::pmadd(p1, load_packet<Packet>(v1 + c), acc);
      acc = ei::pmadd(p2, load_packet<Packet>(v2 + c), acc);
      acc = ei::pmadd(p3, load_packet<Packet>(v3 + c), acc);
      ei::pstoreu(orow + c, acc);
    }
    for (; c < d_v; ++c)
      orow[c] += prow[t] * to_compute<C>(v0[c]) + prow[t + 1] * to_compute<C>(v1[c]) +
                 prow[t + 2] * to_compute<C>(v2[c]) + prow[t + 3] * to_compute<C>(v3[c]);
  }
  for (; t < t1; ++t) {
    const auto* vr = in.value_row(j0 + t);
    const Packet pj = ei::pset1<Packet>(prow[t]);
    Index c = 0;
    for (; c + P <= d_v; c += P)
      ei::pstoreu(orow + c, ei::pmadd(pj, load_packet<Packet>(vr + c), ei::ploadu<Packet>(orow + c)));
    for (; c < d_v; ++c)
      orow[c] += prow[t] * to_compute<C>(vr[c]);
  }
}

/// Decode kernel: the same contract as flash_block for a few query rows
/// (rows <= decode_max_rows) against many keys.
template <typename In>
void decode_block(const In& in, Index i0, Index i1, const KeyRange* segs, int nseg, Index block_k,
                  FlashWorkspace<typename In::Compute>& ws, typename In::Compute* out, Index ldo,
                  typename In::Compute* lse) {
  using C = typename In::Compute;
  using Packet = typename FlashPacket<C>::Packet;
  constexpr int P = FlashPacket<C>::size;
  constexpr C inf = std::numeric_limits<C>::infinity();
  const Index rows = i1 - i0, d = in.d, d_v = in.d_v;
  const Index ldk = (block_k + P - 1) / P * P;  // padded score row
  C* qs = ws.qt.data();                         // rows x d, prepared queries
  C* s = ws.st.data();                          // rows x ldk scores / probabilities
  C* o = ws.ot.data();                          // rows x d_v accumulators
  C* ot = o + rows * d_v;                       // rows x d_v: this tile's P V
  C* m = ws.m.data();
  C* l = ws.l.data();
  C* alpha = ws.alpha.data();
  assert(rows >= 1 && rows <= decode_max_rows<C>());
  assert(block_k % P == 0 && block_k <= ws.block_k && static_cast<std::size_t>(rows * ldk) <= ws.st.size());
  assert(static_cast<std::size_t>(2 * rows * d_v) <= ws.ot.size() &&
         static_cast<std::size_t>(rows * d) <= ws.qt.size());
  const MaskLayout& mask = in.mask;
  Index end[P] = {}, begin[P] = {}, sink[P] = {};
  for (Index i = 0; i < rows; ++i) {
    ws.qconst[static_cast<std::size_t>(i)] = prepare_query_row(in, i0 + i, ws, ws.qterms.data() + i, P);
    std::copy(ws.qprep.begin(), ws.qprep.begin() + d, qs + i * d);
    m[i] = -inf;
    l[i] = C(0);
    end[i] = mask.key_end(i0 + i);
    begin[i] = mask.key_begin(i0 + i);
    sink[i] = mask.sink_end(i0 + i);
  }
  std::fill(o, o + rows * d_v, C(0));
  const Index last_end = end[rows - 1];  // the last row sees the most keys

  for (int sg = 0; sg < nseg; ++sg) {
    const Index hi = std::min(segs[sg].end, last_end);
    for (Index j0 = segs[sg].begin; j0 < hi; j0 += block_k) {
      const Index j1 = std::min(j0 + block_k, hi);
      const Index nk = j1 - j0;
      // Row i sees the tile entries [a0, a1) (sinks) and [b0, b1) (band).
      Index a1[P], b0[P], b1[P];
      for (Index i = 0; i < rows; ++i) {
        a1[i] = std::clamp<Index>(sink[i] - j0, 0, nk);
        b0[i] = std::clamp<Index>(begin[i] - j0, 0, nk);
        b1[i] = std::clamp<Index>(end[i] - j0, 0, nk);
        if (b1[i] < b0[i]) b1[i] = b0[i];
      }
      // Scores; entries a row does not see are -inf (never computed).
      tile_key_terms(in, j0, nk, ws);
      for (Index i = 0; i < rows; ++i)
        std::fill(s + i * ldk, s + (i + 1) * ldk, In::transforms ? C(0) : -inf);
      for (Index t = 0; t < nk; ++t) {
        const auto* krow = in.key_row(j0 + t);
        // Software prefetch: the key row decode_prefetch_keys ahead, and this
        // key's value row, which P V reads after the tile's softmax (without
        // it the value stream starts cold in every tile).
        if (j0 + t + decode_prefetch_keys < hi)
          prefetch_bytes(in.key_row(j0 + t + decode_prefetch_keys), d * Index(sizeof(typename In::StoredK)));
        prefetch_bytes(in.value_row(j0 + t), d_v * Index(sizeof(typename In::StoredV)));
        for (Index i = 0; i < rows; ++i)
          if (t < a1[i] || (t >= b0[i] && t < b1[i])) s[i * ldk + t] = packet_dot(qs + i * d, krow, d);
      }
      if constexpr (In::transforms) {
        constexpr int TK = In::key_terms > 0 ? In::key_terms : 1;
        constexpr int TQ = In::query_terms > 0 ? In::query_terms : 1;
        for (Index i = 0; i < rows; ++i) {
          Packet qterm[TQ];
          for (int q = 0; q < In::query_terms; ++q)
            qterm[q] = ei::pset1<Packet>(ws.qterms[static_cast<std::size_t>(q * P + i)]);
          C* srow = s + i * ldk;
          for (Index t = 0; t < ldk; t += P) {
            Packet kterm[TK];
            for (int q = 0; q < In::key_terms; ++q)
              kterm[q] = ei::pload<Packet>(ws.kterms.data() + q * ws.block_k + t);
            ei::pstore(srow + t, in.score.transform(ei::pload<Packet>(srow + t), kterm, qterm));
          }
          // Back to -inf where the row sees nothing (after the transform,
          // which need not keep -inf).
          for (Index t = 0; t < ldk; ++t)
            if (!(t < a1[i] || (t >= b0[i] && t < b1[i]))) srow[t] = -inf;
        }
      }
      // Online softmax along the keys of each row.
      bool seen[P];
      for (Index i = 0; i < rows; ++i)
        seen[i] = row_softmax(s + i * ldk, ldk, nk, m[i], l[i], alpha[i]);
      // O = a O + P V: the tile's P V on its own (four keys at a time), then
      // added to the rescaled accumulator (blocked summation).
      for (Index i = 0; i < rows; ++i) {
        if (!seen[i]) continue;
        const C* prow = s + i * ldk;
        C* orow = ot + i * d_v;
        std::fill(orow, orow + d_v, C(0));
        if (a1[i] > 0) decode_accumulate(in, j0, 0, a1[i], prow, orow);  // sinks (banded masks only)
        decode_accumulate(in, j0, std::max(a1[i], b0[i]), b1[i], prow, orow);
        // acc = alpha acc + orow, one fused multiply-add per entry (written
        // out so the result does not depend on how a compiler vectorises it).
        C* acc = o + i * d_v;
        const Packet a = ei::pset1<Packet>(alpha[i]);
        Index c = 0;
        for (; c + P <= d_v; c += P)
          ei::pstoreu(acc + c, ei::pmadd(a, ei::ploadu<Packet>(acc + c), ei::ploadu<Packet>(orow + c)));
        for (; c < d_v; ++c)
          acc[c] = std::fma(alpha[i], acc[c], orow[c]);
      }
    }
  }

  for (Index i = 0; i < rows; ++i)
    finish_row(m[i], l[i], o + i * d_v, 1, d_v, ws.qconst[static_cast<std::size_t>(i)], out + i * ldo,
               lse + i);
}

}  // namespace attnkit::detail
