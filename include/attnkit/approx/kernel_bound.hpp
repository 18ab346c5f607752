#pragma once

/// \file attnkit/approx/kernel_bound.hpp
/// The fused exact kernel's rounding-error bound (attnkit/attention/flash.hpp)
/// as a function of quantities a caller has: the derivation of
/// docs/flash.md ("Accuracy"), worst case, moved into the library so that an
/// algorithm that runs the kernel on some of its keys (the exact tier of
/// approx_attention) can report the error of that part.
///
/// For one query row of a flash_attention call in compute type C (unit
/// roundoff u = 2^-24 for float, 2^-53 for double) over n_k keys in tiles of
/// block_k keys, let
///
///   a >= scale * max_j sum_c |q_c k_jc|            (absolute logit scale)
///   L  = (block_k + 16) + n_k / block_k + 16        (longest summation chain:
///        a tile rounded up by at most 16 keys, the tiles, the key-chunk merges)
///
/// The kernel's logits carry an error of at most (d + 3) u a (a d-term dot
/// product, the rounding of scale log2(e) and of the scaled query), exp2 adds
/// one ulp and u |z - m| <= 2 u a, so every weight is off by a relative
///
///   delta = u (2 (d + 3) a + 2 a + 2);
///
/// moving the weights by a relative delta moves an output column by at most
/// 2 delta max_j |v_jc|; the blocked sums of P and P V add 2 L u max_j |v_jc|
/// and the final division u max_j |v_jc|. Hence, per column c,
///
///   |O_c - O_c,exact| <= output * max_j |v_jc|,   output = 2 delta + 2 L u + 2 u,
///   |lse - lse_exact| <= lse = (d + 3) u a + delta + 2 L u + 4 u |lse| + u,
///
/// the last two terms for the rounding of lse itself. This is the bound
/// tests/attention/flash_bounds.hpp checks for every mask, shape, tile size
/// and thread count (with one more u of slack on the output for the final
/// division, counted there as the reference's rounding). The bound is
/// monotone in a, d, n_k and |lse|: any upper bounds of them may be passed.

#include <cmath>
#include <limits>
#include <type_traits>

#include "attnkit/core/types.hpp"

namespace attnkit {

/// Rounding-error bound of one query row of the fused kernel (see the file
/// comment): `output` multiplies max_j |v_jc| of each column, `lse` is
/// absolute (natural-log units).
struct FlashRoundingBound {
  double output = 0;
  double lse = 0;
};

/// The unit roundoff of the kernel's compute type: 2^-24 (float), 2^-53 (double).
template <typename Compute>
constexpr double unit_roundoff() {
  static_assert(std::is_same_v<Compute, float> || std::is_same_v<Compute, double>,
                "the fused kernel computes in float or double");
  return 0.5 * static_cast<double>(std::numeric_limits<Compute>::epsilon());
}

/// The fused kernel's worst-case rounding bound for one query row computed
/// in `Compute` (see the file comment).
/// \param abs_logit an upper bound of scale * max_j sum_c |q_c k_jc| over the
///        keys of the call (non-negative).
/// \param d the key width; \param n_k the keys of the call; \param block_k the
///        requested tile (FlashConfig::block_k, 128 when automatic).
/// \param abs_lse an upper bound of |lse| of the row (for the rounding of lse).
template <typename Compute>
FlashRoundingBound flash_rounding_bound(double abs_logit, Index d, Index n_k, Index block_k,
                                        double abs_lse = 0) {
  const double u = unit_roundoff<Compute>();
  const double dot = static_cast<double>(d) + 3;
  const double bk = static_cast<double>(block_k < 1 ? 1 : block_k);
  const double chain = bk + 16 + static_cast<double>(n_k) / bk + 16;
  const double delta = u * (2 * dot * abs_logit + 2 * abs_logit + 2);
  FlashRoundingBound b;
  b.output = 2 * delta + 2 * chain * u + 2 * u;
  b.lse = dot * u * abs_logit + delta + 2 * chain * u + 4 * u * abs_lse + u;
  return b;
}

}  // namespace attnkit
