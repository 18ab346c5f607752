#pragma once

/// \file attnkit/approx/approx_attention.hpp
/// Approximate softmax attention with a proven error bound for every query
/// row and output column (docs/approx.md):
///
///   O'  with  |O'_rc - O_rc| <= bound_rc,
///
/// O = softmax(scale Q K^T + mask) V the exact attention, for the masks
/// Mask::none(), Mask::causal(offset) and Mask::strict_causal(offset) (the
/// prefix x_a = f(q_{a+1}, k_{1..a}, v_{1..a})). The bound is computed from
/// quantities the algorithm holds -- node summaries, the exact kernel's
/// rounding bound (attnkit/approx/kernel_bound.hpp) -- never sampled, and
/// covers the rounding of every step.
///
/// Algorithm: each query's prefix is the binary-counter decomposition into
/// dyadic blocks of B_0 2^l keys plus fewer than B_0 keys near the diagonal,
/// attended exactly. Each block has a tree over its keys
/// (attnkit/approx/detail/key_block.hpp); a group of queries with similar
/// content walks it and, per node, skips it (its mass is negligible),
/// summarises it (mass estimate in the log domain, unweighted value mean) or
/// opens it (leaves: the fused kernel on their keys, merged by lse). The
/// parts are combined per row with the bound
///
///   |dO_c| <= R_c E / T_min + sum_p w'_p eta_pc   (+ rounding)
///
/// R_c the visible range of column c, E the summed mass errors, T_min a
/// lower bound of the row's mass, eta the value errors of the parts.
///
/// Modes:
///  - certified (ApproxOptions::budget unset): opens what bound_rc <= eps *
///    max_{visible j} |V_jc| needs; on data without structure a group hands
///    the block to the exact kernel early (and when a probe of a few groups
///    on the largest block many rows use finds nothing to close, every row goes to the
///    kernel over its whole prefix at once), and a row whose combined bound
///    still misses eps is recomputed exactly (in double when float's own
///    rounding bound misses it), so the target holds unless eps is below
///    the rounding of the output itself (stats.within_eps says);
///  - budgeted (budget = B): at most B keys of a row's blocks are opened;
///    the bound is returned and may exceed eps.
///
/// Non-finite inputs: Q and K must be finite (std::invalid_argument
/// otherwise); a non-finite value in V column c makes column c of every row
/// that sees it NaN (output and bound), and changes no other column.
/// A row that sees no key has a zero output, lse = -inf and bound 0.
///
/// Cost: the index is built level by level in O(n_k (d^2 + d log n_k)) time
/// (the basis products dominate; O(n_k d log n_k) without `pca`) and freed
/// after its level; peak summary memory about (2 n_k / G)(5 d + 3 d_v + 6)
/// doubles for leaves of G keys (stats.index_bytes). Queries cost the exact
/// part plus O(d) per (query, node tested); structured data (clusters,
/// near-duplicates) gives large savings, data without structure costs the
/// exact kernel plus a few per cent. Per row two d_v-vectors of doubles are
/// held while the parts are combined.
///
/// Threads: OpenMP over the chunks of each level (ApproxOptions::threads),
/// the kernel on one thread inside; results do not depend on the thread
/// count. Reentrant.

#include "attnkit/approx/detail/approx_driver.hpp"
#include "attnkit/approx/detail/setup.hpp"
#include "attnkit/approx/options.hpp"
#include "attnkit/approx/result.hpp"

namespace attnkit {

/// Approximate attention with a proven per-entry bound (see the file comment).
/// \param q (n_q x d), \param k (n_k x d), \param v (n_k x d_v): float or
///        double, all of one type.
/// \returns output (n_q x d_v), lse (n_q), bound (n_q x d_v), lse_bound
///          (n_q) and the counters of ApproxStats.
/// \throws std::invalid_argument for empty or mismatched shapes, an invalid
///         scale or mask (or a window or sinks), eps outside (0, 1), budget
///         < 1, invalid index options, or a non-finite entry of Q or K.
///
/// \code
///   auto r = attnkit::approx_attention(q, k, v, {attnkit::Mask::strict_causal()});  // eps = 1e-2
///   attnkit::ApproxOptions o;
///   o.mask = attnkit::Mask::causal();
///   o.budget = 512;                     // budgeted: at most 512 keys opened per query
///   auto fast = attnkit::approx_attention(q, k, v, o);
///   double achieved = fast.stats.max_bound_ratio;  // bound / max |v|, worst entry
/// \endcode
template <typename DQ, typename DK, typename DV>
ApproxResult<typename DQ::Scalar> approx_attention(const Eigen::MatrixBase<DQ>& q,
                                                   const Eigen::MatrixBase<DK>& k,
                                                   const Eigen::MatrixBase<DV>& v,
                                                   const ApproxOptions& options = {}) {
  using Scalar = typename DQ::Scalar;
  detail::approx_check_scalar<Scalar>();
  static_assert(std::is_same_v<Scalar, typename DK::Scalar> && std::is_same_v<Scalar, typename DV::Scalar>,
                "approx_attention: Q, K and V must have one scalar type");
  const Eigen::Ref<const RowMatrix<Scalar>> qr(q), kr(k), vr(v);
  detail::ApproxContext<Scalar> ctx = detail::approx_context<Scalar>("approx_attention", qr, kr, vr, options);
  ApproxResult<Scalar> res = detail::approx_allocate<Scalar>(ctx.n_q, ctx.d_v);
  detail::BuildingBlockSource<Scalar> source(ctx, options.index);
  detail::approx_run(ctx, source, res);
  return res;
}

}  // namespace attnkit
