#pragma once

/// \file attnkit/linear/linear_state.hpp
/// Streaming (decode) state of kernelized linear attention: the recurrent
/// form of attnkit/linear/linear_attention.hpp, one token at a time.
///
/// The state holds S = sum_j phi(k_j) v_j^T (m x d_v) and z = sum_j phi(k_j)
/// (m) over the tokens appended so far, with one shared log-scale (keys whose
/// features need a larger stabilising factor rescale the state, never the
/// other way, so nothing overflows). A query sees every token appended before
/// the call:
///   out = phi(q)^T S / max(phi(q)^T z, floor),   lse = log(phi(q)^T z)
/// (the guard of linear_attention.hpp: the zero row and lse = -inf before
/// any token is appended). Appending token t then querying q_t gives row t of
/// linear_attention with Mask::causal(); querying before appending gives
/// Mask::strict_causal().
///
/// Cost per appended token O(m (d + d_v)), per query O(m (d + d_v)); memory
/// O(m d_v) regardless of the number of tokens. Accumulating S and z in
/// Scalar adds one rounding per token: after n tokens the sums carry a
/// relative error of at most about n u (u the unit roundoff), typically
/// sqrt(n) u; the output a corresponding error of 2 n u max |v|.
///
/// Thread safety: query() is const and safe to call concurrently; append()
/// and reset() need exclusive access. The state owns a copy of the feature
/// map (a FAVOR+ map redrawn elsewhere does not affect it).

#include <type_traits>
#include <utility>

#include "attnkit/attention/problem.hpp"
#include "attnkit/linear/detail/linear_kernel.hpp"

namespace attnkit {

/// Options of LinearAttentionState.
struct LinearStateOptions {
  /// Guard of the normaliser as LinearAttentionOptions::denominator_floor;
  /// std::nullopt = the smallest normal number of Scalar.
  std::optional<double> denominator_floor{};
};

/// Running state of linear attention over an appended token stream.
/// \tparam Scalar float or double.
/// \tparam FeatureMap a FeatureMap (attnkit/linear/feature_maps.hpp).
template <typename Scalar, typename FeatureMap>
class LinearAttentionState {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "LinearAttentionState supports float and double");

 public:
  /// An empty state for keys of width d and values of width d_v.
  /// \throws std::invalid_argument for d or d_v < 1, a width the map
  ///         rejects, a bad floor or m x d_v overflowing Index.
  LinearAttentionState(FeatureMap map, Index d, Index d_v, const LinearStateOptions& options = {})
      : map_(std::move(map)), d_(d), d_v_(d_v) {
    const char* where = "LinearAttentionState";
    if (d < 1 || d_v < 1) detail::fail(where, ": d = ", d, " and d_v = ", d_v, " must both be >= 1");
    m_ = map_.features(d);
    if (m_ < 1) detail::fail(where, ": the feature map gives m = ", m_, " features; needs >= 1");
    detail::checked_product(where, "features x d_v", m_, d_v);
    floor_ = detail::denominator_floor<Scalar>(where, options.denominator_floor);
    state_.reset(m_, d_v_);
  }

  /// Appends tokens: k (t x d) keys and v (t x d_v) values, t >= 1, in
  /// sequence order. O(t m (d + d_v)).
  /// \throws std::invalid_argument for empty or mismatched shapes; the state
  ///         is unchanged then.
  template <typename DK, typename DV>
  void append(const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v) {
    static_assert(std::is_same_v<typename DK::Scalar, Scalar> && std::is_same_v<typename DV::Scalar, Scalar>,
                  "append: k and v must have the state's Scalar type");
    const char* where = "LinearAttentionState::append";
    detail::require_non_empty(where, "k", k);
    if (k.cols() != d_ || v.cols() != d_v_ || k.rows() != v.rows())
      detail::fail(where, ": k ", detail::shape(k), " and v ", detail::shape(v), " must be (t x d) = (t x ",
                   d_, ") and (t x d_v) = (t x ", d_v_, ") with the same t");
    const Eigen::Ref<const RowMatrix<Scalar>> kr(k), vr(v);
    RowMatrix<Scalar> phi(k.rows(), m_);
    const Scalar c = map_.map_keys(kr, Eigen::Ref<RowMatrix<Scalar>>(phi));
    state_.align(phi, c);
    state_.absorb(phi, vr);
    tokens_ += k.rows();
  }

  /// Attends each row of q (n x d) to every token appended so far.
  /// \returns output (n x d_v) and lse (n).
  /// \throws std::invalid_argument for an empty q or a width other than d.
  template <typename DQ>
  AttentionResult<Scalar> query(const Eigen::MatrixBase<DQ>& q) const {
    static_assert(std::is_same_v<typename DQ::Scalar, Scalar>, "query: q must have the state's Scalar type");
    const char* where = "LinearAttentionState::query";
    detail::require_non_empty(where, "q", q);
    if (q.cols() != d_) detail::fail(where, ": q ", detail::shape(q), " must have width d = ", d_);
    const Index n = q.rows();
    detail::LinearWorkspace<Scalar> ws;
    ws.phi_q.resize(n, m_);
    ws.log_q.resize(n);
    const Eigen::Ref<const RowMatrix<Scalar>> qr(q);
    map_.map_queries(qr, Eigen::Ref<RowMatrix<Scalar>>(ws.phi_q), Eigen::Ref<Vector<Scalar>>(ws.log_q));
    ws.num.noalias() = ws.phi_q * state_.s;
    ws.den.noalias() = ws.phi_q * state_.z;
    AttentionResult<Scalar> r{RowMatrix<Scalar>(n, d_v_), Vector<Scalar>(n)};
    detail::linear_epilogue<Scalar>(ws, n, state_.log_scale, floor_, r.output, r.lse);
    return r;
  }

  /// Forgets every token (keeps the map and the widths).
  void reset() {
    state_.reset(m_, d_v_);
    tokens_ = 0;
  }

  /// Tokens appended since construction or the last reset.
  Index tokens() const { return tokens_; }
  Index dim() const { return d_; }
  Index value_dim() const { return d_v_; }
  /// Feature count m.
  Index features() const { return m_; }
  const FeatureMap& feature_map() const { return map_; }

 private:
  FeatureMap map_;
  Index d_, d_v_, m_ = 0;
  Scalar floor_ = 0;
  detail::LinearRunningState<Scalar> state_;
  Index tokens_ = 0;
};

}  // namespace attnkit
