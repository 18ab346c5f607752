#pragma once

// Shared pieces of attnkit's benchmarks: cached workloads, the GFLOP/s
// counter convention, and (from headers attnkit-eval shares) the plain
// "materialise Q K^T, softmax, multiply by V" baseline a user writes first
// (materialized.hpp) and the median (median.hpp).

#include <cstdint>
#include <map>
#include <tuple>

#include <benchmark/benchmark.h>

#include "attnkit/attention/problem.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "materialized.hpp"
#include "median.hpp"

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

/// The attention options of a benchmark case: causal (the queries are the
/// last tokens) or no mask.
inline AttentionOptions mask_options(bool causal) {
  return {causal ? Mask::causal() : Mask::none(), {}};
}

}  // namespace attnkit::bench
