#pragma once

/// \file attnkit/similarity/softcap.hpp
/// Logit soft-capping (Gemma 2, Grok): the dot-product logit squashed into
/// (-cap, cap),
///
///   z(q, k) = cap tanh(scale q . k / cap),
///
/// scale from AttentionOptions (1/sqrt(d) by default). The fused kernel
/// folds scale / cap into the queries and applies cap log2(e) tanh(.) to the
/// score tile in registers. tanh has derivative <= 1, so each logit is
/// within the dot product's error plus a few ulp of cap of its definition.
/// Cost: one tanh (a rational function, ~20 flops) per score.

#include <cmath>

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
    C factor;   // scale / cap
    C outside;  // cap log2(e)
    C prepare_query(const C* q, Index d, Index, C* q_out, C*) const {
      for (Index c = 0; c < d; ++c)
        q_out[c] = q[c] * factor;
      return C(0);
    }
    template <typename S>
    void key(const S*, Index, Index, C*) const {}
    template <typename Packet>
    Packet transform(const Packet& s, const Packet*, const Packet*) const {
      return Eigen::internal::pmul(Eigen::internal::pset1<Packet>(outside), detail::packet_tanh(s));
    }
  };

  template <typename C>
  Kernel<C> kernel(const AttentionProblem& pb) const {
    return {static_cast<C>(pb.scale / cap), static_cast<C>(cap * detail::log2e)};
  }
};

}  // namespace attnkit
