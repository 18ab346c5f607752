#pragma once

/// \file attnkit/attention/merge.hpp
/// Exact merge of two attention results of the SAME queries over DISJOINT key
/// sets (flash-decoding's reduction; the building block for splitting keys
/// across threads or mixing exact and approximate parts):
///
///   lse = log(e^lse1 + e^lse2),   O = e^(lse1 - lse) O1 + e^(lse2 - lse) O2.
///
/// Computed with the larger lse factored out, so huge lse values neither
/// overflow nor lose the smaller part. A part with lse = -inf (it saw no key)
/// contributes nothing; if both are -inf the row stays zero with lse = -inf.
/// A NaN in either part's row makes the merged row NaN.

#include <cmath>
#include <limits>
#include <type_traits>

#include "attnkit/attention/problem.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

namespace detail {

/// Merges `rows` rows of (o2, lse2) into (o1, lse1) in place; rows of length
/// d_v with strides ld1, ld2.
template <typename Scalar>
void merge_rows(Scalar* o1, Index ld1, Scalar* lse1, const Scalar* o2, Index ld2, const Scalar* lse2,
                Index rows, Index d_v) {
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  for (Index i = 0; i < rows; ++i) {
    const Scalar a = lse1[i], b = lse2[i];
    Scalar* x = o1 + i * ld1;
    const Scalar* y = o2 + i * ld2;
    if (b == -inf) continue;  // nothing to add
    if (a == -inf) {          // nothing there yet
      for (Index c = 0; c < d_v; ++c)
        x[c] = y[c];
      lse1[i] = b;
      continue;
    }
    // Weights e^(a - m), e^(b - m) with m = max(a, b): one of them is 1.
    const Scalar m = a > b ? a : b;
    const Scalar wa = std::exp(a - m), wb = std::exp(b - m);
    const Scalar total = wa + wb;
    const Scalar fa = wa / total, fb = wb / total;
    for (Index c = 0; c < d_v; ++c)
      x[c] = fa * x[c] + fb * y[c];
    lse1[i] = m + std::log(total);
  }
}

}  // namespace detail

/// Merges `part` into `acc` in place (see the file comment).
/// \param acc  result over key set A: output (n_q x d_v), lse (n_q).
/// \param part result over a key set disjoint from A, same shapes.
/// \throws std::invalid_argument if the shapes differ.
/// O(n_q d_v).
template <typename Scalar>
void merge_attention_into(AttentionResult<Scalar>& acc, const AttentionResult<Scalar>& part) {
  detail::require_same_shape("merge_attention", "output", acc.output, "part.output", part.output);
  detail::require_same_shape("merge_attention", "lse", acc.lse, "part.lse", part.lse);
  if (acc.lse.size() != acc.output.rows())
    detail::fail("merge_attention: lse has ", acc.lse.size(), " entries for an output with ",
                 acc.output.rows(), " rows");
  detail::merge_rows(acc.output.data(), acc.output.outerStride(), acc.lse.data(), part.output.data(),
                     part.output.outerStride(), part.lse.data(), acc.output.rows(), acc.output.cols());
}

/// Returns the merge of two results over disjoint key sets.
template <typename Scalar>
AttentionResult<Scalar> merge_attention(const AttentionResult<Scalar>& a, const AttentionResult<Scalar>& b) {
  AttentionResult<Scalar> out = a;
  merge_attention_into(out, b);
  return out;
}

}  // namespace attnkit
