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

/// s tanh(x) for a fixed s > 0, elementwise (the soft-capping transform).
///
/// Float: x P(x^2) / Q(x^2) with P and Q of degree 4 in x^2, P(0) = Q(0) = 1
/// (so the relative accuracy holds down to x -> 0 and -0 stays -0), a
/// relative-error fit on [0, 9] (Loeb's linearisation with Lawson's
/// reweighting; with its coefficients rounded to float, within 0.77 u of
/// long-double tanh in exact arithmetic, u = 2^-24), with x clamped to
/// [-9, 9] (tanh 9 = 1 - 0.5 u). s
/// is folded into P's coefficients, so the whole transform is 2 clamps, a
/// square, 8 multiply-adds, a product and a division: 12 operations and a
/// division per packet, against 17 and a division for Eigen's ptanh times s.
/// Rounding included, within 21 u of s |tanh x| (derived in the test;
/// measured on a grid of [0, 9]: 5.4 u with FMA, 6.2 u without), about
/// s (1 - u) at +-inf. Needs s in [1.3e-30, 1.4e35] in float (beyond, x s P
/// overflows at the clamp; below, s P's coefficients are subnormal).
///
/// Double: s (1 - 2 / (1 + e^(2|x|))) with the sign restored (absolute error
/// a few ulp of s, which is what a logit needs; e^(2|x|) overflows to inf
/// beyond |x| ~ 354, and then tanh = 1). NaN -> NaN for both.
template <typename Scalar>
struct ScaledTanh {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>, "float or double");
  /// Q's coefficients (float), constant term first.
  static constexpr float q1 = 4.671730101e-01f, q2 = 2.589020319e-02f, q3 = 3.291035828e-04f,
                         q4 = 7.804707138e-07f;
  /// The clamp of the argument (float).
  static constexpr float clamp = 9.0f;

  Scalar scale = 1;  ///< s (the double path multiplies by it)
  float p[5] = {};   ///< s times P's coefficients, each rounded once (the float path's)

  ScaledTanh() : ScaledTanh(1.0) {}
  explicit ScaledTanh(double s) : scale(static_cast<Scalar>(s)) {
    const double unit[5] = {1.0, 1.338398010e-01, 3.498994745e-03, 2.066122943e-05, 1.341975775e-08};
    for (int j = 0; j < 5; ++j)
      p[j] = static_cast<float>(s * unit[j]);
  }
};

template <typename Packet>
EIGEN_STRONG_INLINE Packet
packet_scaled_tanh(const Packet& x, const ScaledTanh<typename ei::unpacket_traits<Packet>::type>& t) {
  using Scalar = typename ei::unpacket_traits<Packet>::type;
  using T = ScaledTanh<Scalar>;
  if constexpr (std::is_same_v<Scalar, float>) {
    // pmin then pmax: Eigen's order keeps a NaN in x (the first argument).
    const Packet xc = ei::pmax(ei::pmin(x, ei::pset1<Packet>(T::clamp)), ei::pset1<Packet>(-T::clamp));
    const Packet x2 = ei::pmul(xc, xc);
    Packet num = ei::pmadd(x2, ei::pset1<Packet>(t.p[4]), ei::pset1<Packet>(t.p[3]));
    num = ei::pmadd(x2, num, ei::pset1<Packet>(t.p[2]));
    num = ei::pmadd(x2, num, ei::pset1<Packet>(t.p[1]));
    num = ei::pmadd(x2, num, ei::pset1<Packet>(t.p[0]));
    Packet den = ei::pmadd(x2, ei::pset1<Packet>(T::q4), ei::pset1<Packet>(T::q3));
    den = ei::pmadd(x2, den, ei::pset1<Packet>(T::q2));
    den = ei::pmadd(x2, den, ei::pset1<Packet>(T::q1));
    den = ei::pmadd(x2, den, ei::pset1<Packet>(1.0f));
    return ei::pdiv(ei::pmul(xc, num), den);
  } else {
    const Packet one = ei::pset1<Packet>(Scalar(1)), two = ei::pset1<Packet>(Scalar(2));
    const Packet ax = ei::pabs(x);
    const Packet th = ei::psub(one, ei::pdiv(two, ei::padd(one, ei::pexp(ei::pmul(two, ax)))));
    const Packet st = ei::pmul(ei::pset1<Packet>(t.scale), th);
    return ei::pselect(ei::pcmp_lt(x, ei::pzero(x)), ei::pnegate(st), st);
  }
}

}  // namespace attnkit::detail
