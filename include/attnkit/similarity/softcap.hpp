#pragma once

/// \file attnkit/similarity/softcap.hpp
/// Logit soft-capping (Gemma 2, Grok): the dot-product logit squashed into
/// (-cap, cap),
///
///   z(q, k) = cap tanh(scale q . k / cap),
///
/// scale from AttentionOptions (1/sqrt(d) by default). The fused kernel
/// folds scale / cap into the queries and applies cap log2(e) tanh(.) to the
/// score tile in registers (detail::packet_scaled_tanh: in float a rational
/// function with cap log2(e) folded into its numerator, 12 vector operations
/// and a division per packet). tanh has derivative <= 1, so each logit is
/// within the dot product's error plus the tanh's, below 21 u of cap in
/// float (5-6 u measured) and 4.5 u in double, of its definition. A float
/// kernel takes caps in [1e-30, 1e35] (max_float_cap, min_float_cap).

#include <cmath>
#include <type_traits>

#include "attnkit/attention/problem.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/similarity/detail/packet_math.hpp"
#include "attnkit/similarity/score.hpp"

namespace attnkit {

/// Soft-capping score policy (see the file comment).
struct SoftcapScore {
  /// The cap, finite and > 0 (Gemma 2 uses 50 for attention logits).
  double cap = 50.0;

  static constexpr int key_terms = 0;
  static constexpr int query_terms = 0;
  static constexpr bool transforms = true;

  void check(const char* where, const AttentionProblem&, const AttentionOptions&) const {
    if (!(std::isfinite(cap) && cap > 0))
      detail::fail(where, ": SoftcapScore cap = ", cap, " must be finite and > 0");
  }

  template <typename T>
  T logit(const T* q, const T* k, Index d, Index, Index, T scale) const {
    T s = 0;
    for (Index c = 0; c < d; ++c)
      s += q[c] * k[c];
    return static_cast<T>(cap) * std::tanh(scale * s / static_cast<T>(cap));
  }

  template <typename C>
  struct Kernel {
    C factor;                     // scale / cap
    detail::ScaledTanh<C> tanh_;  // cap log2(e) tanh(.)
    C prepare_query(const C* q, Index d, Index, C* q_out, C*) const {
      for (Index c = 0; c < d; ++c)
        q_out[c] = q[c] * factor;
      return C(0);
    }
    template <typename S>
    void key(const S*, Index, Index, C*) const {}
    template <typename Packet>
    Packet transform(const Packet& s, const Packet*, const Packet*) const {
      return detail::packet_scaled_tanh(s, tanh_);
    }
  };

  /// The caps a float kernel takes. detail::packet_scaled_tanh folds
  /// s = cap log2(e) into its numerator: x s P(x^2) reaches 9 * 46.4 s, about
  /// 602 cap, at the clamp, past the float range above 5.6e35; and the
  /// smallest coefficient s * 1.34e-8 is subnormal below 6e-31.
  static constexpr double max_float_cap = 1e35, min_float_cap = 1e-30;

  /// \throws std::invalid_argument for a float kernel and a cap outside
  ///         [min_float_cap, max_float_cap].
  template <typename C>
  Kernel<C> kernel(const AttentionProblem& pb) const {
    if (std::is_same_v<C, float> && !(cap >= min_float_cap && cap <= max_float_cap))
      detail::fail("SoftcapScore: cap = ", cap, " is outside [", min_float_cap, ", ", max_float_cap,
                   "], the caps the float kernel takes (its tanh's numerator would overflow or lose its "
                   "precision; compute in double)");
    return {static_cast<C>(pb.scale / cap), detail::ScaledTanh<C>(cap * detail::log2e)};
  }
};

}  // namespace attnkit
