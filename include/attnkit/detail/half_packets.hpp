#pragma once

/// \file attnkit/detail/half_packets.hpp
/// 16-bit floating-point storage (Eigen::half, IEEE binary16: 11-bit
/// significand; Eigen::bfloat16: 8-bit significand, float's exponent range)
/// converted to float packets, vectorised for the instruction set the
/// translation unit is compiled for:
///  - half: AVX-512F vcvtph2ps (16 lanes), F16C vcvtph2ps (8 and 4 lanes);
///  - bfloat16: a zero-extension to 32 bits and a 16-bit left shift (exact:
///    a bfloat16 is the top half of a float), AVX-512F, AVX2 or SSE4.1;
///  - otherwise element by element through Eigen's scalar conversion.
/// Every conversion to float is exact (both formats embed in float);
/// NaN and +-inf stay NaN and +-inf, subnormal halves become normal floats.

#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__F16C__) || defined(__SSE4_1__)
#include <immintrin.h>
#endif

namespace attnkit::detail {

template <typename T>
constexpr bool is_half_v = std::is_same_v<T, Eigen::half>;
template <typename T>
constexpr bool is_bfloat16_v = std::is_same_v<T, Eigen::bfloat16>;
/// A 16-bit storage type attnkit converts to float on load.
template <typename T>
constexpr bool is_16bit_float_v = is_half_v<T> || is_bfloat16_v<T>;

/// P consecutive 16-bit values as a float packet (told apart by size: a
/// float packet of 64, 32 or 16 bytes), or false when this
/// instruction set has no vector conversion for that packet (the caller
/// then converts element by element).
template <typename Packet, typename Stored>
EIGEN_STRONG_INLINE bool load_16bit_packet(const Stored* p, Packet& out) {
#if defined(__AVX512F__)
  if constexpr (sizeof(Packet) == 64) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if constexpr (is_half_v<Stored>)
      out = _mm512_cvtph_ps(raw);
    else
      out = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
    return true;
  }
#endif
#if defined(__AVX2__) || defined(__F16C__)
  if constexpr (sizeof(Packet) == 32) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
#if defined(__F16C__)
    if constexpr (is_half_v<Stored>) {
      out = _mm256_cvtph_ps(raw);
      return true;
    }
#endif
#if defined(__AVX2__)
    if constexpr (is_bfloat16_v<Stored>) {
      out = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
      return true;
    }
#endif
  }
#endif
#if defined(__SSE4_1__) || defined(__F16C__)
  if constexpr (sizeof(Packet) == 16) {
    const __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
#if defined(__F16C__)
    if constexpr (is_half_v<Stored>) {
      out = _mm_cvtph_ps(raw);
      return true;
    }
#endif
#if defined(__SSE4_1__)
    if constexpr (is_bfloat16_v<Stored>) {
      out = _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(raw), 16));
      return true;
    }
#endif
  }
#endif
  static_cast<void>(p);
  static_cast<void>(out);
  return false;
}

}  // namespace attnkit::detail
