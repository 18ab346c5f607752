#pragma once

// Shared pieces of attnkit's benchmarks: cached workloads, the plain
// "materialise Q K^T, softmax, multiply by V" baseline a user writes first,
// and the GFLOP/s counter convention.

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <tuple>

#include <benchmark/benchmark.h>

#include "attnkit/attention/problem.hpp"
#include "attnkit/workload/synthetic.hpp"

namespace attnkit::bench {

/// One workload per (kind, n, d), generated once per process: generation is
/// not part of any measurement.
template <typename Scalar>
const Workload<Scalar>& cached_workload(WorkloadKind kind, Index n_q, Index n_k, Index d) {
  static std::map<std::tuple<int, Index, Index, Index>, Workload<Scalar>> cache;
  const auto key = std::make_tuple(static_cast<int>(kind), n_q, n_k, d);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, make_workload<Scalar>(kind, {n_q, n_k, d, d}, 2026)).first;
  return it->second;
}

/// Attention flops: 2 n_q n_k d for Q K^T plus 2 n_q n_k d_v for P V, halved
/// for a causal mask (self-attention; n_q == n_k).
inline double attention_flops(Index n_q, Index n_k, Index d, Index d_v, bool causal) {
  const double full =
      2.0 * static_cast<double>(n_q) * static_cast<double>(n_k) * static_cast<double>(d + d_v);
  return causal ? 0.5 * full : full;
}

/// Sets the "GFLOP/s" counter from the flops of one iteration.
inline void set_gflops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iteration / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

/// What a user writes first: S = scale Q K^T materialised (n_q x n_k), a
/// row-wise softmax with the causal entries set to -inf, O = P V. Plain
/// Scalar arithmetic, Eigen GEMMs.
template <typename Scalar>
RowMatrix<Scalar> materialized_attention(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k,
                                         const RowMatrix<Scalar>& v, bool causal) {
  const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(q.cols()));
  RowMatrix<Scalar> s = scale * (q * k.transpose());
  const Index offset = k.rows() - q.rows();
  for (Index i = 0; i < s.rows(); ++i) {
    auto row = s.row(i);
    if (causal && i + offset + 1 < s.cols())
      row.tail(s.cols() - (i + offset + 1)).setConstant(-std::numeric_limits<Scalar>::infinity());
    const Scalar m = row.maxCoeff();
    row = (row.array() - m).exp();
    row /= row.sum();
  }
  return s * v;
}

}  // namespace attnkit::bench
