#pragma once

/// \file attnkit/similarity/hyperbolic.hpp
/// Hyperbolic attention in the Poincare ball of curvature -c (c > 0, radius
/// 1 / sqrt(c)): the logit of query q and key k is minus their geodesic
/// distance over a temperature,
///
///   z(q, k) = -d_c(q, k) / tau,
///   d_c(x, y) = (2 / sqrt(c)) artanh(sqrt(c) ||(-x) (+)_c y||)
///             = (1 / sqrt(c)) arcosh(1 + 2 c ||x - y||^2 / ((1 - c ||x||^2) (1 - c ||y||^2))),
///
/// ((+)_c the Mobius addition; the two forms are equal). Near the origin
/// d_c(x, y) -> 2 ||x - y||: Euclidean attention with a doubled scale.
///
/// Points on or outside the ball are projected inside first: a point with
/// ||x|| > (1 - margin) / sqrt(c) is scaled back to that radius (the usual
/// margin of hyperbolic networks: hyperbolic_score<float> uses 4e-3,
/// hyperbolic_score<double> 1e-5), so every distance is finite. The margin is
/// part of the definition: the reference projects with the same one.
///
/// The fused kernel computes the distance from ||x||^2, ||y||^2 and x . y
/// (the tile product): per query and per key the projected squared norm and
/// 1 / (1 - c ||.||^2), once; per score
///   t = 2 c max(0, ||x||^2 + ||y||^2 - 2 x . y) / ((1 - c ||x||^2)(1 - c ||y||^2)),
///   d = log1p(t + sqrt(t (t + 2))) / sqrt(c),
/// i.e. arcosh(1 + t) without the cancellation of 1 + t. Accuracy: t carries
/// an absolute error of about (d + 4) u (||x||^2 + ||y||^2 + 2 |x||y|) c /
/// ((1 - c||x||^2)(1 - c||y||^2)) from the norms and the dot product, and
/// arcosh(1 + t) has derivative 1 / sqrt(t (t + 2)): far from the query
/// (t >> u) d is as accurate as t, but for points that (nearly) coincide
/// (t ~ u) the distance is only known to about sqrt(2 dt), of order
/// sqrt(u) / sqrt(c) — intrinsic to forming it from norms and a dot product,
/// as Euclidean distances formed from norms are. It grows towards the
/// boundary by the factors 1 / (1 - c ||.||^2) <= 1 / (2 margin).
/// Cost: a log and a sqrt per score (~40 flops): the slowest policy.

#include <cmath>
#include <type_traits>

#include "attnkit/attention/problem.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/similarity/detail/packet_math.hpp"
#include "attnkit/similarity/score.hpp"

namespace attnkit {

/// Hyperbolic (Poincare ball) score policy (see the file comment).
struct HyperbolicScore {
  /// c > 0, finite: the ball has radius 1 / sqrt(c).
  double curvature = 1.0;
  /// tau > 0, finite.
  double tau = 1.0;
  /// Projection margin in (0, 1): points are kept within (1 - margin) / sqrt(c).
  double margin = 4e-3;

  static constexpr int key_terms = 3;
  static constexpr int query_terms = 2;
  static constexpr bool transforms = true;

  void check(const char* where, const AttentionProblem&, const AttentionOptions& options) const {
    if (!(std::isfinite(curvature) && curvature > 0))
      detail::fail(where, ": HyperbolicScore curvature c = ", curvature, " must be finite and > 0");
    if (!(std::isfinite(tau) && tau > 0))
      detail::fail(where, ": HyperbolicScore tau = ", tau, " must be finite and > 0");
    if (!(margin > 0 && margin < 1))
      detail::fail(where, ": HyperbolicScore margin = ", margin, " must be in (0, 1)");
    if (options.scale)
      detail::fail(where, ": HyperbolicScore sets its own temperature (tau = ", tau, "); leave the scale (",
                   *options.scale, ") unset");
  }

  /// The factor that projects a point of squared norm n2 inside the ball.
  template <typename T>
  T projection(T n2) const {
    return project(n2, (T(1) - static_cast<T>(margin)) / std::sqrt(static_cast<T>(curvature)));
  }

  /// d_c(x, y) after projection, by the arcosh form with ||x - y||^2 formed
  /// from the difference (the definition the reference uses).
  template <typename T>
  T distance(const T* x, const T* y, Index d) const {
    T nx = 0, ny = 0;
    for (Index c = 0; c < d; ++c) {
      nx += x[c] * x[c];
      ny += y[c] * y[c];
    }
    const T ax = projection(nx), ay = projection(ny);
    // a x - b y as a (x - y) + (a - b) y: exactly 0 for identical points
    // whether or not the compiler fuses the products into multiply-adds,
    // and no cancellation between two rounded products for nearby ones.
    T diff = 0;
    for (Index c = 0; c < d; ++c) {
      const T e = ax * (x[c] - y[c]) + (ax - ay) * y[c];
      diff += e * e;
    }
    const T cc = static_cast<T>(curvature);
    const T t = T(2) * cc * diff / ((T(1) - cc * ax * ax * nx) * (T(1) - cc * ay * ay * ny));
    return std::log1p(t + std::sqrt(t * (t + T(2)))) / std::sqrt(cc);
  }

  template <typename T>
  T logit(const T* q, const T* k, Index d, Index, Index, T) const {
    return -distance(q, k, d) / static_cast<T>(tau);
  }

  /// The projection factor in type T for the ball radius r = (1 - margin) / sqrt(c).
  template <typename T>
  static T project(T n2, T r) {
    return n2 > r * r ? r / std::sqrt(n2) : T(1);
  }

  template <typename C>
  struct Kernel {
    C radius;         // (1 - margin) / sqrt(c), rounded to C once
    C c, two_c, out;  // c, 2 c, -log2(e) / (tau sqrt(c))
    C prepare_query(const C* q, Index d, Index, C* q_out, C* terms) const {
      C n2 = 0;
      for (Index i = 0; i < d; ++i)
        n2 += q[i] * q[i];
      const C a = project(n2, radius);
      for (Index i = 0; i < d; ++i)
        q_out[i] = a * q[i];
      const C m2 = c * a * a * n2;  // c ||q~||^2
      terms[0] = m2;
      terms[1] = C(1) / (C(1) - m2);
      return C(0);
    }
    template <typename S>
    void key(const S* k, Index d, Index, C* terms) const {
      C n2 = 0;
      for (Index i = 0; i < d; ++i) {
        const C x = detail::to_compute<C>(k[i]);
        n2 += x * x;
      }
      const C a = project(n2, radius);
      const C m2 = c * a * a * n2;
      terms[0] = two_c * a;
      terms[1] = m2;
      terms[2] = C(2) / (C(1) - m2);
    }
    template <typename Packet>
    Packet transform(const Packet& s, const Packet* kt, const Packet* qt) const {
      namespace ei = Eigen::internal;
      // c ||q~ - k~||^2 = c ||q~||^2 + c ||k~||^2 - (2 c a_k) (q~ . k), clamped at 0.
      Packet num = ei::psub(ei::padd(qt[0], kt[1]), ei::pmul(kt[0], s));
      num = ei::pmax(num, ei::pzero(num));
      const Packet t = ei::pmul(num, ei::pmul(qt[1], kt[2]));
      const Packet root = ei::psqrt(ei::pmul(t, ei::padd(t, ei::pset1<Packet>(C(2)))));
      return ei::pmul(ei::pset1<Packet>(out), detail::packet_log1p(ei::padd(t, root)));
    }
  };

  template <typename C>
  Kernel<C> kernel(const AttentionProblem&) const {
    return {static_cast<C>((1 - margin) / std::sqrt(curvature)), static_cast<C>(curvature),
            static_cast<C>(2 * curvature), static_cast<C>(-detail::log2e / (tau * std::sqrt(curvature)))};
  }
};

/// A hyperbolic policy with the projection margin for inputs of type Scalar
/// (4e-3 for float, 1e-5 for double and wider).
template <typename Scalar>
HyperbolicScore hyperbolic_score(double curvature, double tau) {
  return HyperbolicScore{curvature, tau, std::is_same_v<Scalar, float> ? 4e-3 : 1e-5};
}

}  // namespace attnkit
