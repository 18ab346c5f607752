#pragma once

/// \file attnkit/linear/linear_attention.hpp
/// Kernelized linear attention: exp(scale q . k) is replaced by
/// phi(q) . phi(k) for a feature map phi (attnkit/linear/feature_maps.hpp,
/// positive_random_features.hpp), and the associativity
/// (phi(Q) phi(K)^T) V = phi(Q) (phi(K)^T V) makes the cost linear in n:
///
///   O_i = phi(q_i)^T S_i / phi(q_i)^T z_i,
///   S_i = sum_{j visible to i} phi(k_j) v_j^T  (m x d_v),   z_i = sum_{j visible} phi(k_j)  (m),
///   lse_i = log(phi(q_i)^T z_i)  (the log of the normaliser; for FAVOR+ an
///           estimate of the softmax lse, so results merge with exact parts).
///
/// Masks (attnkit/core/mask.hpp; query row i is token offset + i, default
/// offset n_k - n_q): none (every query sees all keys: one state for all),
/// causal (keys j <= i + offset) and strict causal (j < i + offset).
///
/// Causal masks use the chunked form. Queries are cut into chunks of C rows;
/// with o = offset (causal) or offset - 1 (strict), chunk [i0, i1) sees
///  - the running state (S, z) of the keys [0, i0 + o), before the chunk:
///    the inter-chunk term phi(Q_c) S and phi(Q_c) z (two GEMMs);
///  - the keys [i0 + o, i1 + o) of its own block, through the masked
///    intra-chunk product A = phi(Q_c) phi(K_c)^T with A_rt = 0 when key t is
///    after query r (lower-triangular), added as A V_c and A 1;
/// then the block is absorbed: S += phi(K_c)^T V_c, z += phi(K_c)^T 1. Per
/// chunk that is O(C m (d + d_v) + C^2 (m + d_v)) in Eigen GEMMs instead of C
/// rank-one updates: cost O(n (m (d + d_v) + C (m + d_v))), memory
/// O(C (m + d + d_v) + m d_v), both independent of n beyond the output.
///
/// The normaliser's guard. out_i = num_i / max(den_i, floor) with
/// floor = LinearAttentionOptions::denominator_floor (default: the smallest
/// normal number of Scalar, 1.2e-38 in float, 2.2e-308 in double). With
/// non-negative features num_i is a sum of the same non-negative weights
/// times v_j, so:
///  - den_i > floor: an exact division, out_i a convex combination of the
///    visible values (|out_i| <= max |v_j| up to rounding);
///  - 0 < den_i <= floor (the weights underflowed): out_i = num_i / floor,
///    which shrinks continuously towards 0 as den_i does, |out_i| <= max |v_j|;
///  - den_i = 0 (no visible key, or ReLU features with no overlap): every
///    weight is 0, so num_i = 0 and out_i is the zero row, lse_i = -inf, the
///    convention attnkit uses for a query that sees no key.
/// The floor applies to the denominator as computed, in the units of the
/// map's stabilising factors (FAVOR+: each query's largest feature is
/// 1/sqrt(m), the keys' largest so far 1/sqrt(m)).
///
/// NaN: a NaN in q_i reaches row i only; a NaN in k_j reaches exactly the
/// queries that see key j (the masked entries of the intra-chunk block are
/// overwritten); a NaN in v_j reaches those and may also reach the earlier
/// queries of its chunk (their masked weights, 0, multiply it: 0 * NaN = NaN).
///
/// Accuracy (Scalar unit roundoff u): with non-negative features each
/// weight phi(q_i) . phi(k_j) is within 2 e_phi + m u relative of its exact
/// value (e_phi: the map's relative error per feature), the sums over keys
/// add at most (n_k + C + m) u relative (non-negative terms, Eigen's blocked
/// sums), and rescaling the state to a new key maximum one rounding each time;
/// so |out - exact| <= 2 (2 e_phi + (n_k + C + 2m) u) max |v| plus that
/// rounding, the bound tests/linear/linear_attention_test.cpp checks against a
/// long-double evaluation of the same formula.
///
/// Threads: single-threaded except for Eigen's own GEMM parallelism (when
/// the translation unit is compiled with OpenMP and Eigen is allowed to).
/// A pure function: concurrent calls are safe when the map's calls are.

#include <algorithm>
#include <type_traits>

#include "attnkit/attention/problem.hpp"
#include "attnkit/core/mask.hpp"
#include "attnkit/detail/checked_size.hpp"
#include "attnkit/linear/detail/linear_kernel.hpp"

namespace attnkit {

/// Options of linear_attention.
struct LinearAttentionOptions {
  /// Which keys each query sees: none (default), causal or strict causal,
  /// with the offsets of attnkit/core/mask.hpp.
  Mask mask{};
  /// Chunk length C of the causal form (and the block length in which keys
  /// are absorbed), >= 1. Larger chunks do more work in the masked
  /// intra-chunk product but run bigger GEMMs; 64 is fastest on AVX2/AVX-512
  /// at d = 64 (docs/linear.md).
  Index chunk = 64;
  /// Guard of the normaliser (see the file comment); std::nullopt = the
  /// smallest normal number of Scalar. Finite and > 0.
  std::optional<double> denominator_floor{};
};

namespace detail {

template <typename Scalar, typename FeatureMap>
void linear_attention_run(const Eigen::Ref<const RowMatrix<Scalar>>& q,
                          const Eigen::Ref<const RowMatrix<Scalar>>& k,
                          const Eigen::Ref<const RowMatrix<Scalar>>& v, const FeatureMap& map, Index m,
                          const MaskLayout& mask, Index chunk, Scalar floor,
                          Eigen::Ref<RowMatrix<Scalar>> out, Eigen::Ref<Vector<Scalar>> lse) {
  using CRef = Eigen::Ref<const RowMatrix<Scalar>>;
  using MRef = Eigen::Ref<RowMatrix<Scalar>>;
  using VRef = Eigen::Ref<Vector<Scalar>>;
  const Index n_q = q.rows(), n_k = k.rows(), d_v = v.cols();
  const Index c_len = std::max<Index>(1, std::min(chunk, std::max(n_q, n_k)));
  LinearWorkspace<Scalar> ws;
  ws.reserve("linear_attention", c_len, m, d_v);
  LinearRunningState<Scalar> state;
  state.reset(m, d_v);

  // Absorbs keys [k0, k1) into the state, C at a time.
  const auto absorb_keys = [&](Index k0, Index k1) {
    for (Index j0 = k0; j0 < k1; j0 += c_len) {
      const Index rows = std::min(c_len, k1 - j0);
      auto phi_k = ws.phi_k.topRows(rows);
      const Scalar c = map.map_keys(CRef(k.middleRows(j0, rows)), MRef(phi_k));
      state.align(phi_k, c);
      state.absorb(phi_k, v.middleRows(j0, rows));
    }
  };

  if (mask.kind() == MaskKind::none) {
    absorb_keys(0, n_k);
    for (Index i0 = 0; i0 < n_q; i0 += c_len) {
      const Index rows = std::min(c_len, n_q - i0);
      auto phi_q = ws.phi_q.topRows(rows);
      auto log_q = ws.log_q.head(rows);
      map.map_queries(CRef(q.middleRows(i0, rows)), MRef(phi_q), VRef(log_q));
      ws.num.topRows(rows).noalias() = phi_q * state.s;
      ws.den.head(rows).noalias() = phi_q * state.z;
      linear_epilogue<Scalar>(ws, rows, state.log_scale, floor, out.middleRows(i0, rows),
                              lse.segment(i0, rows));
    }
    return;
  }

  // Query i sees keys j <= i + o.
  const Index o = mask.kind() == MaskKind::causal ? mask.offset() : mask.offset() - 1;
  absorb_keys(0, std::max<Index>(0, o));
  for (Index i0 = 0; i0 < n_q; i0 += c_len) {
    const Index rows = std::min(c_len, n_q - i0);
    const Index kb0 = std::max<Index>(0, i0 + o), kb1 = std::min(n_k, i0 + rows + o);
    const Index keys = std::max<Index>(0, kb1 - kb0);
    auto phi_q = ws.phi_q.topRows(rows);
    auto log_q = ws.log_q.head(rows);
    auto phi_k = ws.phi_k.topRows(keys);
    map.map_queries(CRef(q.middleRows(i0, rows)), MRef(phi_q), VRef(log_q));
    if (keys > 0) state.align(phi_k, map.map_keys(CRef(k.middleRows(kb0, keys)), MRef(phi_k)));
    // Inter-chunk term: everything before the block.
    ws.num.topRows(rows).noalias() = phi_q * state.s;
    ws.den.head(rows).noalias() = phi_q * state.z;
    if (keys > 0) {
      // Intra-chunk term: lower-triangular masked block.
      auto a = ws.a.topLeftCorner(rows, keys);
      a.noalias() = phi_q * phi_k.transpose();
      for (Index r = 0; r < rows; ++r) {
        const Index visible = std::clamp<Index>(i0 + r + o + 1 - kb0, 0, keys);  // keys t < visible
        a.row(r).tail(keys - visible).setZero();
      }
      ws.num.topRows(rows).noalias() += a * v.middleRows(kb0, keys);
      ws.den.head(rows).noalias() += a.rowwise().sum();
    }
    linear_epilogue<Scalar>(ws, rows, state.log_scale, floor, out.middleRows(i0, rows),
                            lse.segment(i0, rows));
    if (keys > 0) state.absorb(phi_k, v.middleRows(kb0, keys));
  }
}

}  // namespace detail

/// Kernelized linear attention written into caller-owned outputs (see the
/// file comment for the formula, the chunked causal form and the guard).
/// \param q (n_q x d), \param k (n_k x d), \param v (n_k x d_v): any Eigen
///        expression, converted once to row-major when it is not already.
/// \param map a FeatureMap (feature_maps.hpp) accepting width d.
/// \param out (n_q x d_v), \param lse (n_q): written, not resized.
/// \throws std::invalid_argument for empty inputs, mismatched shapes, a bad
///         mask offset, chunk < 1, a bad denominator_floor, a width the map
///         rejects, wrongly sized outputs or sizes whose products overflow;
///         nothing is written then.
template <typename DQ, typename DK, typename DV, typename FeatureMap>
void linear_attention_into(const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
                           const Eigen::MatrixBase<DV>& v, const FeatureMap& map,
                           Eigen::Ref<RowMatrix<typename DQ::Scalar>> out,
                           Eigen::Ref<Vector<typename DQ::Scalar>> lse,
                           const LinearAttentionOptions& options = {}) {
  using Scalar = typename DQ::Scalar;
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "linear_attention supports float and double");
  const char* where = "linear_attention";
  const AttentionProblem pb = make_attention_problem(where, q, k, v, {options.mask, std::nullopt});
  if (options.chunk < 1) detail::fail(where, ": chunk = ", options.chunk, " must be >= 1");
  const Scalar floor = detail::denominator_floor<Scalar>(where, options.denominator_floor);
  const Index m = map.features(pb.d);
  if (m < 1) detail::fail(where, ": the feature map gives m = ", m, " features; needs >= 1");
  detail::checked_product(where, "features x d_v", m, pb.d_v);
  detail::checked_product(where, "n_q x d_v", pb.n_q, pb.d_v);
  if (out.rows() != pb.n_q || out.cols() != pb.d_v)
    detail::fail(where, ": out ", detail::shape(out), " must be (n_q x d_v) = (", pb.n_q, " x ", pb.d_v, ")");
  if (lse.size() != pb.n_q) detail::fail(where, ": lse has ", lse.size(), " entries, needs n_q = ", pb.n_q);
  const Eigen::Ref<const RowMatrix<Scalar>> qr(q), kr(k), vr(v);
  detail::linear_attention_run<Scalar>(qr, kr, vr, map, m, pb.mask, options.chunk, floor, out, lse);
}

/// Kernelized linear attention.
/// \returns output (n_q x d_v) and lse (n_q) as in the file comment.
/// \throws std::invalid_argument as linear_attention_into.
///
/// \code
///   attnkit::PositiveRandomFeatures<float> favor(64, {256, /*seed=*/7});
///   auto r = attnkit::linear_attention(q, k, v, favor, {attnkit::Mask::causal()});
///   auto e = attnkit::linear_attention(q, k, v, attnkit::EluFeatureMap{});
/// \endcode
template <typename DQ, typename DK, typename DV, typename FeatureMap>
AttentionResult<typename DQ::Scalar> linear_attention(const Eigen::MatrixBase<DQ>& q,
                                                      const Eigen::MatrixBase<DK>& k,
                                                      const Eigen::MatrixBase<DV>& v, const FeatureMap& map,
                                                      const LinearAttentionOptions& options = {}) {
  using Scalar = typename DQ::Scalar;
  AttentionResult<Scalar> r{RowMatrix<Scalar>(q.rows(), v.cols()), Vector<Scalar>(q.rows())};
  linear_attention_into(q, k, v, map, r.output, r.lse, options);
  return r;
}

}  // namespace attnkit
