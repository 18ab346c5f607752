#pragma once

/// \file attnkit/attention/detail/online_softmax.hpp
/// The online-softmax recurrence of the fused kernel, written once for both
/// of its layouts: prefill (queries along SIMD lanes, a tile's keys down the
/// rows) and decode (keys along the lanes of one query's row). Internal.
///
/// For a running maximum m (base-2 logits), running sum l and unnormalised
/// output O, one tile with maximum t updates
///   m' = max(m, t),  a = 2^(m - m'),  p_j = 2^(s_j - m'),  l' = a l + sum_j p_j,
/// and after the last tile the row is O / l with lse = (m + log2 l) ln 2
/// (+ the policy's row constant). A row that has seen no finite logit keeps
/// m = -inf; its logits are then reduced by 0 instead of m', so -inf logits
/// give p = 0 and not NaN. A NaN logit makes p, l and the row NaN.

#include <algorithm>
#include <cmath>
#include <limits>

#include "attnkit/attention/detail/flash_tile.hpp"

namespace attnkit::detail {

/// The rescale step on packets (or on one scalar row): returns m' and sets
/// alpha = 2^(m - m') and m_sub, the value to subtract from the tile's logits.
template <typename Compute, typename Packet>
EIGEN_STRONG_INLINE Packet online_rescale(const Packet& m_old, const Packet& tile_max, Packet& alpha,
                                          Packet& m_sub) {
  constexpr Compute inf = std::numeric_limits<Compute>::infinity();
  const Packet neg_inf = ei::pset1<Packet>(-inf);
  const Packet m_new = ei::pmax(m_old, tile_max);
  alpha = ei::pselect(ei::pcmp_eq(m_old, m_new), ei::pset1<Packet>(Compute(1)),
                      exp2_nonpositive<Compute>(ei::psub(m_old, m_new)));
  m_sub = ei::pselect(ei::pcmp_eq(m_new, neg_inf), ei::pzero(m_new), m_new);
  return m_new;
}

/// Packet maximum of `count` packets at s, s + stride, ... (lane-wise).
template <typename Packet, typename Compute>
EIGEN_STRONG_INLINE Packet strided_max(const Compute* s, Index stride, Index count) {
  Packet mx = ei::pset1<Packet>(-std::numeric_limits<Compute>::infinity());
  for (Index j = 0; j < count; ++j)
    mx = ei::pmax(mx, ei::pload<Packet>(s + j * stride));
  return mx;
}

/// Overwrites `count` packets at s, s + stride, ... by 2^(x - m_sub) and
/// returns their lane-wise sum, accumulated in `Chains` interleaved partial
/// sums (1 or 2) added at the end.
template <int Chains, typename Packet, typename Compute>
EIGEN_STRONG_INLINE Packet exp2_strided(Compute* s, Index stride, Index count, const Packet& m_sub) {
  static_assert(Chains == 1 || Chains == 2, "one or two partial sums");
  Packet sum0 = ei::pzero(m_sub), sum1 = ei::pzero(m_sub);
  Index j = 0;
  if constexpr (Chains == 2) {
    for (; j + 1 < count; j += 2) {
      Compute* s0 = s + j * stride;
      Compute* s1 = s0 + stride;
      const Packet e0 = exp2_nonpositive<Compute>(ei::psub(ei::pload<Packet>(s0), m_sub));
      const Packet e1 = exp2_nonpositive<Compute>(ei::psub(ei::pload<Packet>(s1), m_sub));
      ei::pstore(s0, e0);
      ei::pstore(s1, e1);
      sum0 = ei::padd(sum0, e0);
      sum1 = ei::padd(sum1, e1);
    }
  }
  for (; j < count; ++j) {
    Compute* s0 = s + j * stride;
    const Packet e0 = exp2_nonpositive<Compute>(ei::psub(ei::pload<Packet>(s0), m_sub));
    ei::pstore(s0, e0);
    sum0 = ei::padd(sum0, e0);
  }
  if constexpr (Chains == 2)
    return ei::padd(sum0, sum1);
  else
    return sum0;
}

/// Prefill layout: the online softmax of one tile of nk keys (rows of st,
/// stride bq) for the npk query packets of a block; updates ws.m, ws.l,
/// ws.alpha and overwrites st by P^T.
template <typename Compute>
void tile_softmax(Index npk, Index bq, Index nk, FlashWorkspace<Compute>& ws) {
  using Packet = typename FlashPacket<Compute>::Packet;
  constexpr int P = FlashPacket<Compute>::size;
  Compute* st = ws.st.data();
  for (Index p = 0; p < npk; ++p) {
    const Packet tile_max = strided_max<Packet>(st + p * P, bq, nk);
    Packet a, m_sub;
    const Packet m_new = online_rescale<Compute>(ei::pload<Packet>(ws.m.data() + p * P), tile_max, a, m_sub);
    const Packet sum = exp2_strided<2>(st + p * P, bq, nk, m_sub);
    ei::pstore(ws.l.data() + p * P, ei::pmadd(ei::pload<Packet>(ws.l.data() + p * P), a, sum));
    ei::pstore(ws.m.data() + p * P, m_new);
    ei::pstore(ws.alpha.data() + p * P, a);
  }
}

/// Decode layout: the online softmax of one query row's padded tile of
/// scores (ld entries, a multiple of the packet size; nk of them may hold
/// logits, the rest -inf). Updates m, l and alpha of the row and overwrites
/// the row by its probabilities. Returns false (and changes nothing) while
/// the row has seen no finite logit.
template <typename Compute>
bool row_softmax(Compute* srow, Index ld, Index nk, Compute& m, Compute& l, Compute& alpha) {
  using Packet = typename FlashPacket<Compute>::Packet;
  constexpr int P = FlashPacket<Compute>::size;
  constexpr Compute inf = std::numeric_limits<Compute>::infinity();
  Compute tile_max = ei::predux_max(strided_max<Packet>(srow, P, ld / P));
  for (Index j = 0; j < nk; ++j)  // predux_max may drop a NaN: let the row see it
    if (srow[j] != srow[j]) tile_max = srow[j];
  // A NaN must win even against m = -inf (max(-inf, NaN) is -inf): it then
  // makes alpha, the probabilities and l NaN, as it should.
  if (tile_max != tile_max) {
    m = tile_max;
  } else if (std::max(m, tile_max) == -inf) {
    return false;  // nothing seen yet
  }
  Compute m_sub;
  const Compute m_new = online_rescale<Compute>(m, tile_max, alpha, m_sub);
  const Packet sum = exp2_strided<1>(srow, P, ld / P, ei::pset1<Packet>(m_sub));
  l = l * alpha + ei::predux(sum);
  m = m_new;
  return true;
}

/// The epilogue, one row: out = acc / l (acc's d_v entries at stride
/// acc_stride), lse = (m + log2 l) ln 2 + constant. A row with l = 0 (no key
/// seen) becomes zero with lse = -inf.
template <typename Compute>
EIGEN_STRONG_INLINE void finish_row(Compute m, Compute l, const Compute* acc, Index acc_stride, Index d_v,
                                    Compute constant, Compute* out, Compute* lse) {
  constexpr Compute inf = std::numeric_limits<Compute>::infinity();
  constexpr Compute ln2 = Compute(0.693147180559945309417232121458176568L);
  if (l == Compute(0)) {
    std::fill(out, out + d_v, Compute(0));
    *lse = -inf;
    return;
  }
  const Compute inv = Compute(1) / l;
  for (Index c = 0; c < d_v; ++c)
    out[c] = acc[c * acc_stride] * inv;
  *lse = (m + std::log2(l)) * ln2;
  if (constant != Compute(0)) *lse += constant;  // (a NaN constant is added too)
}

}  // namespace attnkit::detail
