#pragma once

/// \file attnkit/similarity/alibi.hpp
/// ALiBi (Press et al. 2022, "Train Short, Test Long"): the dot-product logit
/// plus a linear penalty on the distance between the query's and the key's
/// positions,
///
///   z(q_i, k_j) = scale q_i . k_j - m |i - j|,
///
/// positions as the mask defines them (query row i at offset + i, key j at its
/// position in the key sequence). Under a causal mask (j <= i) this is the
/// paper's -m (i - j); without one it is the usual symmetric extension. Head
/// h of H uses the standard slope m_h = 2^(-8 (h + 1) / H) for H a power of
/// two; otherwise the slopes of the next lower power of two n, then every
/// other slope of 2n (the reference implementation's rule). AlibiScore::
/// standard() picks the slope by head through the multi-head entry points
/// (attnkit/attention/heads.hpp); AlibiScore{m} uses one slope for every head.
///
/// The kernel keeps the positions as per-key and per-query terms and adds
/// -m log2(e) |i - j| to each score in registers. Positions are exact in the
/// compute type up to 2^24 (float) or 2^53 (double); beyond, the distance is
/// rounded to that precision.

#include <cmath>
#include <optional>

#include "attnkit/attention/problem.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/similarity/score.hpp"

namespace attnkit {

/// The standard ALiBi slope of head h among `heads` (see the file comment).
/// \throws std::invalid_argument unless 0 <= h < heads.
inline double alibi_slope(Index h, Index heads) {
  if (heads < 1 || h < 0 || h >= heads)
    detail::fail("alibi_slope: head ", h, " must be in [0, heads) with heads = ", heads, " >= 1");
  Index n = 1;
  while (2 * n <= heads)
    n *= 2;
  const auto slope = [](Index k, Index count) {
    return std::pow(2.0, -8.0 * static_cast<double>(k + 1) / static_cast<double>(count));
  };
  if (h < n) return slope(h, n);
  return slope(2 * (h - n), 2 * n);  // every other slope of 2n: indices 0, 2, 4, ...
}

/// ALiBi score policy (see the file comment).
struct AlibiScore {
  /// The slope m (finite, >= 0); std::nullopt = the standard slope of the head.
  std::optional<double> slope{};

  /// The standard per-head slopes.
  static AlibiScore standard() { return AlibiScore{}; }

  static constexpr int key_terms = 1;
  static constexpr int query_terms = 1;
  static constexpr bool transforms = true;

  /// The policy of head h among `heads`: the standard slope unless one is set.
  AlibiScore for_head(Index h, Index heads) const {
    return slope ? *this : AlibiScore{alibi_slope(h, heads)};
  }

  void check(const char* where, const AttentionProblem&, const AttentionOptions&) const {
    if (slope && !(std::isfinite(*slope) && *slope >= 0))
      detail::fail(where, ": AlibiScore slope = ", *slope, " must be finite and >= 0");
  }

  template <typename T>
  T logit(const T* q, const T* k, Index d, Index qpos, Index kpos, T scale) const {
    T s = 0;
    for (Index c = 0; c < d; ++c)
      s += q[c] * k[c];
    const T m = static_cast<T>(slope.value_or(alibi_slope(0, 1)));
    return scale * s - m * static_cast<T>(qpos > kpos ? qpos - kpos : kpos - qpos);
  }

  template <typename C>
  struct Kernel {
    C factor;  // scale log2(e)
    C m2;      // slope log2(e)
    C prepare_query(const C* q, Index d, Index qpos, C* q_out, C* terms) const {
      for (Index c = 0; c < d; ++c)
        q_out[c] = q[c] * factor;
      terms[0] = static_cast<C>(qpos);
      return C(0);
    }
    template <typename S>
    void key(const S*, Index, Index kpos, C* terms) const {
      terms[0] = static_cast<C>(kpos);
    }
    template <typename Packet>
    Packet transform(const Packet& s, const Packet* kt, const Packet* qt) const {
      namespace ei = Eigen::internal;
      return ei::psub(s, ei::pmul(ei::pset1<Packet>(m2), ei::pabs(ei::psub(qt[0], kt[0]))));
    }
  };

  template <typename C>
  Kernel<C> kernel(const AttentionProblem& pb) const {
    return {static_cast<C>(pb.scale * detail::log2e),
            static_cast<C>(slope.value_or(alibi_slope(0, 1)) * detail::log2e)};
  }
};

}  // namespace attnkit
