#pragma once

/// \file attnkit/position/rotary.hpp
/// Rotary position encoding (RoPE): rotate pairs of dimensions of a token
/// vector by angles proportional to the token's position, so that
/// (R_m q) . (R_n k) depends on the contents and on m - n only.
///
/// Rotated sub-vector. The first r dimensions of each row are rotated
/// (RotaryOptions::rotary_dims, default r = d); dimensions r .. d - 1 pass
/// through unchanged ("partial rotary", GPT-NeoX / Phi / Hugging Face
/// `partial_rotary_factor`). Everything below is stated for that sub-vector
/// of width r.
///
/// Pairs and frequencies. Pair p (p = 0 .. r/2 - 1) turns at angular
/// frequency theta_p = base^(-2p/r); a token at position m rotates it by
/// (m / factor) * theta_p, factor being the linear position scaling
/// ("position interpolation", Chen et al. 2023; Hugging Face rope_type
/// "linear"). Two layouts decide which two dimensions form pair p:
///  - RotaryLayout::interleaved: (2p, 2p + 1)    (RoFormer / GPT-J);
///  - RotaryLayout::half:        (p, p + r/2)    (GPT-NeoX / Llama "rotate_half").
/// With r < d the layout applies inside the first r dimensions, as Hugging
/// Face does (it splits q[..., :r] off, applies rotate_half to it and
/// concatenates q[..., r:] back): for the half layout pair p is (p, p + r/2),
/// not (p, p + d/2). The pair helpers below take that width r as their `d`.
/// Low-frequency pairs (large p) barely turn over a context; high-frequency
/// pairs (small p) turn fast.
///
/// Rotation of pair (a, b) by angle t: x'_a = x_a cos t - x_b sin t,
/// x'_b = x_a sin t + x_b cos t. Row i of an input is the token at position
/// first_position + position_offset + i (either may be negative: rotating by
/// -m undoes position m).
///
/// Precision: angles, sines, cosines and the rotation are computed in double
/// and rounded once to Scalar, so each output entry is within half an ulp of
/// Scalar (relative to |x_a| + |x_b|) plus the double-precision error of the
/// angle, about |angle| * 2^-51, of the exact rotation of the Scalar input.
/// Cost: O(n r) time, O(r) extra memory. Thread safety: pure functions;
/// concurrent calls on distinct outputs are safe.

#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

enum class RotaryLayout { interleaved, half };

/// Name used in messages and on the command line: "interleaved", "half".
inline const char* to_string(RotaryLayout layout) {
  return layout == RotaryLayout::interleaved ? "interleaved" : "half";
}

/// How RoPE is applied. The first two fields keep their order so existing
/// aggregate initialisations `{base, layout}` stay valid.
struct RotaryOptions {
  /// Frequency base (10000 in most models); finite and > 1.
  double base = 10000.0;
  /// Which dimensions form a pair (see the file comment).
  RotaryLayout layout = RotaryLayout::half;
  /// Width r of the rotated leading sub-vector; std::nullopt = all d
  /// dimensions. Even, 2 <= r <= d; dimensions r .. d - 1 are left unchanged.
  std::optional<Index> rotary_dims{};
  /// Linear position scaling: a token at position m is rotated as if it were
  /// at m / factor (factor 4 stretches a 4k-trained context to 16k). Finite
  /// and > 0; 1 = no scaling.
  double factor = 1.0;
  /// Added to every position: row i of an input sits at
  /// first_position + position_offset + i. Lets a decode step keep one
  /// options object and pass the cache length here.
  Index position_offset = 0;
};

/// Pair index p of dimension i (0 <= i < d, 0 <= p < d/2) of a rotated
/// sub-vector of width d (pass r with partial rotary). d must be even.
inline Index rotary_pair(Index i, Index d, RotaryLayout layout) {
  return layout == RotaryLayout::interleaved ? i / 2 : i % (d / 2);
}

/// The other dimension of i's rotary pair, within width d. d must be even.
inline Index rotary_partner(Index i, Index d, RotaryLayout layout) {
  if (layout == RotaryLayout::interleaved) return i ^ 1;
  return i < d / 2 ? i + d / 2 : i - d / 2;
}

/// The two dimensions (first, second) of pair p within width d; `first` is
/// the cosine side of the rotation: x'_first = x_first cos - x_second sin.
inline std::pair<Index, Index> rotary_pair_dims(Index p, Index d, RotaryLayout layout) {
  return layout == RotaryLayout::interleaved ? std::pair<Index, Index>{2 * p, 2 * p + 1}
                                             : std::pair<Index, Index>{p, p + d / 2};
}

/// Angular frequency of pair p of a rotated width d (r with partial rotary):
/// base^(-2p/d).
inline double rotary_frequency(Index p, Index d, double base) {
  return std::pow(base, -2.0 * static_cast<double>(p) / static_cast<double>(d));
}

/// The rotated width r that `options` selects for inputs of width d, after
/// validating the options for that width.
/// \throws std::invalid_argument (message starting with `where`) for an odd
///         or non-positive r, r > d, a base that is not finite and > 1, or a
///         factor that is not finite and > 0.
inline Index rotary_dims(const RotaryOptions& options, Index d, const char* where = "rotary") {
  if (!(std::isfinite(options.base) && options.base > 1))
    detail::fail(where, ": base = ", options.base, " must be finite and > 1");
  if (!(std::isfinite(options.factor) && options.factor > 0))
    detail::fail(where, ": factor = ", options.factor, " must be finite and > 0");
  if (!options.rotary_dims) {
    if (d % 2 != 0)
      detail::fail(where, ": width d = ", d, " needs to be even to form rotary pairs (or set rotary_dims)");
    return d;
  }
  const Index r = *options.rotary_dims;
  if (r <= 0 || r % 2 != 0) detail::fail(where, ": rotary_dims = ", r, " must be even and >= 2");
  if (r > d) detail::fail(where, ": rotary_dims = ", r, " exceeds the width d = ", d);
  return r;
}

namespace detail {

/// Checks that the positions first .. first + rows - 1 (plus the offset) fit
/// in Index and returns the first one.
inline Index rotary_first_position(const char* where, Index first_position, Index offset, Index rows) {
  constexpr Index max = std::numeric_limits<Index>::max(), min = std::numeric_limits<Index>::min();
  const bool add_overflows =
      (offset > 0 && first_position > max - offset) || (offset < 0 && first_position < min - offset);
  if (add_overflows)
    fail(where, ": first_position = ", first_position, " plus position_offset = ", offset, " overflows");
  const Index first = first_position + offset;
  if (rows > 0 && first > max - (rows - 1))
    fail(where, ": positions from ", first, " over ", rows, " rows overflow");
  return first;
}

/// Rotates the rows of `x` in place (Scalar float or double): x may alias
/// nothing else. `r` and `first` were validated by the caller.
template <typename Derived>
void rotate_rows(Eigen::MatrixBase<Derived>& x, Index first, Index r, const RotaryOptions& options) {
  using Scalar = typename Derived::Scalar;
  const Index pairs = r / 2;
  std::vector<double> theta(static_cast<std::size_t>(pairs));
  for (Index p = 0; p < pairs; ++p)
    theta[static_cast<std::size_t>(p)] = rotary_frequency(p, r, options.base);
  for (Index row = 0; row < x.rows(); ++row) {
    // m / factor: exact for factor 1 (and any power of two), so the default
    // reproduces angle = m * theta_p.
    const double position = static_cast<double>(first + row) / options.factor;
    for (Index p = 0; p < pairs; ++p) {
      const double angle = position * theta[static_cast<std::size_t>(p)];
      const double c = std::cos(angle), s = std::sin(angle);
      const auto [a, b] = rotary_pair_dims(p, r, options.layout);
      const double xa = static_cast<double>(x(row, a)), xb = static_cast<double>(x(row, b));
      x(row, a) = static_cast<Scalar>(xa * c - xb * s);
      x(row, b) = static_cast<Scalar>(xa * s + xb * c);
    }
  }
}

}  // namespace detail

/// Applies RoPE to every row of `x` in place: row i is the token at position
/// first_position + options.position_offset + i.
/// \param x (n x d) lvalue (a matrix, or a writable block of one); d >= r.
/// \throws std::invalid_argument for an empty x, a bad option for width d
///         (see rotary_dims) or positions that overflow Index; x is unchanged
///         then.
/// O(n r) time; the result is bit-identical to apply_rotary's.
template <typename Derived>
void apply_rotary_in_place(Eigen::MatrixBase<Derived>& x, Index first_position,
                           const RotaryOptions& options = {}) {
  static_assert(std::is_floating_point_v<typename Derived::Scalar>, "RoPE needs a floating-point Scalar");
  const char* where = "apply_rotary_in_place";
  detail::require_non_empty(where, "x", x);
  const Index r = rotary_dims(options, x.cols(), where);
  const Index first = detail::rotary_first_position(where, first_position, options.position_offset, x.rows());
  detail::rotate_rows(x, first, r, options);
}

/// Overload for writable temporaries such as `m.topRows(3)` or `m.row(i)`.
template <typename Derived>
void apply_rotary_in_place(Eigen::MatrixBase<Derived>&& x, Index first_position,
                           const RotaryOptions& options = {}) {
  apply_rotary_in_place(x, first_position, options);
}

/// Returns a copy of `x` with RoPE applied to every row: row i is the token at
/// position first_position + options.position_offset + i.
/// \param x (n x d), any Eigen expression; d >= r (d even when rotary_dims is
///        not set).
/// \returns (n x d) rotated copy; dimensions r .. d - 1 copied unchanged.
/// \throws std::invalid_argument for an empty x, an odd d without
///         rotary_dims, a bad option (see rotary_dims) or positions that
///         overflow Index.
///
/// \code
///   attnkit::RotaryOptions neox{10000.0, attnkit::RotaryLayout::half, 16};  // first 16 dims
///   auto qr = attnkit::apply_rotary(q, 0, neox);          // prefill: positions 0 ..
///   neox.position_offset = cache_length;                  // decode: the next token
///   auto q1 = attnkit::apply_rotary(q_new, 0, neox);
/// \endcode
template <typename Derived>
RowMatrix<typename Derived::Scalar> apply_rotary(const Eigen::MatrixBase<Derived>& x, Index first_position,
                                                 const RotaryOptions& options = {}) {
  static_assert(std::is_floating_point_v<typename Derived::Scalar>, "RoPE needs a floating-point Scalar");
  const char* where = "apply_rotary";
  detail::require_non_empty(where, "x", x);
  const Index r = rotary_dims(options, x.cols(), where);
  const Index first = detail::rotary_first_position(where, first_position, options.position_offset, x.rows());
  RowMatrix<typename Derived::Scalar> out = x;
  detail::rotate_rows(out, first, r, options);
  return out;
}

/// Same as apply_rotary(x, 0, options): positions start at
/// options.position_offset.
template <typename Derived>
RowMatrix<typename Derived::Scalar> apply_rotary(const Eigen::MatrixBase<Derived>& x,
                                                 const RotaryOptions& options) {
  return apply_rotary(x, 0, options);
}

}  // namespace attnkit
