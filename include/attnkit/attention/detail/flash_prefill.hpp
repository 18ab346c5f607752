#pragma once

/// \file attnkit/attention/detail/flash_prefill.hpp
/// The prefill driver of the fused kernel: one block of up to Bq queries
/// against lists of key ranges, tile by tile, in the transposed layout of
/// attention/detail/flash_tile.hpp. Internal.
///
/// Masks: query row i sees the sinks [0, sink_end(i)) and the band
/// [key_begin(i), key_end(i)) (attnkit/core/mask.hpp), all non-decreasing in
/// i. The driver visits only key ranges that some row of the block sees (the
/// scheduler clips them); a tile every row sees fully runs unmasked; a tile
/// crossing a row's band or sink boundary is masked lane by lane: key j
/// reaches the lanes [first_lane[j], last_lane[j]), the scores of the others
/// become -inf after the policy's transform, and micro-kernel B skips them
/// explicitly, so a NaN in a value row a query does not see cannot reach it
/// (0 * NaN would).

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "attnkit/attention/detail/flash_tile.hpp"
#include "attnkit/attention/detail/online_softmax.hpp"
#include "attnkit/attention/problem.hpp"

namespace attnkit::detail {

/// Geometry of one query block: `rows` real queries padded to `npk` packets
/// (`bq` = npk * P lanes, the row stride of qt, st and ot).
struct BlockShape {
  Index rows, npk, bq;
};

template <typename Compute>
BlockShape block_shape(Index rows) {
  constexpr int P = FlashPacket<Compute>::size;
  const Index npk = (rows + P - 1) / P;
  return {rows, npk, npk * P};
}

/// Phase 0: the prepared queries of rows [i0, i0 + rows), transposed into qt
/// (padded lanes zero), their terms and row constants; m = -inf, l = 0, O^T = 0.
template <typename In>
void block_begin(const In& in, Index i0, const BlockShape& b, FlashWorkspace<typename In::Compute>& ws) {
  using C = typename In::Compute;
  constexpr C inf = std::numeric_limits<C>::infinity();
  C* qt = ws.qt.data();
  for (Index i = 0; i < b.bq; ++i) {
    if (i < b.rows) {
      ws.qconst[static_cast<std::size_t>(i)] = prepare_query_row(in, i0 + i, ws, ws.qterms.data() + i, b.bq);
      const C* prepared = ws.qprep.data();
      for (Index c = 0; c < in.d; ++c)
        qt[c * b.bq + i] = prepared[c];
    } else {
      for (Index c = 0; c < in.d; ++c)
        qt[c * b.bq + i] = C(0);
      for (int t = 0; t < In::query_terms; ++t)
        ws.qterms[static_cast<std::size_t>(t * b.bq + i)] = C(0);
      ws.qconst[static_cast<std::size_t>(i)] = C(0);
    }
    ws.m[static_cast<std::size_t>(i)] = -inf;
    ws.l[static_cast<std::size_t>(i)] = C(0);
  }
  std::fill(ws.ot.begin(), ws.ot.begin() + in.d_v * b.bq, C(0));
  if constexpr (In::bf16_dot) {
    // The stored bfloat16 queries themselves, paired by dimension (the scale
    // is applied to the products: nothing is rounded again).
    const Index pairs = (in.d + 1) / 2;
    for (Index i = 0; i < b.bq; ++i) {
      const Eigen::bfloat16* qrow = in.q + (i0 + i) * in.ldq;
      for (Index c2 = 0; c2 < pairs; ++c2) {
        std::uint32_t w = 0;
        if (i < b.rows) {
          std::uint16_t lo, hi = 0;
          std::memcpy(&lo, qrow + 2 * c2, sizeof lo);
          if (2 * c2 + 1 < in.d) std::memcpy(&hi, qrow + 2 * c2 + 1, sizeof hi);
          w = static_cast<std::uint32_t>(lo) | (static_cast<std::uint32_t>(hi) << 16);
        }
        ws.qt2[static_cast<std::size_t>(c2 * b.bq + i)] = w;
      }
    }
  }
}

/// Phase 1 (micro-kernel A and the policy's transform): S^T for the keys at
/// positions [j0, j0 + nk) into st.
template <typename In>
void tile_scores(const In& in, const BlockShape& b, Index j0, Index nk,
                 FlashWorkspace<typename In::Compute>& ws) {
  using C = typename In::Compute;
  constexpr int P = FlashPacket<C>::size, MR = FlashPacket<C>::mr, NR = FlashPacket<C>::nr;
  tile_key_terms(in, j0, nk, ws);
#if defined(__AVX512BF16__)
  if constexpr (In::bf16_dot) {
    for (Index jr = 0; jr < nk; jr += MR) {
      const int r = static_cast<int>(std::min<Index>(MR, nk - jr));
      for (Index pq = 0; pq < b.npk; pq += NR) {
        const int c = static_cast<int>(std::min<Index>(NR, b.npk - pq));
        dispatch_rows<MR>(r, [&](auto R) {
          dispatch_rows<NR>(c, [&](auto CC) {
            qk_micro_bf16<decltype(R)::value, decltype(CC)::value>(
                in.key_row(j0 + jr), in.ldk, in.d, ws.qt2.data() + pq * P, b.bq, in.score.factor,
                ws.st.data() + jr * b.bq + pq * P);
          });
        });
      }
    }
    return;
  }
#endif
  // Keys stored in another type are converted once per tile (L1-resident).
  constexpr bool staged = !std::is_same_v<typename In::StoredK, C>;
  if constexpr (staged) stage_rows(in.key_row(j0), in.ldk, nk, in.d, ws.kstage.data());
  for (Index jr = 0; jr < nk; jr += MR) {
    const int r = static_cast<int>(std::min<Index>(MR, nk - jr));
    for (Index pq = 0; pq < b.npk; pq += NR) {
      const int c = static_cast<int>(std::min<Index>(NR, b.npk - pq));
      C* srow = ws.st.data() + jr * b.bq + pq * P;
      const C* qcol = ws.qt.data() + pq * P;
      const C* kt = ws.kterms.data() + jr;
      const C* qterms = ws.qterms.data() + pq * P;
      dispatch_rows<MR>(r, [&](auto R) {
        dispatch_rows<NR>(c, [&](auto CC) {
          if constexpr (staged)
            qk_micro<decltype(R)::value, decltype(CC)::value>(in, ws.kstage.data() + jr * in.d, in.d, qcol,
                                                              b.bq, srow, kt, ws.block_k, qterms);
          else
            qk_micro<decltype(R)::value, decltype(CC)::value>(in, in.key_row(j0 + jr), in.ldk, qcol, b.bq,
                                                              srow, kt, ws.block_k, qterms);
        });
      });
    }
  }
}

/// True when every row of the block [i0, i0 + rows) sees every key of
/// [j0, j1).
inline bool tile_is_full(const MaskLayout& mask, Index i0, Index rows, Index j0, Index j1) {
  if (j1 > mask.key_end(i0)) return false;  // beyond the first row's band end
  const Index non_sink = std::max(j0, mask.sinks());
  return non_sink >= j1 || non_sink >= mask.key_begin(i0 + rows - 1);
}

/// Phase 1b, crossing tiles only: key j (position j0 + t) reaches the lanes
/// [first_lane[t], last_lane[t]); the scores of the other real lanes become
/// -inf. Returns the masking micro-kernel B needs: 1 (lower lane bounds
/// only) or 2 (upper bounds too).
template <typename In>
int tile_mask(const In& in, Index i0, const BlockShape& b, Index j0, Index nk,
              FlashWorkspace<typename In::Compute>& ws) {
  using C = typename In::Compute;
  constexpr C inf = std::numeric_limits<C>::infinity();
  const MaskLayout& mask = in.mask;
  Index lo = 0, hi = 0;
  int kind = 1;
  for (Index t = 0; t < nk; ++t) {
    const Index j = j0 + t;
    while (lo < b.rows && mask.key_end(i0 + lo) <= j)
      ++lo;
    Index last = b.bq;
    if (mask.banded() && j >= mask.sinks()) {
      while (hi < b.rows && mask.key_begin(i0 + hi) <= j)
        ++hi;
      last = hi;
      if (last < b.bq) kind = 2;
    }
    ws.first_lane[static_cast<std::size_t>(t)] = lo;
    ws.last_lane[static_cast<std::size_t>(t)] = last;
    C* srow = ws.st.data() + t * b.bq;
    for (Index i = 0; i < std::min(lo, b.rows); ++i)
      srow[i] = -inf;
    for (Index i = std::max(lo, last); i < b.rows; ++i)
      srow[i] = -inf;
  }
  return kind;
}

/// Phase 3 (micro-kernel B): O^T = alpha O^T + V^T P^T for the keys at
/// positions [j0, j0 + nk), skipping masked lanes explicitly in crossing
/// tiles (masked = the kind tile_mask returned, 0 for a full tile).
template <typename In>
void tile_accumulate(const In& in, const BlockShape& b, Index j0, Index nk, int masked,
                     FlashWorkspace<typename In::Compute>& ws) {
  using C = typename In::Compute;
  constexpr int P = FlashPacket<C>::size, MR = FlashPacket<C>::mr, NR = FlashPacket<C>::nr;
  // Values stored in another type are converted once per tile (L1-resident).
  constexpr bool staged = !std::is_same_v<typename In::StoredV, C>;
  const C* vstage = ws.vstage.data();
  if constexpr (staged) stage_rows(in.value_row(j0), in.ldv, nk, in.d_v, ws.vstage.data());
  const auto* vtile = [&] {
    if constexpr (staged)
      return vstage;
    else
      return in.value_row(j0);
  }();
  const Index ldv = staged ? in.d_v : in.ldv;
  for (Index cr = 0; cr < in.d_v; cr += MR) {
    const int r = static_cast<int>(std::min<Index>(MR, in.d_v - cr));
    for (Index pq = 0; pq < b.npk; pq += NR) {
      const int c = static_cast<int>(std::min<Index>(NR, b.npk - pq));
      const C* pcol = ws.st.data() + pq * P;
      C* ocol = ws.ot.data() + cr * b.bq + pq * P;
      const C* acol = ws.alpha.data() + pq * P;
      const C* lcol = ws.lane.data() + pq * P;
      dispatch_rows<MR>(r, [&](auto R) {
        dispatch_rows<NR>(c, [&](auto CC) {
          constexpr int RR = decltype(R)::value, NC = decltype(CC)::value;
          if (masked == 2)
            pv_micro<RR, NC, 2>(vtile + cr, ldv, pcol, b.bq, nk, ocol, acol, lcol, ws.first_lane.data(),
                                ws.last_lane.data());
          else if (masked == 1)
            pv_micro<RR, NC, 1>(vtile + cr, ldv, pcol, b.bq, nk, ocol, acol, lcol, ws.first_lane.data(),
                                nullptr);
          else
            pv_micro<RR, NC, 0>(vtile + cr, ldv, pcol, b.bq, nk, ocol, acol, lcol, nullptr, nullptr);
        });
      });
    }
  }
}

/// Phase 4: O = (O^T)^T / l, natural-log lse plus the row constants.
template <typename Compute>
void block_end(const BlockShape& b, Index d_v, const FlashWorkspace<Compute>& ws, Compute* out, Index ldo,
               Compute* lse) {
  for (Index i = 0; i < b.rows; ++i) {
    const auto ui = static_cast<std::size_t>(i);
    finish_row(ws.m[ui], ws.l[ui], ws.ot.data() + i, b.bq, d_v, ws.qconst[ui], out + i * ldo, lse + i);
  }
}

/// Attention of query rows [i0, i1) over the key positions of the sorted,
/// disjoint ranges segs[0 .. nseg) (each intersected with every row's mask),
/// tile by tile. Writes the normalised output rows to out (row stride ldo) and
/// their natural-log lse; a row that sees no key in the ranges gets a zero
/// row and lse = -inf. Requires i1 - i0 <= block_q and a workspace reserved
/// for (d, d_v, block_q, block_k).
template <typename In>
void flash_block(const In& in, Index i0, Index i1, const KeyRange* segs, int nseg, Index block_k,
                 FlashWorkspace<typename In::Compute>& ws, typename In::Compute* out, Index ldo,
                 typename In::Compute* lse) {
  using C = typename In::Compute;
  const BlockShape b = block_shape<C>(i1 - i0);
  assert(i1 > i0 && static_cast<std::size_t>(in.d * b.bq) <= ws.qt.size() &&
         static_cast<std::size_t>(block_k * b.bq) <= ws.st.size() &&
         static_cast<std::size_t>(in.d_v * b.bq) <= ws.ot.size() && block_k <= ws.block_k);
  block_begin(in, i0, b, ws);
  const Index last_end = in.mask.key_end(i1 - 1);  // the last row sees up to here
  for (int s = 0; s < nseg; ++s) {
    const Index hi = std::min(segs[s].end, last_end);
    for (Index j0 = segs[s].begin; j0 < hi; j0 += block_k) {
      const Index nk = std::min(j0 + block_k, hi) - j0;
      const bool crossing = !tile_is_full(in.mask, i0, b.rows, j0, j0 + nk);
      tile_scores(in, b, j0, nk, ws);
      const int masked = crossing ? tile_mask(in, i0, b, j0, nk, ws) : 0;
      tile_softmax(b.npk, b.bq, nk, ws);
      tile_accumulate(in, b, j0, nk, masked, ws);
    }
  }
  block_end(b, in.d_v, ws, out, ldo, lse);
}

}  // namespace attnkit::detail
