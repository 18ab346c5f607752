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
/// within the dot product's error plus a few ulp of cap of its definition
/// (6.2 u of cap at most in float; |logit| <= cap (1 + 4 u)).

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

  /// The largest cap the float kernel takes: s P(x^2) reaches 46 s at the
  /// clamp (detail::packet_scaled_tanh), with s = cap log2(e); beyond it a
  /// float logit would overflow. A cap that large changes no float logit.
  static constexpr double max_float_cap = 1e35;

  /// \throws std::invalid_argument for a float kernel and cap > max_float_cap.
  template <typename C>
  Kernel<C> kernel(const AttentionProblem& pb) const {
    if (std::is_same_v<C, float> && cap > max_float_cap)
      detail::fail("SoftcapScore: cap = ", cap, " exceeds ", max_float_cap,
                   ", the largest the float kernel represents (a cap that large changes no float logit: use "
                   "the dot product)");
    return {static_cast<C>(pb.scale / cap), detail::ScaledTanh<C>(cap * detail::log2e)};
  }
};

}  // namespace attnkit
