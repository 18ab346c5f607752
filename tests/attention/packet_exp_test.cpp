// Tests of attnkit/attention/detail/packet_exp.hpp: 2^t for t <= 0 on Eigen
// packets, as the fused kernel's online softmax uses it. Built twice
// (tests/CMakeLists.txt): portable (SSE2 on x86-64, 4 floats per packet) and
// with -march=native (AVX-512 here: 16 floats, fused multiply-add).
//
// The float path is checked on every float in [-1, -2^-25] (below, the result
// is provably 1: sampled) and on a strided sweep of [-150, -1], against exp2
// in long double (in double for the 2.1e8-value dense sweep, whose own error
// is checked against long double on a subset),
// with a bound derived below from the polynomial the header evaluates; the
// double path over [-1100, 0]; and the special values of both, through the
// packet and the scalar (non-vectorised) entry point.

#include "attnkit/attention/detail/packet_exp.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace attnkit {
namespace {

namespace ei = Eigen::internal;
using LD = long double;

template <typename Scalar>
struct Lanes {
  using Packet = typename ei::packet_traits<Scalar>::type;
  static constexpr int size = ei::unpacket_traits<Packet>::size;
};

// exp2_nonpositive<Scalar> over n values, through the widest packet
// (Vectorised = true) or the scalar entry point (Packet = Scalar).
template <typename Scalar, bool Vectorised>
void apply(const Scalar* in, Scalar* out, std::size_t n) {
  if constexpr (Vectorised) {
    using Packet = typename Lanes<Scalar>::Packet;
    constexpr std::size_t w = Lanes<Scalar>::size;
    std::size_t i = 0;
    for (; i + w <= n; i += w)
      ei::pstoreu(out + i, detail::exp2_nonpositive<Scalar>(ei::ploadu<Packet>(in + i)));
    if (i < n) {  // the tail, padded with zeros
      Scalar pad_in[w] = {}, pad_out[w] = {};
      std::memcpy(pad_in, in + i, (n - i) * sizeof(Scalar));
      ei::pstoreu(pad_out, detail::exp2_nonpositive<Scalar>(ei::ploadu<Packet>(pad_in)));
      std::memcpy(out + i, pad_out, (n - i) * sizeof(Scalar));
    }
  } else {
    for (std::size_t i = 0; i < n; ++i)
      out[i] = detail::exp2_nonpositive<Scalar, Scalar>(in[i]);
  }
}

template <typename Scalar, bool Vectorised>
Scalar exp2_one(Scalar t) {
  Scalar r;
  apply<Scalar, Vectorised>(&t, &r, 1);
  return r;
}

float float_from_bits(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// --- the bound of the float path ---------------------------------------------
//
// t = n + f, n = round(t) (ties to even), f = t - n in [-1/2, 1/2], both exact;
// 2^f by Horner's rule in float on the header's coefficients c0 .. c6, then
// multiplied by 2^n (exact: a power of two, and the result stays normal for
// -126 <= n <= 0 because p >= 1 whenever n = -126). So the relative error is
//   A (the polynomial's own, |P(f) / 2^f - 1| in exact arithmetic) + E(f) / P(f)
// where E(f) bounds the rounding of Horner's rule, by the running-error
// recursion (first order in u = 2^-24, P_k the exact partial values):
//   E_6 = 0,  E_k = |f| E_{k+1} + u |P_k|                  (fused multiply-add)
//   E_k = |f| E_{k+1} + u |P_{k+1} f| + u |P_k|            (multiply, then add)
// Both are maximised over f below; a fused multiply-add is used when Eigen
// vectorises with FMA (EIGEN_VECTORIZE_FMA), and the unfused bound, the
// larger, holds for any mix.
constexpr float kCoefficients[7] = {1.0f,
                                    6.931471824645996e-1f,
                                    2.4022646248340607e-1f,
                                    5.550328642129898e-2f,
                                    9.618489071726799e-3f,
                                    1.3399930903688073e-3f,
                                    1.534580806037411e-4f};  // c0 .. c6, copied from packet_exp.hpp

struct FloatPathBound {
  double approximation;  // A
  double rounding;       // max_f E(f) / P(f)
  double total() const { return approximation + rounding; }
};

FloatPathBound float_path_bound(bool fused) {
  const LD u = std::ldexp(LD(1), -24);
  FloatPathBound b{0, 0};
  const int half = 1 << 16;  // f on a grid of 2^-17, both ends included
  for (int i = -half; i <= half; ++i) {
    const LD f = static_cast<LD>(i) / (2 * half);
    LD p[7];
    p[6] = kCoefficients[6];
    for (int k = 5; k >= 0; --k)
      p[k] = p[k + 1] * f + kCoefficients[k];
    LD e = 0;
    for (int k = 5; k >= 0; --k)
      e = std::fabs(f) * e + u * std::fabs(p[k]) + (fused ? 0 : u * std::fabs(p[k + 1] * f));
    b.approximation = std::max(b.approximation, static_cast<double>(std::fabs(p[0] / std::exp2(f) - 1)));
    b.rounding = std::max(b.rounding, static_cast<double>(e / p[0]));
  }
  return b;
}

#ifdef EIGEN_VECTORIZE_FMA
constexpr bool kFused = true;
#else
constexpr bool kFused = false;
#endif

// The polynomial itself: its exact-arithmetic error is what the bound uses
// (1.55e-8 at f = -1/2, 0.26 u, with these float coefficients).
TEST(PacketExpFloat, TheBoundIsDerivedFromTheHeadersPolynomial) {
  const FloatPathBound fused = float_path_bound(true), unfused = float_path_bound(false);
  const double u = std::ldexp(1.0, -24);
  EXPECT_LT(fused.approximation, 1.6e-8);
  EXPECT_GT(fused.approximation, 1.5e-8);
  EXPECT_LE(fused.rounding, unfused.rounding);
  // Relative bounds in units of u: about 0.26 + 1.7 (fused) and 0.26 + 2.4.
  EXPECT_LT(fused.total() / u, 2.0);
  EXPECT_LT(unfused.total() / u, 2.7);
  ::testing::Test::RecordProperty("bound_fused_u", std::to_string(fused.total() / u));
  ::testing::Test::RecordProperty("bound_unfused_u", std::to_string(unfused.total() / u));
}

// Every float t in [-1, -2^-25] (2.1e8 values) is compared with exp2 in
// double (relative error <= 2^-52, checked against long double on every 61st)
// within the derived bound. In (-2^-25, 0] the result must be exactly 1:
// 1 - 2^t < ln 2 * 2^-25 is under half the spacing 2^-24 below 1, so 1 is the
// correctly rounded value, and the arithmetic gives it (n = 0 and |P_1 f| <
// 2^-25 vanishes in the last addition) -- checked on the 2^20 floats nearest
// the threshold and every 251st float below them (8.6e8 floats in all would
// add minutes under the sanitizers, for a proven case). The bound in ulps: a
// relative error r is at most r / u ulp of the result, so 1.8 (fused) / 2.3
// (unfused) ulp.
TEST(PacketExpFloat, EveryFloatInMinusOneToZeroIsWithinTheBound) {
  const FloatPathBound bound = float_path_bound(kFused);
  const double reference_error = std::ldexp(1.0, -52);
  const double tol = bound.total() + reference_error;
  constexpr std::uint32_t minus_one = 0xbf800000u, minus_zero = 0x80000000u;
  constexpr std::uint32_t tiny = 0xb3000000u;  // -2^-25
  const std::size_t chunk = 1 << 16;
  std::vector<float> in(chunk), out(chunk);
  double worst = 0;
  std::uint64_t checked = 0, failures = 0;
  for (std::uint64_t start = tiny; start <= minus_one; start += chunk) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, minus_one + 1 - start));
    for (std::size_t i = 0; i < n; ++i)
      in[i] = float_from_bits(static_cast<std::uint32_t>(start + i));
    apply<float, true>(in.data(), out.data(), n);
    for (std::size_t i = 0; i < n; ++i) {
      const double ref = std::exp2(static_cast<double>(in[i]));
      const double rel = std::fabs(static_cast<double>(out[i]) - ref) / ref;
      worst = std::max(worst, rel);
      if (rel > tol && failures++ < 5)
        ADD_FAILURE() << "2^" << in[i] << ": relative error " << rel << " > " << tol;
      if ((start + i) % 61 == 0) {
        const LD exact = std::exp2(static_cast<LD>(in[i]));
        if (std::fabs(static_cast<LD>(ref) - exact) > reference_error * exact && failures++ < 5)
          ADD_FAILURE() << "the double reference is off at " << in[i];
      }
    }
    checked += n;
  }
  EXPECT_EQ(checked, std::uint64_t(minus_one - tiny) + 1);
  in.clear();
  for (std::uint32_t b = tiny - 1; b > tiny - (1u << 20); --b)
    in.push_back(float_from_bits(b));
  for (std::uint64_t b = minus_zero; b < tiny - (1u << 20); b += 251)
    in.push_back(float_from_bits(static_cast<std::uint32_t>(b)));
  out.resize(in.size());
  apply<float, true>(in.data(), out.data(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i)
    if (out[i] != 1.0f && failures++ < 5) ADD_FAILURE() << "2^" << in[i] << " = " << out[i] << ", expected 1";
  EXPECT_EQ(failures, 0u);
  ::testing::Test::RecordProperty("worst_relative_error_u", std::to_string(worst / std::ldexp(1.0, -24)));
}

// [-126, -1]: every 7th float against exp2 in long double; [-150, -126):
// every float gives exactly 0 (no denormal); below, every 4099th down to
// -FLT_MAX. The integers -126 .. 0 give 2^t exactly (f = 0: Horner returns
// c0 = 1 exactly, then the exact scaling).
TEST(PacketExpFloat, StridedSweepBeyondMinusOneAndTheUnderflowCutoff) {
  const double tol = float_path_bound(kFused).total() + std::ldexp(1.0, -63);
  std::vector<float> in, out;
  for (std::uint32_t b = 0xbf800000u; b <= 0xc2fc0000u; b += 7)  // -1 .. -126
    in.push_back(float_from_bits(b));
  out.resize(in.size());
  apply<float, true>(in.data(), out.data(), in.size());
  int failures = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const LD ref = std::exp2(static_cast<LD>(in[i]));
    const double rel = static_cast<double>(std::fabs(static_cast<LD>(out[i]) - ref) / ref);
    if (rel > tol && failures++ < 5)
      ADD_FAILURE() << "2^" << in[i] << ": relative error " << rel << " > " << tol;
    if (!(out[i] >= std::numeric_limits<float>::min()) && failures++ < 5)
      ADD_FAILURE() << "2^" << in[i] << " = " << out[i] << " is not a normal float";
  }
  // The scalar entry point is std::exp2 (within 1 ulp: 2 u relatively).
  std::vector<float> scalar_out(in.size());
  apply<float, false>(in.data(), scalar_out.data(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const LD ref = std::exp2(static_cast<LD>(in[i]));
    const double rel = static_cast<double>(std::fabs(static_cast<LD>(scalar_out[i]) - ref) / ref);
    if (rel > std::ldexp(1.0, -23) && failures++ < 5) ADD_FAILURE() << "scalar 2^" << in[i] << ": " << rel;
  }
  EXPECT_EQ(failures, 0);
  EXPECT_GT(in.size(), 1000000u);

  in.clear();
  for (std::uint32_t b = 0xc2fc0001u; b <= 0xc3160000u; ++b)  // just below -126 .. -150
    in.push_back(float_from_bits(b));
  for (std::uint64_t b = 0xc3160000u; b <= 0xff7fffffu; b += 4099)  // -150 .. -FLT_MAX
    in.push_back(float_from_bits(static_cast<std::uint32_t>(b)));
  out.assign(in.size(), 1.0f);
  apply<float, true>(in.data(), out.data(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i)
    if (out[i] != 0.0f || std::signbit(out[i])) {
      ADD_FAILURE() << "2^" << in[i] << " = " << out[i] << ", expected +0 below -126";
      break;
    }
  for (int n = -126; n <= 0; ++n) {
    const float r = exp2_one<float, true>(static_cast<float>(n));
    EXPECT_EQ(r, std::ldexp(1.0f, n)) << n;
  }
}

template <typename Scalar, bool Vectorised>
void expect_special_values() {
  using Limits = std::numeric_limits<Scalar>;
  const Scalar lo = std::is_same_v<Scalar, float> ? Scalar(-126) : Scalar(-1022);
  const auto e2 = [](Scalar t) { return exp2_one<Scalar, Vectorised>(t); };
  EXPECT_EQ(e2(Scalar(0)), Scalar(1));
  EXPECT_EQ(e2(-Scalar(0)), Scalar(1));
  EXPECT_EQ(e2(-Limits::infinity()), Scalar(0));
  EXPECT_FALSE(std::signbit(e2(-Limits::infinity())));
  EXPECT_EQ(e2(Limits::lowest()), Scalar(0));
  // Below the cutoff: exactly 0, not a denormal; at it: the smallest normal,
  // exactly for float (an integer argument) and for std::exp2, within the
  // double path's bound (2 |t| ln 2 + 4) u_d for Eigen's pexp.
  EXPECT_EQ(e2(std::nextafter(lo, -Limits::infinity())), Scalar(0));
  EXPECT_EQ(e2(lo - Scalar(0.5)), Scalar(0));
  EXPECT_EQ(e2(lo - Scalar(20)), Scalar(0));
  const Scalar at = e2(lo);
  if (std::is_same_v<Scalar, double> && Vectorised)
    EXPECT_NEAR(static_cast<double>(at / Limits::min()), 1.0,
                (2 * 1022 * std::log(2.0) + 4) * std::ldexp(1.0, -53));
  else
    EXPECT_EQ(at, Limits::min());
  for (const Scalar nan : {Limits::quiet_NaN(), -Limits::quiet_NaN(), Limits::signaling_NaN()})
    EXPECT_TRUE(std::isnan(e2(nan)));
  // Tiny negative arguments (denormal ones included) give 1.
  EXPECT_EQ(e2(-Limits::denorm_min()), Scalar(1));
  EXPECT_EQ(e2(-Limits::min()), Scalar(1));
}

TEST(PacketExpFloat, SpecialValuesThroughThePacket) {
  expect_special_values<float, true>();
}

// The scalar entry point (a non-vectorised build, Packet = Scalar) has the
// same special cases as the packets: below -126 exactly 0 too. (It used to
// return std::exp2's denormals down to -149.)
TEST(PacketExpFloat, SpecialValuesThroughTheScalarEntryPoint) {
  expect_special_values<float, false>();
}

// The double path: 2^t = pexp(t ln 2). t ln 2 is rounded once and ln 2 is
// rounded once, each a relative error <= u_d of the argument, i.e. an
// absolute error |t| ln 2 u_d in the exponent and a relative one in the
// result: 2 |t| ln 2 u_d; Eigen's pexp adds its own, budgeted at 4 u_d (the
// error model of tests/core/softmax_test.cpp; measured 2.4 u_d). Near
// t = -1022 the result may round into the denormals: plus denorm_min
// absolutely. The scalar entry point uses std::exp2 (within 1 ulp).
template <bool Vectorised>
void expect_double_path_within_bound() {
  const double u = std::ldexp(1.0, -53), ln2 = std::log(2.0);
  std::vector<double> in;
  const int grid = 1 << 20;
  for (int i = 0; i <= grid; ++i)
    in.push_back(-1022.0 * static_cast<double>(i) / grid);
  std::mt19937_64 rng(20240601);
  std::uniform_real_distribution<double> near_zero(-1.0, 0.0);  // the values online softmax sees most
  for (int i = 0; i < (1 << 18); ++i)
    in.push_back(near_zero(rng));
  for (int n = -1022; n <= 0; ++n)
    in.push_back(n);
  std::vector<double> out(in.size());
  apply<double, Vectorised>(in.data(), out.data(), in.size());
  int failures = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const LD ref = std::exp2(static_cast<LD>(in[i]));
    const double rel_bound = Vectorised ? (2 * std::fabs(in[i]) * ln2 + 4) * u : 2 * u;
    const double tol = rel_bound * static_cast<double>(ref) + std::numeric_limits<double>::denorm_min();
    const double err = static_cast<double>(std::fabs(static_cast<LD>(out[i]) - ref));
    if (err > tol && failures++ < 5) ADD_FAILURE() << "2^" << in[i] << ": error " << err << " > " << tol;
  }
  EXPECT_EQ(failures, 0);
}

TEST(PacketExpDouble, WithinTheBoundOverMinus1022ToZero) {
  expect_double_path_within_bound<true>();
}

// Scalar double: exactly 0 below -1022 like the packet, not below -1000
// (which flushed 2^-1000 .. 2^-1022 to 0 in non-vectorised builds only).
TEST(PacketExpDouble, ScalarEntryPointWithinTheBound) {
  expect_double_path_within_bound<false>();
}

TEST(PacketExpDouble, SpecialValuesThroughThePacket) {
  expect_special_values<double, true>();
}

TEST(PacketExpDouble, SpecialValuesThroughTheScalarEntryPoint) {
  expect_special_values<double, false>();
}

}  // namespace
}  // namespace attnkit
