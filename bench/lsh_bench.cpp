// LSH bucketed attention (attnkit/sparse/lsh_attention.hpp) against the fused
// exact kernel flash_attention, in the same binary: speed and error on the
// built-in workloads (iid, clustered, llm), n in {4096, 16384}, d = 64, float,
// no mask (pass --causal for causal self-attention), a few (rounds L,
// buckets B) settings of the angular family, everything on ONE thread.
// Timed: build (hash and sort the keys) + attend. After the runs the binary
// prints, per workload and n, the median time, the speedup over flash, the
// relative Frobenius error of the output against flash's exact result, and
// the mean share of the visible keys in a query's candidate set.
//
//   build/release/bench/lsh_bench --benchmark_repetitions=3
//   build/release/bench/lsh_bench --benchmark_filter='/4096' --benchmark_min_time=0.05
//   build/release/bench/lsh_bench --causal --benchmark_filter='llm'

#define EIGEN_DONT_PARALLELIZE  // one thread everywhere (see above)

#include "attnkit/sparse/lsh_attention.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/core/metrics.hpp"
#include "bench_util.hpp"

namespace attnkit::bench {
namespace {

constexpr Index kD = 64;
const std::vector<Index> kLengths = {4096, 16384};
const std::vector<WorkloadKind> kKinds = {WorkloadKind::iid, WorkloadKind::clustered, WorkloadKind::llm_like};
struct Setting {
  Index rounds, buckets;
};
const std::vector<Setting> kSettings = {{1, 16}, {2, 16}, {4, 64}, {8, 64}, {4, 256}};
bool g_causal = false;

Mask mask() {
  return g_causal ? Mask::causal() : Mask::none();
}

LshAttentionOptions lsh_options(const Setting& s) {
  LshAttentionOptions o;
  o.hash = {LshHashKind::angular, s.buckets, s.rounds, 1};
  o.mask = mask();
  return o;
}

void run_lsh(benchmark::State& state, WorkloadKind kind, Index n, Setting s) {
  const auto& w = cached_workload<float>(kind, n, n, kD);
  const LshAttentionOptions o = lsh_options(s);
  for (auto _ : state) {
    auto r = lsh_attention(w.q, w.k, w.v, o);
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

void run_flash(benchmark::State& state, WorkloadKind kind, Index n) {
  const auto& w = cached_workload<float>(kind, n, n, kD);
  AttentionResult<float> r{RowMatrix<float>(n, kD), Vector<float>(n)};
  for (auto _ : state) {
    flash_attention_into(w.q, w.k, w.v, r.output, r.lse, {mask()}, FlashConfig{1});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  set_gflops(state, attention_flops(n, n, kD, kD, g_causal));
}

std::string key(const char* method, WorkloadKind kind, Index n, const Setting* s) {
  std::string k = std::string(method) + "/" + to_string(kind) + "/n:" + std::to_string(n);
  if (s) k += "/L:" + std::to_string(s->rounds) + "/B:" + std::to_string(s->buckets);
  return k;
}

void register_all() {
  for (const WorkloadKind kind : kKinds)
    for (const Index n : kLengths) {
      benchmark::RegisterBenchmark(key("flash", kind, n, nullptr).c_str(), run_flash, kind, n)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      for (const Setting& s : kSettings)
        benchmark::RegisterBenchmark(key("lsh", kind, n, &s).c_str(), run_lsh, kind, n, s)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    }
}

class TableReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      std::string name = run.run_name.function_name;
      if (!run.run_name.args.empty()) name += "/" + run.run_name.args;
      seconds_[name] = run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
    }
  }

  void print_table() const {
    std::printf(
        "\nLSH attention (angular) against flash, d = 64, float, one thread, mask %s; median times when "
        "repeated.\nerror = ||O_lsh - O_exact||_F / ||O_exact||_F; candidates = mean |C_i| / visible "
        "keys;\nmass = mean share of the exact softmax mass inside C_i, exp(lse_lsh - lse_exact).\n\n",
        to_string(mask().kind));
    std::printf("| workload | n | L | B | lsh ms | flash ms | speedup | error | candidates | mass |\n");
    std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const WorkloadKind kind : kKinds)
      for (const Index n : kLengths) {
        const auto f = seconds_.find(key("flash", kind, n, nullptr));
        for (const Setting& s : kSettings) {
          const auto l = seconds_.find(key("lsh", kind, n, &s));
          if (l == seconds_.end()) continue;
          const auto& w = cached_workload<float>(kind, n, n, kD);
          const auto exact = flash_attention(w.q, w.k, w.v, {mask()});
          const LshAttentionOptions o = lsh_options(s);
          const auto approx = lsh_attention(w.q, w.k, w.v, o);
          double mass = 0;
          for (Index i = 0; i < n; ++i)
            mass += std::exp(static_cast<double>(approx.lse(i)) - static_cast<double>(exact.lse(i)));
          mass /= static_cast<double>(n);
          std::printf("| %s | %ld | %ld | %ld | %.2f | %s | %s | %.4f | %.4f | %.3f |\n", to_string(kind),
                      static_cast<long>(n), static_cast<long>(s.rounds), static_cast<long>(s.buckets),
                      l->second * 1e3, f != seconds_.end() ? fmt(f->second * 1e3).c_str() : "-",
                      f != seconds_.end() ? fmt(f->second / l->second).c_str() : "-",
                      relative_frobenius_error(approx.output, exact.output), candidate_share(w, o), mass);
        }
      }
  }

 private:
  /// Mean over the queries of |C_i| / |visible keys|, from the index's buckets.
  static double candidate_share(const Workload<float>& w, const LshAttentionOptions& o) {
    const LshIndex<float> index(w.k, w.v, o.hash);
    const LshCodes qc = index.hasher().codes(w.q);
    const MaskLayout layout = resolve_mask(o.mask, w.q.rows(), w.k.rows());
    std::vector<Index> mark(static_cast<std::size_t>(w.k.rows()), -1);
    double share = 0;
    for (Index i = 0; i < w.q.rows(); ++i) {
      const Index end = layout.key_end(i);
      Index count = 0;
      for (Index r = 0; r < index.hasher().rounds(); ++r) {
        const auto& keys = index.sorted_keys(r);
        for (Index t = index.bucket_begin(r, qc(i, r)); t < index.bucket_begin(r, qc(i, r) + 1); ++t) {
          const Index j = keys[static_cast<std::size_t>(t)];
          if (j < end && mark[static_cast<std::size_t>(j)] != i) {
            mark[static_cast<std::size_t>(j)] = i;
            ++count;
          }
        }
      }
      if (end > 0) share += static_cast<double>(count) / static_cast<double>(end);
    }
    return share / static_cast<double>(w.q.rows());
  }

  static std::string fmt(double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", x);
    return buf;
  }
  std::map<std::string, double> seconds_;
};

}  // namespace
}  // namespace attnkit::bench

int main(int argc, char** argv) {
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--causal") == 0)
      attnkit::bench::g_causal = true;
    else
      argv[out++] = argv[i];
  }
  argc = out;
  attnkit::bench::register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  attnkit::bench::TableReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print_table();
  benchmark::Shutdown();
  return 0;
}
