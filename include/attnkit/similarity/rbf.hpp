#pragma once

/// \file attnkit/similarity/rbf.hpp
/// Distance (RBF) attention: the logit of query q and key k is
///
///   z(q, k) = -||q - k||^2 / (2 tau),
///
/// a Gaussian kernel in the softmax. It equals q . k / tau - ||k||^2 / (2 tau)
/// minus ||q||^2 / (2 tau), a per-query constant the softmax ignores: so the
/// fused kernel runs the dot product with the queries scaled by 1 / tau, ONE
/// per-key bias -||k||^2 / (2 tau) (computed once per key and call), and adds
/// the per-query constant to the row's log-sum-exp, which therefore is the
/// lse of the true logits (partials over different key sets merge exactly).
///
/// Numerics: the rewrite cancels when q ~ k with large norms; each logit is
/// within (d + 3) u (|q| |k| + ||k||^2 / 2) / tau of its definition (u the
/// unit roundoff), the same order as the dot product's error. Temperature:
/// tau replaces the logit scale, so AttentionOptions::scale must be unset.
/// Cost: the dot-product kernel plus one add per score and 2 d flops per key
/// (and one value of the compute type per key while the call runs).

#include <cmath>

#include "attnkit/attention/problem.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/similarity/score.hpp"

namespace attnkit {

/// RBF score policy (see the file comment).
struct RbfScore {
  /// Temperature tau, finite and > 0.
  double tau = 1.0;

  static constexpr int key_terms = 1;
  static constexpr int query_terms = 0;
  static constexpr bool transforms = true;

  void check(const char* where, const AttentionProblem&, const AttentionOptions& options) const {
    if (!(std::isfinite(tau) && tau > 0))
      detail::fail(where, ": RbfScore tau = ", tau, " must be finite and > 0");
    if (options.scale)
      detail::fail(where, ": RbfScore sets its own temperature (tau = ", tau, "); leave the scale (",
                   *options.scale, ") unset");
  }

  template <typename T>
  T logit(const T* q, const T* k, Index d, Index, Index, T) const {
    T s = 0;
    for (Index c = 0; c < d; ++c) {
      const T e = q[c] - k[c];
      s += e * e;
    }
    return -s / (T(2) * static_cast<T>(tau));
  }

  template <typename C>
  struct Kernel {
    C factor;  // log2(e) / tau
    C half;    // 1 / (2 tau)
    C prepare_query(const C* q, Index d, Index, C* q_out, C*) const {
      C n2 = 0;
      for (Index c = 0; c < d; ++c) {
        q_out[c] = q[c] * factor;
        n2 += q[c] * q[c];
      }
      return -n2 * half;
    }
    template <typename S>
    void key(const S* k, Index d, Index, C* terms) const {
      C n2 = 0;
      for (Index c = 0; c < d; ++c) {
        const C x = detail::to_compute<C>(k[c]);
        n2 += x * x;
      }
      terms[0] = -n2 * half * C(detail::log2e);
    }
    template <typename Packet>
    Packet transform(const Packet& s, const Packet* kt, const Packet*) const {
      return Eigen::internal::padd(s, kt[0]);
    }
  };

  template <typename C>
  Kernel<C> kernel(const AttentionProblem&) const {
    return {static_cast<C>(detail::log2e / tau), static_cast<C>(0.5 / tau)};
  }
};

}  // namespace attnkit
