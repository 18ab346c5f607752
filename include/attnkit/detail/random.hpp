#pragma once

/// \file attnkit/detail/random.hpp
/// A seeded, portable random source. std::normal_distribution is
/// implementation-defined (libstdc++ and libc++ draw different numbers), so
/// attnkit derives uniforms and normals itself from std::mt19937_64, whose
/// output sequence the standard fixes: the uniforms are the same bits with any
/// conforming compiler; the normals use libm's log, sin and cos, so they agree
/// to an ulp or so.

#include <cmath>
#include <cstdint>
#include <random>

#include "attnkit/core/types.hpp"

namespace attnkit::detail {

class Random {
 public:
  explicit Random(std::uint64_t seed) : engine_(seed) {}

  /// Uniform in [0, 1), 53 random bits.
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  /// Uniform integer in [0, n), n > 0 (bias below 2^-53 n, irrelevant here).
  Index index(Index n) {
    const auto i = static_cast<Index>(uniform() * static_cast<double>(n));
    return i < n ? i : n - 1;
  }

  /// Standard normal, Box-Muller on two uniforms.
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - uniform();  // (0, 1]: log is finite
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    constexpr double two_pi = 6.283185307179586476925286766559;
    spare_ = r * std::sin(two_pi * u2);
    has_spare_ = true;
    return r * std::cos(two_pi * u2);
  }

  /// (rows x cols) matrix of N(0, stddev^2) entries, filled row by row.
  RowMatrix<double> normal_matrix(Index rows, Index cols, double stddev = 1.0) {
    RowMatrix<double> m(rows, cols);
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < cols; ++j)
        m(i, j) = stddev * normal();
    return m;
  }

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace attnkit::detail
