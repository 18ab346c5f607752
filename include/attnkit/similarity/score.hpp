#pragma once

/// \file attnkit/similarity/score.hpp
/// Score policies: how the fused kernel (attnkit/attention/flash.hpp) and the
/// reference (attnkit/attention/reference.hpp) form the logit z_ij of query
/// row i and key row j. The default, DotProductScore, is z_ij = scale q_i . k_j.
///
/// A policy is a small copyable type P with
///
///   static constexpr int  key_terms;    // scalars computed once per key (>= 0)
///   static constexpr int  query_terms;  // scalars computed once per query (>= 0)
///   static constexpr bool transforms;   // whether transform() runs on every score
///
///   // Throws std::invalid_argument for parameters that do not fit the call.
///   void check(const char* where, const AttentionProblem& pb, const AttentionOptions& o) const;
///
///   // The definition: z of query q (position qpos) and key k (position
///   // kpos), natural-log units, in any floating type T. The reference
///   // evaluates it directly in a wider type; it is the oracle of the kernel.
///   template <typename T>
///   T logit(const T* q, const T* k, Index d, Index qpos, Index kpos, T scale) const;
///
///   // The kernel's form, bound once per call in the compute type C:
///   template <typename C> KernelForm kernel(const AttentionProblem& pb) const;
///
/// where KernelForm provides
///
///   // q_out = the query vector the tile product uses (d values), terms =
///   // its query_terms scalars; returns a per-row constant c_i (natural log)
///   // that is part of every logit of the row but left out of the tile (it
///   // cancels in the softmax and is added to the row's log-sum-exp).
///   C prepare_query(const C* q, Index d, Index qpos, C* q_out, C* terms) const;
///   // terms = the key_terms scalars of key row k (stored type S).
///   template <typename S> void key(const S* k, Index d, Index kpos, C* terms) const;
///   // The BASE-2 logit z_ij / ln 2 - c_i / ln 2 from the tile product
///   // s = q_out . k and the terms, on Eigen packets (or scalars) of C; the
///   // terms arrive as packets too (a broadcast where they are constant).
///   template <typename Packet>
///   Packet transform(const Packet& s, const Packet* key_terms, const Packet* query_terms) const;
///
/// so the kernel computes z_ij = ln 2 * transform(prepare_query(q_i) . k_j,
/// key(k_j), terms_i) + c_i. Without `transforms` the tile product itself is
/// the base-2 logit and transform() is never called. The tile product is the
/// dot product of the prepared query with the stored key: a policy shapes it
/// through prepare_query (a factor, a normalisation, a projection), and
/// expresses everything else (biases, per-key factors, non-linear maps)
/// through the terms and transform. docs/kernel.md walks through a minimal
/// policy.
///
/// Everything here is a pure function of its arguments; policies are shared
/// read-only by all threads of a call.

#include <cmath>
#include <type_traits>

#include "attnkit/attention/problem.hpp"

namespace attnkit {

namespace detail {

/// log2(e): the kernels keep logits in base 2, so that exp becomes exp2.
constexpr double log2e = 1.442695040888963407359924681001892137;

/// A stored element (float, double, or a 16-bit type with a conversion to
/// float) as the compute type C.
template <typename C, typename S>
inline C to_compute(const S& x) {
  if constexpr (std::is_same_v<C, S>)
    return x;
  else if constexpr (std::is_floating_point_v<S>)
    return static_cast<C>(x);
  else
    return static_cast<C>(static_cast<float>(x));
}

}  // namespace detail

/// The default policy: z_ij = scale q_i . k_j, scale from AttentionOptions
/// (1/sqrt(d) by default). In the kernel the queries are multiplied by
/// scale * log2(e) once, so the tile product is already the base-2 logit.
struct DotProductScore {
  static constexpr int key_terms = 0;
  static constexpr int query_terms = 0;
  static constexpr bool transforms = false;

  void check(const char*, const AttentionProblem&, const AttentionOptions&) const {}

  template <typename T>
  T logit(const T* q, const T* k, Index d, Index, Index, T scale) const {
    T s = T(0);
    for (Index c = 0; c < d; ++c)
      s += q[c] * k[c];
    return scale * s;
  }

  template <typename C>
  struct Kernel {
    /// scale * log2(e), rounded to C once.
    C factor;
    C prepare_query(const C* q, Index d, Index, C* q_out, C*) const {
      for (Index c = 0; c < d; ++c)
        q_out[c] = q[c] * factor;
      return C(0);
    }
    template <typename S>
    void key(const S*, Index, Index, C*) const {}
    template <typename Packet>
    Packet transform(const Packet& s, const Packet*, const Packet*) const {
      return s;
    }
  };

  template <typename C>
  Kernel<C> kernel(const AttentionProblem& pb) const {
    return Kernel<C>{static_cast<C>(pb.scale * detail::log2e)};
  }
};

namespace detail {

/// True for the default policy, whose reference path uses matrix products.
template <typename Policy>
constexpr bool is_dot_product_v = std::is_same_v<Policy, DotProductScore>;

/// Per-head form of a policy: P::for_head(h, heads) when P has it (e.g. a
/// per-head slope), the policy itself otherwise.
template <typename Policy, typename = void>
struct has_for_head : std::false_type {};
template <typename Policy>
struct has_for_head<Policy, std::void_t<decltype(std::declval<const Policy&>().for_head(Index(0), Index(1)))>>
    : std::true_type {};

template <typename Policy>
Policy policy_for_head(const Policy& p, Index head, Index heads) {
  if constexpr (has_for_head<Policy>::value)
    return p.for_head(head, heads);
  else
    return p;
}

}  // namespace detail

}  // namespace attnkit
