#pragma once

/// \file attnkit/similarity/detail/packet_math.hpp
/// Elementwise functions the score policies need on Eigen packets (and on
/// plain scalars), written once for float and double packets alike.

#include <Eigen/Core>

namespace attnkit::detail {

namespace ei = Eigen::internal;

/// log(1 + x) for x >= 0 (and NaN -> NaN, +inf -> +inf), by Kahan's
/// correction: u = 1 + x rounded, log1p(x) = log(u) x / (u - 1), exact to a
/// few ulp (Goldberg 1991, theorem 4); x itself where 1 + x rounds to 1.
template <typename Packet>
EIGEN_STRONG_INLINE Packet packet_log1p(const Packet& x) {
  const Packet one = ei::pset1<Packet>(typename ei::unpacket_traits<Packet>::type(1));
  const Packet u = ei::padd(one, x);
  const Packet um1 = ei::psub(u, one);
  const Packet r = ei::pmul(ei::plog(u), ei::pdiv(x, um1));
  // u == 1: log1p(x) = x to within x^2 / 2; u == inf: the quotient is NaN.
  const Packet small = ei::pcmp_eq(u, one);
  const Packet big = ei::pcmp_eq(
      u, ei::pset1<Packet>(Eigen::NumTraits<typename ei::unpacket_traits<Packet>::type>::infinity()));
  return ei::pselect(small, x, ei::pselect(big, u, r));
}

/// tanh(x), elementwise: Eigen's rational approximation for float packets
/// (a few ulp; +-1 beyond |x| = 9), 1 - 2 / (1 + e^(2|x|)) with the sign
/// restored otherwise (absolute error a few ulp, which is what a logit
/// needs). NaN -> NaN.
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
