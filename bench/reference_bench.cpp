// The exact reference (attnkit/attention/reference.hpp) at n = 512 .. 4096,
// d = 64 and 128, float, with GFLOP/s. It is the oracle and the first baseline
// later kernels are measured against; "materialized" in the same run is the
// plain float implementation a user writes first, for the ratio.
//
//   build/release/bench/reference_bench --benchmark_min_time=0.5

#include "attnkit/attention/reference.hpp"

#include "bench_util.hpp"

namespace attnkit::bench {
namespace {

void BM_reference(benchmark::State& state) {
  const Index n = state.range(0), d = state.range(1);
  const bool causal = state.range(2) != 0;
  const auto& w = cached_workload<float>(WorkloadKind::llm_like, n, n, d);
  const AttentionOptions opt{causal ? Mask::causal() : Mask::none(), {}};
  for (auto _ : state) {
    auto r = reference_attention(w.q, w.k, w.v, opt);
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  set_gflops(state, attention_flops(n, n, d, d, causal));
}

void BM_materialized(benchmark::State& state) {
  const Index n = state.range(0), d = state.range(1);
  const bool causal = state.range(2) != 0;
  const auto& w = cached_workload<float>(WorkloadKind::llm_like, n, n, d);
  for (auto _ : state) {
    auto o = materialized_attention(w.q, w.k, w.v, mask_options(causal));
    benchmark::DoNotOptimize(o.output.data());
    benchmark::ClobberMemory();
  }
  set_gflops(state, attention_flops(n, n, d, d, causal));
}

void sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "d", "causal"});
  for (const int causal : {0, 1})
    for (const int d : {64, 128})
      for (const int n : {512, 1024, 2048, 4096})
        b->Args({n, d, causal});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_reference)->Apply(sizes);
BENCHMARK(BM_materialized)->Apply(sizes);

}  // namespace
}  // namespace attnkit::bench

BENCHMARK_MAIN();
