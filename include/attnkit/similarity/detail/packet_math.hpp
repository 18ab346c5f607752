#pragma once

/// \file attnkit/similarity/detail/packet_math.hpp
/// Elementwise functions the score policies need on Eigen packets (and on
/// plain scalars), written once for float and double packets alike.

#include <type_traits>

#include <Eigen/Core>

namespace attnkit::detail {

namespace ei = Eigen::internal;

/// An estimate of 1 / x for x > 0: the hardware reciprocal estimate for float
/// packets where the instruction set has one (AVX-512 vrcp14ps: relative
/// error < 2^-14; AVX and SSE rcpps: < 1.5 * 2^-12), the exact quotient
/// otherwise (double packets, scalars, other instruction sets).
template <typename Packet>
EIGEN_STRONG_INLINE Packet packet_reciprocal_estimate(const Packet& x) {
  using Scalar = typename ei::unpacket_traits<Packet>::type;
  [[maybe_unused]] constexpr int size = ei::unpacket_traits<Packet>::size;
  [[maybe_unused]] constexpr bool floats = std::is_same_v<Scalar, float> && !std::is_same_v<Packet, float>;
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (floats && size == 16) return _mm512_rcp14_ps(x);
#endif
#if defined(EIGEN_VECTORIZE_AVX)
  if constexpr (floats && size == 8) return _mm256_rcp_ps(x);
#endif
#if defined(EIGEN_VECTORIZE_SSE)
  if constexpr (floats && size == 4) return _mm_rcp_ps(x);
#endif
  return ei::pdiv(ei::pset1<Packet>(Scalar(1)), x);
}

/// log(1 + x) for x >= 0 (and NaN -> NaN, +inf -> +inf), a few ulp: with u =
/// 1 + x rounded, c = x - (u - 1) is exact (u - 1 is, for 1 <= u < 2^p) and
/// log1p(x) = log(u) + log(1 + c / u) = log(u) + c / u up to (c / u)^2 / 2,
/// where |c / u| <= the unit roundoff. c / u is formed with the reciprocal
/// estimate refined by one Newton step (relative error <= e^2 + a few ulp for
/// an estimate within e: 2^-28 for vrcp14ps, 2^-23 for rcpps), so even where
/// x is tiny and c is of the size of the result the quotient costs at most
/// about one ulp. x itself where 1 + x rounds to 1 (log1p(x) = x to within
/// x^2 / 2).
template <typename Packet>
EIGEN_STRONG_INLINE Packet packet_log1p(const Packet& x) {
  using Scalar = typename ei::unpacket_traits<Packet>::type;
  const Packet one = ei::pset1<Packet>(Scalar(1));
  const Packet u = ei::padd(one, x);
  const Packet c = ei::psub(x, ei::psub(u, one));
  Packet inv = packet_reciprocal_estimate(u);
  inv = ei::pmul(inv, ei::psub(ei::pset1<Packet>(Scalar(2)), ei::pmul(u, inv)));  // one Newton step
  const Packet r = ei::padd(ei::plog(u), ei::pmul(c, inv));
  // u == inf: c is NaN (inf - inf); the answer is inf.
  const Packet small = ei::pcmp_eq(u, one);
  const Packet big = ei::pcmp_eq(u, ei::pset1<Packet>(Eigen::NumTraits<Scalar>::infinity()));
  return ei::pselect(small, x, ei::pselect(big, u, r));
}

/// tanh(x), elementwise: Eigen's rational approximation for float packets
/// (a few ulp; +-1 beyond |x| = 7.9988 with FMA, 7.9053 without), and
/// 1 - 2 / (1 + e^(2|x|)) with the sign restored otherwise (absolute error a
/// few ulp, which is what a logit needs). NaN -> NaN.
template <typename Packet>
EIGEN_STRONG_INLINE Packet packet_tanh(const Packet& x) {
  using Scalar = typename ei::unpacket_traits<Packet>::type;
  if constexpr (std::is_same_v<Scalar, float>) {
    return ei::ptanh(x);
  } else {
    const Packet one = ei::pset1<Packet>(Scalar(1)), two = ei::pset1<Packet>(Scalar(2));
    const Packet ax = ei::pabs(x);
    // e^(2|x|) overflows to inf beyond |x| ~ 354: then 2 / inf = 0 and tanh = 1.
    const Packet t = ei::psub(one, ei::pdiv(two, ei::padd(one, ei::pexp(ei::pmul(two, ax)))));
    return ei::pselect(ei::pcmp_lt(x, ei::pzero(x)), ei::pnegate(t), t);
  }
}

}  // namespace attnkit::detail
