#pragma once

// The plain attention a user writes first, shared by the benchmarks
// (bench/*_bench.cpp, bench/flash_memory.cpp) and attnkit-eval's
// `materialized` method: S = scale Q K^T materialised as an (n_q x n_k)
// Scalar matrix (Eigen GEMM), every key the mask hides set to -inf (as
// PyTorch's masked_fill does), a row-wise stable softmax over the whole row,
// O = P V (Eigen GEMM).
//
// Exact attention in Scalar arithmetic with O(n_q n_k) extra memory; every
// mask of attnkit/core/mask.hpp (kinds, offset, sliding window, sinks). A row
// that sees no key gets a zero output row and lse = -inf, as attnkit's
// kernels give; beyond that it does not follow attnkit's NaN/inf conventions
// for non-finite inputs (docs/design.md): it is a baseline, not a library
// kernel.

#include <cmath>
#include <limits>

#include "attnkit/attention/problem.hpp"

namespace attnkit::bench {

/// The baseline described in the file comment.
/// \param q (n_q x d), \param k (n_k x d), \param v (n_k x d_v).
/// \returns output (n_q x d_v) and lse (n_q), in Q's Scalar.
/// \throws std::invalid_argument as attnkit::make_attention_problem.
template <typename DQ, typename DK, typename DV>
AttentionResult<typename DQ::Scalar> materialized_attention(const Eigen::MatrixBase<DQ>& q,
                                                            const Eigen::MatrixBase<DK>& k,
                                                            const Eigen::MatrixBase<DV>& v,
                                                            const AttentionOptions& options = {}) {
  using Scalar = typename DQ::Scalar;
  const AttentionProblem pb = make_attention_problem("materialized_attention", q, k, v, options);
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  RowMatrix<Scalar> s = static_cast<Scalar>(pb.scale) * (q * k.transpose());
  Vector<Scalar> lse(pb.n_q);
  for (Index i = 0; i < pb.n_q; ++i) {
    auto row = s.row(i);
    if (pb.mask.visible_count(i) == 0) {
      row.setZero();
      lse(i) = -inf;
      continue;
    }
    // Visible: the sinks [0, sink_end) and the band [key_begin, key_end).
    const Index sink_end = pb.mask.sink_end(i), begin = pb.mask.key_begin(i), end = pb.mask.key_end(i);
    row.segment(sink_end, begin - sink_end).setConstant(-inf);
    row.tail(pb.n_k - end).setConstant(-inf);
    const Scalar m = row.maxCoeff();
    row = (row.array() - m).exp();
    const Scalar sum = row.sum();
    row /= sum;
    lse(i) = m + std::log(sum);
  }
  return {s * v, lse};
}

}  // namespace attnkit::bench
