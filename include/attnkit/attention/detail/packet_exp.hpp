#pragma once

/// \file attnkit/attention/detail/packet_exp.hpp
/// exp2 on Eigen packets for the arguments online softmax produces: t <= 0,
/// t = -inf (masked entry) or NaN. Written against Eigen::internal packets,
/// so the same code is AVX-512, AVX2, SSE or scalar depending on the
/// compiler flags.
///
/// float: t = n + f with n = round(t) (magic-number rounding, exact for
/// t >= -2^22) and
/// f in [-1/2, 1/2]; 2^f by a degree-6 polynomial (relative error 1.6e-8 in
/// exact arithmetic with its float coefficients; evaluated in float at most
/// 1.8 u = 1.05e-7 with fused multiply-adds and 2.3 u = 1.35e-7 without,
/// u = 2^-24, i.e. within 2.3 ulp; tests/attention/packet_exp_test.cpp
/// derives and checks these); 2^n assembled in the exponent bits. Arguments
/// below -126 (including -inf) give exactly 0 (not a denormal), NaN gives NaN.
/// double: Eigen's pexp, arguments below -1022 giving exactly 0. Scalar
/// "packets" (non-vectorised builds): std::exp2 with the same special cases
/// (exactly 0 below -126 for float, -1022 for double).

#include <cmath>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

namespace attnkit::detail {

namespace ei = Eigen::internal;

template <typename Packet>
EIGEN_STRONG_INLINE Packet exp2_nonpositive_float(const Packet& t) {
  using PacketI = typename ei::unpacket_traits<Packet>::integer_packet;
  // No clamp is needed: for t < -126 (and t = -inf, where f becomes NaN) the
  // result is garbage that the final select replaces by 0; a NaN t stays NaN
  // through the polynomial.
  const Packet lo = ei::pset1<Packet>(-126.0f);
  // 1.5 * 2^23: adding it rounds t to an integer kept in the low mantissa bits.
  const Packet magic = ei::pset1<Packet>(12582912.0f);
  const Packet shifted = ei::padd(t, magic);
  const Packet n = ei::psub(shifted, magic);
  const Packet f = ei::psub(t, n);
  Packet p = ei::pset1<Packet>(1.534580806037411e-4f);
  p = ei::pmadd(p, f, ei::pset1<Packet>(1.3399930903688073e-3f));
  p = ei::pmadd(p, f, ei::pset1<Packet>(9.618489071726799e-3f));
  p = ei::pmadd(p, f, ei::pset1<Packet>(5.550328642129898e-2f));
  p = ei::pmadd(p, f, ei::pset1<Packet>(2.4022646248340607e-1f));
  p = ei::pmadd(p, f, ei::pset1<Packet>(6.931471824645996e-1f));
  p = ei::pmadd(p, f, ei::pset1<Packet>(1.0f));
  // 2^n: the low bits of `shifted` hold n (two's complement); moving them to
  // the exponent field and adding the bias gives the float 2^n for -126 <= n <= 0.
  const PacketI bits = ei::preinterpret<PacketI>(shifted);
  const PacketI expo = ei::padd(ei::plogical_shift_left<23>(bits), ei::pset1<PacketI>(0x3F800000));
  const Packet r = ei::pmul(p, ei::preinterpret<Packet>(expo));
  // Underflow (and -inf) to exactly zero.
  return ei::pselect(ei::pcmp_lt(t, lo), ei::pzero(t), r);
}

/// 2^t for t <= 0, -inf (-> 0) or NaN (-> NaN), elementwise on a packet.
template <typename Scalar, typename Packet>
EIGEN_STRONG_INLINE Packet exp2_nonpositive(const Packet& t) {
  if constexpr (std::is_same_v<Packet, Scalar>) {
    // The vector paths' cutoffs: below them, exactly 0 rather than a denormal.
    constexpr Scalar lo = std::is_same_v<Scalar, float> ? Scalar(-126) : Scalar(-1022);
    return t < lo ? Scalar(0) : std::exp2(t);
  } else if constexpr (std::is_same_v<Scalar, float>) {
    return exp2_nonpositive_float(t);
  } else {
    const Packet lo = ei::pset1<Packet>(Scalar(-1022));
    const Packet ln2 = ei::pset1<Packet>(Scalar(0.693147180559945309417232121458176568));
    const Packet r = ei::pexp(ei::pmul(ei::pmax(t, lo), ln2));
    // Eigen's clamps may drop a NaN: put it back.
    return ei::pselect(ei::pcmp_eq(t, t), ei::pselect(ei::pcmp_lt(t, lo), ei::pzero(t), r), t);
  }
}

}  // namespace attnkit::detail
