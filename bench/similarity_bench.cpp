// Score policies and top-k attention against the dot-product fused kernel, in
// the same run: float, LLM-like workload, n = 16384, d = 64, causal mask, 1 and
// 2 threads. GFLOP/s counts the two products (4 n^2 d, halved for causal)
// for every policy, so rates compare directly with the dot product's. After
// the runs: a ratio table (medians) and, with --quality, the output error of
// top-k attention against exact attention for several k on the clustered and
// LLM-like workloads.
//
//   build/release/bench/similarity_bench --benchmark_repetitions=3
//   build/release/bench/similarity_bench --quality

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/core/metrics.hpp"
#include "attnkit/similarity/alibi.hpp"
#include "attnkit/similarity/cosine.hpp"
#include "attnkit/similarity/hyperbolic.hpp"
#include "attnkit/similarity/rbf.hpp"
#include "attnkit/similarity/softcap.hpp"
#include "attnkit/sparse/topk.hpp"
#include "bench_util.hpp"

namespace attnkit::bench {
namespace {

const Index kN = 16384, kD = 64;

template <typename Policy>
void run_policy(benchmark::State& state, const Policy& policy, bool scaled_inputs, int threads) {
  const auto& w = cached_workload<float>(WorkloadKind::llm_like, kN, kN, kD);
  // The hyperbolic policy wants points inside the unit ball.
  static const Workload<float> small{w.q * 0.02f, w.k * 0.02f, w.v};
  const Workload<float>& in = scaled_inputs ? small : w;
  const AttentionOptions opt{Mask::causal(), {}};
  AttentionResult<float> r{RowMatrix<float>(kN, kD), Vector<float>(kN)};
  for (auto _ : state) {
    flash_attention_into(in.q, in.k, in.v, r.output, r.lse, opt, FlashConfig{threads}, policy);
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  set_gflops(state, attention_flops(kN, kN, kD, kD, true));
}

void run_topk(benchmark::State& state, Index k, int threads) {
  const auto& w = cached_workload<float>(WorkloadKind::llm_like, kN, kN, kD);
  AttentionResult<float> r{RowMatrix<float>(kN, kD), Vector<float>(kN)};
  for (auto _ : state) {
    topk_attention_into(w.q, w.k, w.v, {k}, r.output, r.lse, {Mask::causal()}, FlashConfig{threads});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  set_gflops(state, attention_flops(kN, kN, kD, kD, true));
}

class Reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      Entry& e = entries_[run.run_name.str()];
      e.seconds = run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
      const auto it = run.counters.find("GFLOP/s");
      if (it != run.counters.end()) e.rate = static_cast<double>(it->second);
    }
  }
  void print() const {
    std::printf("\nn %ld, d %ld, causal, float, LLM-like (medians when repeated):\n", static_cast<long>(kN),
                static_cast<long>(kD));
    std::printf("%-12s %-4s %10s %10s %12s\n", "policy", "thr", "ms", "GFLOP/s", "rate / dot");
    for (const int t : {1, 2}) {
      const Entry* dot = find("dot", t);
      for (const char* name :
           {"dot", "rbf", "cosine", "softcap", "alibi", "hyperbolic", "topk64", "topk256"}) {
        const Entry* e = find(name, t);
        if (!e) continue;
        std::printf("%-12s %-4d %10.1f %10.1f %12s\n", name, t, e->seconds * 1e3, e->rate,
                    dot ? (std::to_string(e->rate / dot->rate).substr(0, 5)).c_str() : "-");
      }
    }
    for (const int t : {1, 2}) {
      const Entry* dot = find("dot", t);
      const Entry* tk = find("topk64", t);
      if (dot && tk)
        std::printf("top-k (k = 64) time / flash time, %d thread(s): %.2f\n", t, tk->seconds / dot->seconds);
    }
  }

 private:
  struct Entry {
    double seconds = 0, rate = 0;
  };
  const Entry* find(const std::string& name, int t) const {
    const auto it = entries_.find(name + "/threads:" + std::to_string(t) + "/real_time");
    return it == entries_.end() ? nullptr : &it->second;
  }
  std::map<std::string, Entry> entries_;
};

template <typename F>
void add(const std::string& name, int t, F f) {
  benchmark::RegisterBenchmark((name + "/threads:" + std::to_string(t)).c_str(), f)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

void register_all() {
  for (const int t : {1, 2}) {
    add("dot", t, [=](benchmark::State& s) { run_policy(s, DotProductScore{}, false, t); });
    add("rbf", t, [=](benchmark::State& s) { run_policy(s, RbfScore{8.0}, false, t); });
    add("cosine", t, [=](benchmark::State& s) { run_policy(s, CosineScore{0.1}, false, t); });
    add("softcap", t, [=](benchmark::State& s) { run_policy(s, SoftcapScore{30.0}, false, t); });
    add("alibi", t, [=](benchmark::State& s) { run_policy(s, AlibiScore{0.0625}, false, t); });
    add("hyperbolic", t,
        [=](benchmark::State& s) { run_policy(s, hyperbolic_score<float>(1.0, 0.5), true, t); });
    add("topk64", t, [=](benchmark::State& s) { run_topk(s, 64, t); });
    add("topk256", t, [=](benchmark::State& s) { run_topk(s, 256, t); });
  }
}

// Output error of top-k attention against the exact result, relative
// Frobenius norm, over the last 512 queries of n = 4096 (d = 64, causal).
void quality() {
  const Index n = 4096, d = 64, rows = 512;
  std::printf(
      "top-k attention: relative Frobenius error against exact attention, n %ld, d %ld, causal, last %ld "
      "queries\n%-10s",
      static_cast<long>(n), static_cast<long>(d), static_cast<long>(rows), "k");
  const std::vector<Index> ks = {8, 16, 32, 64, 128, 256, 512, 1024};
  for (const Index k : ks)
    std::printf(" %9ld", static_cast<long>(k));
  std::printf("\n");
  for (const WorkloadKind kind : {WorkloadKind::iid, WorkloadKind::clustered, WorkloadKind::llm_like}) {
    const auto w = make_workload<float>(kind, {rows, n, d, d}, 2026);
    const auto exact = flash_attention(w.q, w.k, w.v, {Mask::causal()});
    std::printf("%-10s", to_string(kind));
    for (const Index k : ks) {
      const auto r = topk_attention(w.q, w.k, w.v, {k}, {Mask::causal()});
      std::printf(" %9.3g", relative_frobenius_error(r.output, exact.output));
    }
    std::printf("\n");
  }
}

}  // namespace
}  // namespace attnkit::bench

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--quality") == 0) {
      attnkit::bench::quality();
      return 0;
    }
  attnkit::bench::register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  attnkit::bench::Reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print();
  benchmark::Shutdown();
  return 0;
}
