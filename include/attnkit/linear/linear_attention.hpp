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
/// Threads (LinearAttentionOptions::threads, default 1; OpenMP when the
/// including translation unit is compiled with it, link attnkit::openmp).
/// With T threads the work is split into T chunk-aligned ranges. Without a
/// mask, each thread absorbs one range of keys, the T states are merged in
/// order, and each thread answers one range of queries. With a causal mask,
/// pass 1 builds, in parallel, the state of the keys each query range adds
/// (the last range's keys are nobody's prefix), T - 1 merges give each range
/// its prefix state, and pass 2 runs the chunk loop above on every range
/// from its prefix state: about (1 + (T - 1)/T * w_k) / T of the serial time,
/// w_k ~ 0.4 being the share of key features and absorption. The summation
/// order depends on T, so results for different thread counts agree within
/// the accuracy bound below, not bit for bit; for a given T they are
/// deterministic. The feature map is then called from several threads at
/// once (its calls must be safe to run concurrently, as the built-in maps'
/// are); an exception thrown by it is rethrown on the calling thread.
/// A pure function: concurrent calls are safe when the map's calls are.

#include <algorithm>
#include <exception>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit/attention/problem.hpp"
#include "attnkit/core/mask.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/detail/parallel.hpp"
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
  /// Threads: 1 (default) = the calling thread only, 0 = OpenMP's default
  /// (all cores), n = at most n; capped so every thread gets two chunks.
  /// Ignored without OpenMP (see the file comment, "Threads").
  int threads = 1;
};

namespace detail {

template <typename Scalar>
using LinearCRef = Eigen::Ref<const RowMatrix<Scalar>>;

/// Absorbs keys [k0, k1) into `state`, C at a time.
template <typename Scalar, typename FeatureMap>
void linear_absorb_keys(const FeatureMap& map, const LinearCRef<Scalar>& k, const LinearCRef<Scalar>& v,
                        Index k0, Index k1, Index c_len, LinearWorkspace<Scalar>& ws,
                        LinearRunningState<Scalar>& state) {
  for (Index j0 = k0; j0 < k1; j0 += c_len) {
    const Index rows = std::min(c_len, k1 - j0);
    auto phi_k = ws.phi_k.topRows(rows);
    const Scalar c =
        map.map_keys(LinearCRef<Scalar>(k.middleRows(j0, rows)), Eigen::Ref<RowMatrix<Scalar>>(phi_k));
    state.align(phi_k, c);
    state.absorb(phi_k, v.middleRows(j0, rows));
  }
}

/// Queries [i0, i1) against a state that holds every key they see.
template <typename Scalar, typename FeatureMap>
void linear_query_rows(const FeatureMap& map, const LinearCRef<Scalar>& q, Index i0, Index i1, Index c_len,
                       LinearWorkspace<Scalar>& ws, const LinearRunningState<Scalar>& state, Scalar floor,
                       Eigen::Ref<RowMatrix<Scalar>> out, Eigen::Ref<Vector<Scalar>> lse) {
  for (; i0 < i1; i0 += c_len) {
    const Index rows = std::min(c_len, i1 - i0);
    auto phi_q = ws.phi_q.topRows(rows);
    auto log_q = ws.log_q.head(rows);
    map.map_queries(LinearCRef<Scalar>(q.middleRows(i0, rows)), Eigen::Ref<RowMatrix<Scalar>>(phi_q),
                    Eigen::Ref<Vector<Scalar>>(log_q));
    ws.num.topRows(rows).noalias() = phi_q * state.s;
    ws.den.head(rows).noalias() = phi_q * state.z;
    linear_epilogue<Scalar>(ws, rows, state.log_scale, floor, out.middleRows(i0, rows),
                            lse.segment(i0, rows));
  }
}

/// The chunked causal loop over queries [i0, i1), query i seeing keys
/// j <= i + o; `state` holds the keys [0, clamp(i0 + o, 0, n_k)) on entry.
template <typename Scalar, typename FeatureMap>
void linear_causal_rows(const FeatureMap& map, const LinearCRef<Scalar>& q, const LinearCRef<Scalar>& k,
                        const LinearCRef<Scalar>& v, Index o, Index i_begin, Index i_end, Index c_len,
                        LinearWorkspace<Scalar>& ws, LinearRunningState<Scalar>& state, Scalar floor,
                        Eigen::Ref<RowMatrix<Scalar>> out, Eigen::Ref<Vector<Scalar>> lse) {
  const Index n_k = k.rows();
  for (Index i0 = i_begin; i0 < i_end; i0 += c_len) {
    const Index rows = std::min(c_len, i_end - i0);
    const Index kb0 = std::clamp<Index>(i0 + o, 0, n_k), kb1 = std::clamp<Index>(i0 + rows + o, 0, n_k);
    const Index keys = std::max<Index>(0, kb1 - kb0);
    auto phi_q = ws.phi_q.topRows(rows);
    auto log_q = ws.log_q.head(rows);
    auto phi_k = ws.phi_k.topRows(keys);
    map.map_queries(LinearCRef<Scalar>(q.middleRows(i0, rows)), Eigen::Ref<RowMatrix<Scalar>>(phi_q),
                    Eigen::Ref<Vector<Scalar>>(log_q));
    if (keys > 0)
      state.align(phi_k, map.map_keys(LinearCRef<Scalar>(k.middleRows(kb0, keys)),
                                      Eigen::Ref<RowMatrix<Scalar>>(phi_k)));
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

/// Runs body(item) for item = 0 .. items - 1 on `team` threads (one item per
/// thread), rethrowing the first exception after the parallel region.
template <typename Body>
void linear_parallel_items(int team, Body&& body) {
  std::exception_ptr error;
  ATTNKIT_PRAGMA(omp parallel for num_threads(team) schedule(static, 1))
  for (int item = 0; item < team; ++item) {
    try {
      body(item);
    } catch (...) {
      ATTNKIT_PRAGMA(omp critical(attnkit_linear_attention_error)) {
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

template <typename Scalar, typename FeatureMap>
void linear_attention_run(const LinearCRef<Scalar>& q, const LinearCRef<Scalar>& k,
                          const LinearCRef<Scalar>& v, const FeatureMap& map, Index m, const MaskLayout& mask,
                          Index chunk, int threads, Scalar floor, Eigen::Ref<RowMatrix<Scalar>> out,
                          Eigen::Ref<Vector<Scalar>> lse) {
  const Index n_q = q.rows(), n_k = k.rows(), d_v = v.cols();
  const Index c_len = std::max<Index>(1, std::min(chunk, std::max(n_q, n_k)));
  // Threads only pay when every thread gets at least two chunks.
  const Index chunks = (std::max(n_q, n_k) + c_len - 1) / c_len;
  const int team =
      static_cast<int>(std::min<Index>(resolve_threads(threads), std::max<Index>(1, chunks / 2)));
  std::vector<LinearWorkspace<Scalar>> ws(static_cast<std::size_t>(team));
  for (auto& w : ws)
    w.reserve("linear_attention", c_len, m, d_v);
  std::vector<LinearRunningState<Scalar>> part(static_cast<std::size_t>(team));
  for (auto& p : part)
    p.reset(m, d_v);
  const auto at = [](auto& vec, Index i) -> auto& {
    return vec[static_cast<std::size_t>(i)];
  };
  // Chunk-aligned split of [0, n) into `team` ranges: range t is [split(n, t), split(n, t + 1)).
  const auto split = [&](Index n, Index t) {
    const Index nc = (n + c_len - 1) / c_len;
    return std::min(n, nc * t / team * c_len);
  };

  if (mask.kind() == MaskKind::none) {
    // Key ranges absorbed in parallel, merged in order, then query ranges.
    linear_parallel_items(team, [&](int t) {
      linear_absorb_keys(map, k, v, split(n_k, t), split(n_k, t + 1), c_len, at(ws, t), at(part, t));
    });
    for (int t = 1; t < team; ++t)
      at(part, 0).merge(at(part, t));
    linear_parallel_items(team, [&](int t) {
      linear_query_rows(map, q, split(n_q, t), split(n_q, t + 1), c_len, at(ws, t), at(part, 0), floor, out,
                        lse);
    });
    return;
  }

  // Query i sees keys j <= i + o.
  const Index o = mask.kind() == MaskKind::causal ? mask.offset() : mask.offset() - 1;
  const auto key_bound = [&](Index i) { return std::clamp<Index>(i + o, 0, n_k); };
  // Pass 0: the keys before the first query's block, [0, key_bound(0)),
  // split over the threads and merged in order (a decode-like call has
  // little else).
  const Index prefix = key_bound(0);
  std::vector<LinearRunningState<Scalar>> head(static_cast<std::size_t>(team));
  for (auto& h : head)
    h.reset(m, d_v);
  linear_parallel_items(team, [&](int t) {
    linear_absorb_keys(map, k, v, split(prefix, t), split(prefix, t + 1), c_len, at(ws, t), at(head, t));
  });
  at(part, 0) = std::move(at(head, 0));
  for (int t = 1; t < team; ++t)
    at(part, 0).merge(at(head, t));
  // Pass 1: item t >= 1 absorbs the keys that query range t - 1 adds (the
  // last range's keys are nobody's prefix).
  linear_parallel_items(team, [&](int t) {
    if (t == 0) return;
    linear_absorb_keys(map, k, v, key_bound(split(n_q, t - 1)), key_bound(split(n_q, t)), c_len, at(ws, t),
                       at(part, t));
  });
  // Prefix states: range t starts from items 0 .. t.
  for (int t = 1; t < team; ++t) {
    LinearRunningState<Scalar> next = at(part, t - 1);
    next.merge(at(part, t));
    at(part, t) = std::move(next);
  }
  // Pass 2: every range runs the chunk loop from its prefix state.
  linear_parallel_items(team, [&](int t) {
    linear_causal_rows(map, q, k, v, o, split(n_q, t), split(n_q, t + 1), c_len, at(ws, t), at(part, t),
                       floor, out, lse);
  });
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
  if (pb.mask.banded() || pb.mask.sinks() > 0)
    detail::fail(where,
                 ": sliding windows and attention sinks are not supported (window = ", pb.mask.window(),
                 ", sinks = ", pb.mask.sinks(), "): the prefix-sum state covers whole prefixes");
  if (options.chunk < 1) detail::fail(where, ": chunk = ", options.chunk, " must be >= 1");
  if (options.threads < 0)
    detail::fail(where, ": threads = ", options.threads, " must be >= 0 (0 = all cores)");
  const Scalar floor = detail::denominator_floor<Scalar>(where, options.denominator_floor);
  const Index m = map.features(pb.d);
  if (m < 1) detail::fail(where, ": the feature map gives m = ", m, " features; needs >= 1");
  detail::checked_product(where, "features x d_v", m, pb.d_v);
  detail::checked_product(where, "n_q x d_v", pb.n_q, pb.d_v);
  if (out.rows() != pb.n_q || out.cols() != pb.d_v)
    detail::fail(where, ": out ", detail::shape(out), " must be (n_q x d_v) = (", pb.n_q, " x ", pb.d_v, ")");
  if (lse.size() != pb.n_q) detail::fail(where, ": lse has ", lse.size(), " entries, needs n_q = ", pb.n_q);
  const Eigen::Ref<const RowMatrix<Scalar>> qr(q), kr(k), vr(v);
  // One row through each map call first: a map that rejects the width or
  // returns the wrong shape throws here, before anything is written.
  {
    RowMatrix<Scalar> phi(1, m);
    Vector<Scalar> log_scale(1);
    map.map_queries(detail::LinearCRef<Scalar>(qr.topRows(1)), Eigen::Ref<RowMatrix<Scalar>>(phi),
                    Eigen::Ref<Vector<Scalar>>(log_scale));
    map.map_keys(detail::LinearCRef<Scalar>(kr.topRows(1)), Eigen::Ref<RowMatrix<Scalar>>(phi));
  }
  detail::linear_attention_run<Scalar>(qr, kr, vr, map, m, pb.mask, options.chunk, options.threads, floor,
                                       out, lse);
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
