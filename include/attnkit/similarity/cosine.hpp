#pragma once

/// \file attnkit/similarity/cosine.hpp
/// Cosine attention: the logit of query q and key k is
///
///   z(q, k) = (q / ||q||) . (k / ||k||) / tau,     |z| <= 1 / tau,
///
/// with the convention that a zero vector's direction is the zero vector (its
/// logits are 0: a zero query attends uniformly, a zero key gets logit 0 from
/// every query) — never NaN by surprise. A NaN, or an infinite component
/// (whose direction is undefined), makes the logits it enters NaN.
///
/// The fused kernel normalises each query once (folding 1 / (tau ||q||) into
/// it), computes 1 / ||k|| once per key and call, and multiplies the tile
/// product by it. Each logit is within (2 d + 5) u / tau of its definition.
/// Temperature: tau replaces the logit scale, so AttentionOptions::scale must
/// be unset. Norms are sums of squares in the compute type: components beyond
/// about 1e19 (float) overflow them (then the logits are 0 or NaN).

#include <cmath>

#include "attnkit/attention/problem.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/similarity/score.hpp"

namespace attnkit {

/// Cosine score policy (see the file comment).
struct CosineScore {
  /// Temperature tau, finite and > 0.
  double tau = 1.0;

  static constexpr int key_terms = 1;
  static constexpr int query_terms = 0;
  static constexpr bool transforms = true;

  void check(const char* where, const AttentionProblem&, const AttentionOptions& options) const {
    if (!(std::isfinite(tau) && tau > 0))
      detail::fail(where, ": CosineScore tau = ", tau, " must be finite and > 0");
    if (options.scale)
      detail::fail(where, ": CosineScore sets its own temperature (tau = ", tau, "); leave the scale (",
                   *options.scale, ") unset");
  }

  /// 1 / ||x||, or 0 for a zero vector (NaN stays NaN).
  template <typename T>
  static T inverse_norm(T n2) {
    return n2 == T(0) ? T(0) : T(1) / std::sqrt(n2);
  }

  template <typename T>
  T logit(const T* q, const T* k, Index d, Index, Index, T) const {
    T dot = 0, nq = 0, nk = 0;
    for (Index c = 0; c < d; ++c) {
      dot += q[c] * k[c];
      nq += q[c] * q[c];
      nk += k[c] * k[c];
    }
    return dot * inverse_norm(nq) * inverse_norm(nk) / static_cast<T>(tau);
  }

  template <typename C>
  struct Kernel {
    C factor;  // log2(e) / tau
    C prepare_query(const C* q, Index d, Index, C* q_out, C*) const {
      C n2 = 0;
      for (Index c = 0; c < d; ++c)
        n2 += q[c] * q[c];
      const C f = factor * inverse_norm(n2);
      for (Index c = 0; c < d; ++c)
        q_out[c] = q[c] * f;
      return C(0);
    }
    template <typename S>
    void key(const S* k, Index d, Index, C* terms) const {
      C n2 = 0;
      for (Index c = 0; c < d; ++c) {
        const C x = detail::to_compute<C>(k[c]);
        n2 += x * x;
      }
      terms[0] = inverse_norm(n2);
    }
    template <typename Packet>
    Packet transform(const Packet& s, const Packet* kt, const Packet*) const {
      return Eigen::internal::pmul(s, kt[0]);
    }
  };

  template <typename C>
  Kernel<C> kernel(const AttentionProblem&) const {
    return {static_cast<C>(detail::log2e / tau)};
  }
};

}  // namespace attnkit
