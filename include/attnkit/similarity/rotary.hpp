#pragma once

/// \file attnkit/similarity/rotary.hpp
/// Rotary position encoding (RoPE): rotate each pair of dimensions of a token
/// vector by an angle proportional to the token's position, so that
/// (R_m q) . (R_n k) depends on the contents and on m - n only.
///
/// Pair p (p = 0 .. d/2 - 1) turns at frequency theta_p = base^(-2p/d); a token
/// at position m rotates it by m * theta_p. Two layouts decide which two
/// dimensions form pair p:
///  - RotaryLayout::interleaved: (2p, 2p + 1)       (the original RoFormer/GPT-J form);
///  - RotaryLayout::half:        (p, p + d/2)        (GPT-NeoX / Hugging Face Llama "rotate_half").
/// Low-frequency pairs (large p) barely turn over a context; high-frequency
/// pairs (small p) turn fast.

#include <cmath>
#include <utility>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

enum class RotaryLayout { interleaved, half };

/// Name used in messages and on the command line: "interleaved", "half".
inline const char* to_string(RotaryLayout layout) {
  return layout == RotaryLayout::interleaved ? "interleaved" : "half";
}

struct RotaryOptions {
  /// Frequency base (10000 in most models); finite and > 1.
  double base = 10000.0;
  RotaryLayout layout = RotaryLayout::half;
};

/// Pair index p of dimension i (0 <= p < d/2). d must be even.
inline Index rotary_pair(Index i, Index d, RotaryLayout layout) {
  return layout == RotaryLayout::interleaved ? i / 2 : i % (d / 2);
}

/// The other dimension of i's rotary pair. d must be even.
inline Index rotary_partner(Index i, Index d, RotaryLayout layout) {
  if (layout == RotaryLayout::interleaved) return i ^ 1;
  return i < d / 2 ? i + d / 2 : i - d / 2;
}

/// The two dimensions (first, second) of pair p; `first` is the cosine-side of
/// the rotation: x'_first = x_first cos - x_second sin.
inline std::pair<Index, Index> rotary_pair_dims(Index p, Index d, RotaryLayout layout) {
  return layout == RotaryLayout::interleaved ? std::pair<Index, Index>{2 * p, 2 * p + 1}
                                             : std::pair<Index, Index>{p, p + d / 2};
}

/// Angular frequency of pair p: base^(-2p/d).
inline double rotary_frequency(Index p, Index d, double base) {
  return std::pow(base, -2.0 * static_cast<double>(p) / static_cast<double>(d));
}

/// Applies RoPE to every row of `x`: row r is the token at position
/// `first_position + r`. Angles, sines and cosines are computed in double.
/// \param x (n x d), d even and > 0.
/// \returns (n x d) rotated copy. O(n d) time.
/// \throws std::invalid_argument for an empty x, an odd d or a bad base.
template <typename Derived>
RowMatrix<typename Derived::Scalar> apply_rotary(const Eigen::MatrixBase<Derived>& x, Index first_position,
                                                 const RotaryOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  detail::require_non_empty("apply_rotary", "x", x);
  const Index d = x.cols();
  if (d % 2 != 0) detail::fail("apply_rotary: x ", detail::shape(x), " needs an even width d to form pairs");
  if (!(std::isfinite(options.base) && options.base > 1))
    detail::fail("apply_rotary: base = ", options.base, " must be finite and > 1");
  RowMatrix<Scalar> out(x.rows(), d);
  for (Index p = 0; p < d / 2; ++p) {
    const double theta = rotary_frequency(p, d, options.base);
    const auto [a, b] = rotary_pair_dims(p, d, options.layout);
    for (Index r = 0; r < x.rows(); ++r) {
      const double angle = static_cast<double>(first_position + r) * theta;
      const double c = std::cos(angle), s = std::sin(angle);
      const double xa = static_cast<double>(x(r, a)), xb = static_cast<double>(x(r, b));
      out(r, a) = static_cast<Scalar>(xa * c - xb * s);
      out(r, b) = static_cast<Scalar>(xa * s + xb * c);
    }
  }
  return out;
}

}  // namespace attnkit
