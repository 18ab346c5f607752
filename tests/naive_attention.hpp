#pragma once

// The tests' independent oracle: attention by triple loops in long double,
// with the mask spelled out from its DEFINITION (docs/design.md), not from
// attnkit::MaskLayout:
//   query i sits at position p = offset + i; its prefix ends at
//   e = n_k (none), p + 1 (causal) or p (strict), clamped to [0, n_k];
//   it sees key j iff j < e and (no window, or j >= e - w, or j < sinks).
// Logits are scale * q . k by default, or any callable logit(i, j) -> long
// double. Nothing here calls a function of the library under test.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "attnkit/core/mask.hpp"
#include "attnkit/core/types.hpp"

namespace attnkit::test {

using LD = long double;

/// A mask by its definition (see the file comment).
struct NaiveMask {
  MaskKind kind = MaskKind::none;
  /// Position of query row 0 (ignored for MaskKind::none, whose queries
  /// are the last n_q positions).
  Index offset = 0;
  std::optional<Index> window{};
  Index sinks = 0;

  Index query_position(Index i, Index n_q, Index n_k) const {
    return kind == MaskKind::none ? n_k - n_q + i : offset + i;
  }
  bool visible(Index i, Index j, Index n_q, Index n_k) const {
    const Index p = query_position(i, n_q, n_k);
    Index e = n_k;
    if (kind == MaskKind::causal) e = p + 1;
    if (kind == MaskKind::strict_causal) e = p;
    e = std::clamp<Index>(e, 0, n_k);
    if (j >= e) return false;
    return !window || j >= e - *window || j < sinks;
  }
};

struct NaiveResult {
  RowMatrix<LD> output;  // (n_q x d_v)
  Vector<LD> lse;        // (n_q), -inf for a row that sees no key
  RowMatrix<LD> logits;  // (n_q x n_k), every pair, unmasked
};

/// Attention with logits logit(i, j) over the pairs visible(i, j).
template <typename Logit, typename Visible>
NaiveResult naive_attention_with(Index n_q, Index n_k, const RowMatrix<LD>& v, Logit&& logit,
                                 Visible&& visible) {
  NaiveResult r{RowMatrix<LD>::Zero(n_q, v.cols()), Vector<LD>(n_q), RowMatrix<LD>(n_q, n_k)};
  for (Index i = 0; i < n_q; ++i) {
    std::vector<Index> keys;
    for (Index j = 0; j < n_k; ++j) {
      r.logits(i, j) = logit(i, j);
      if (visible(i, j)) keys.push_back(j);
    }
    LD m = -std::numeric_limits<LD>::infinity();
    for (const Index j : keys)
      m = std::max(m, r.logits(i, j));
    if (keys.empty() || m == -std::numeric_limits<LD>::infinity()) {
      r.lse(i) = -std::numeric_limits<LD>::infinity();
      continue;
    }
    LD sum = 0;
    for (const Index j : keys) {
      const LD w = std::exp(r.logits(i, j) - m);
      sum += w;
      for (Index c = 0; c < v.cols(); ++c)
        r.output(i, c) += w * v(j, c);
    }
    r.output.row(i) /= sum;
    r.lse(i) = m + std::log(sum);
  }
  return r;
}

/// scale * q . k attention under `mask`, in long double.
template <typename DQ, typename DK, typename DV>
NaiveResult naive_attention(const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
                            const Eigen::MatrixBase<DV>& v, const NaiveMask& mask, double scale) {
  const RowMatrix<LD> ql = q.template cast<LD>(), kl = k.template cast<LD>(), vl = v.template cast<LD>();
  const Index n_q = q.rows(), n_k = k.rows();
  return naive_attention_with(
      n_q, n_k, vl,
      [&](Index i, Index j) {
        LD dot = 0;
        for (Index c = 0; c < ql.cols(); ++c)
          dot += ql(i, c) * kl(j, c);
        return static_cast<LD>(scale) * dot;
      },
      [&](Index i, Index j) { return mask.visible(i, j, n_q, n_k); });
}

}  // namespace attnkit::test
