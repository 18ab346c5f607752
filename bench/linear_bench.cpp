// Kernelized linear attention (attnkit/linear/linear_attention.hpp), causal,
// against, in the same binary:
//  - the token-by-token prefix-sum scan (the recurrent form): features in
//    blocks of 256 tokens (they are independent, so even a scan batches
//    them), then per token S += phi(k) v^T, z += phi(k),
//    out = phi(q)^T S / phi(q)^T z, with the same stabiliser handling;
//  - the same recurrence through the streaming API, LinearAttentionState:
//    one append(k_t, v_t) and one query(q_t) per token, features per token
//    ("state loop": what a decode loop costs per token);
//  - the fused exact kernel flash_attention with a causal mask.
// FAVOR+ features (m in {64, 256}), d = d_v = 64, float, LLM-like workload,
// n from 1024 to 65536, everything on ONE thread (FlashConfig{1}; Eigen's own
// GEMM threading is off in this binary), so the ratios compare algorithms,
// not core counts -- plus the chunked form on two threads
// (LinearAttentionOptions::threads = 2; the scan cannot be split). Counter: tokens/s. After the runs the
// binary prints the ratio table from the medians (use --benchmark_repetitions=3) and the crossover length at
// which the chunked form overtakes flash.
//
//   build/release/bench/linear_bench --benchmark_repetitions=3
//   build/release/bench/linear_bench --benchmark_filter='/16384' --benchmark_min_time=0.05
//   build/release/bench/linear_bench --favor-error     # FAVOR+ error vs m, markdown
//
// Flash at n = 65536 causal takes seconds per iteration on one core.

#define EIGEN_DONT_PARALLELIZE  // one thread everywhere (see above)

#include "attnkit/linear/linear_attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/core/metrics.hpp"
#include "attnkit/linear/feature_maps.hpp"
#include "attnkit/linear/linear_state.hpp"
#include "attnkit/linear/positive_random_features.hpp"
#include "bench_util.hpp"

namespace attnkit::bench {
namespace {

const WorkloadKind kKind = WorkloadKind::llm_like;
constexpr Index kD = 64;
const std::vector<Index> kLengths = {1024, 2048, 4096, 8192, 16384, 32768, 65536};
const std::vector<Index> kFeatures = {64, 256};

const PositiveRandomFeatures<float>& favor(Index m) {
  static std::map<Index, PositiveRandomFeatures<float>> maps;
  auto it = maps.find(m);
  if (it == maps.end()) it = maps.emplace(m, PositiveRandomFeatures<float>(kD, {m, 1})).first;
  return it->second;
}

void set_tokens(benchmark::State& state, Index n) {
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

void run_chunked(benchmark::State& state, Index n, Index m, Index chunk, int threads) {
  const auto& w = cached_workload<float>(kKind, n, n, kD);
  const auto& map = favor(m);
  AttentionResult<float> r{RowMatrix<float>(n, kD), Vector<float>(n)};
  LinearAttentionOptions options{Mask::causal(), chunk};
  options.threads = threads;
  for (auto _ : state) {
    linear_attention_into(w.q, w.k, w.v, map, r.output, r.lse, options);
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  set_tokens(state, n);
}

/// The recurrent baseline (see the file comment). Returns nothing; writes out.
void causal_scan(const RowMatrix<float>& q, const RowMatrix<float>& k, const RowMatrix<float>& v,
                 const PositiveRandomFeatures<float>& map, RowMatrix<float>& out) {
  const Index n = q.rows(), m = map.features(), d_v = v.cols(), block = 256;
  RowMatrix<float> s = RowMatrix<float>::Zero(m, d_v), phi_q(block, m), phi_k(block, m);
  Vector<float> z = Vector<float>::Zero(m), log_q(block);
  Eigen::Matrix<float, 1, Eigen::Dynamic> row(d_v);
  float log_k = 0;
  bool empty = true;
  const float floor = std::numeric_limits<float>::min();
  for (Index b0 = 0; b0 < n; b0 += block) {
    const Index rows = std::min(block, n - b0);
    auto pq = phi_q.topRows(rows);
    auto pk = phi_k.topRows(rows);
    auto lq = log_q.head(rows);
    map.map_queries(q.middleRows(b0, rows), pq, lq);
    const float c = map.map_keys(k.middleRows(b0, rows), pk);
    if (empty || c > log_k) {
      const float f = empty ? 0.0f : std::exp(log_k - c);
      s *= f;
      z *= f;
      log_k = c;
      empty = false;
    } else {
      pk *= std::exp(c - log_k);
    }
    for (Index t = 0; t < rows; ++t) {
      s.noalias() += pk.row(t).transpose() * v.row(b0 + t);
      z += pk.row(t).transpose();
      row.noalias() = pq.row(t) * s;
      out.row(b0 + t) = row / std::max(pq.row(t).dot(z), floor);
    }
  }
}

void run_scan(benchmark::State& state, Index n, Index m) {
  const auto& w = cached_workload<float>(kKind, n, n, kD);
  const auto& map = favor(m);
  RowMatrix<float> out(n, kD);
  for (auto _ : state) {
    causal_scan(w.q, w.k, w.v, map, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_tokens(state, n);
}

void run_state_loop(benchmark::State& state, Index n, Index m) {
  const auto& w = cached_workload<float>(kKind, n, n, kD);
  RowMatrix<float> out(n, kD);
  for (auto _ : state) {
    LinearAttentionState<float, PositiveRandomFeatures<float>> s(favor(m), kD, kD);
    for (Index t = 0; t < n; ++t) {
      s.append(w.k.row(t), w.v.row(t));
      out.row(t) = s.query(w.q.row(t)).output;
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_tokens(state, n);
}

void run_flash(benchmark::State& state, Index n) {
  const auto& w = cached_workload<float>(kKind, n, n, kD);
  AttentionResult<float> r{RowMatrix<float>(n, kD), Vector<float>(n)};
  for (auto _ : state) {
    flash_attention_into(w.q, w.k, w.v, r.output, r.lse, {Mask::causal()}, FlashConfig{1});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  set_tokens(state, n);
  set_gflops(state, attention_flops(n, n, kD, kD, true));
}

std::string key(const char* method, Index n, Index m) {
  return std::string(method) + "/n:" + std::to_string(n) + (m ? "/m:" + std::to_string(m) : "");
}

void register_all() {
  for (const Index n : kLengths) {
    for (const Index m : kFeatures) {
      benchmark::RegisterBenchmark(key("chunked", n, m).c_str(), run_chunked, n, m, Index{64}, 1)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(key("chunked_2t", n, m).c_str(), run_chunked, n, m, Index{64}, 2)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(key("scan", n, m).c_str(), run_scan, n, m)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(key("state_loop", n, m).c_str(), run_state_loop, n, m)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
    benchmark::RegisterBenchmark(key("flash", n, 0).c_str(), run_flash, n)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  // Chunk length sweep at n = 16384 (the default, 64, is chosen from it).
  for (const Index m : kFeatures)
    for (const Index c : {16, 32, 64, 128, 256})
      benchmark::RegisterBenchmark((key("chunk_sweep", 16384, m) + "/C:" + std::to_string(c)).c_str(),
                                   run_chunked, Index{16384}, m, c, 1)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
}

/// Median (or only) real time of every run, for the table at the end.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      // The name as registered: without the "/real_time" that UseRealTime adds.
      std::string name = run.run_name.function_name;
      if (!run.run_name.args.empty()) name += "/" + run.run_name.args;
      seconds_[name] = run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
    }
  }

  const double* find(const std::string& name) const {
    const auto it = seconds_.find(name);
    return it == seconds_.end() ? nullptr : &it->second;
  }

  void print_ratios() const {
    std::printf(
        "\nCausal, d = 64, float; one thread except 'chunked 2t'; median real times (ms) when repeated.\n\n");
    std::printf(
        "| n | m | chunked | chunked 2t | scan | scan / chunked | scan / chunked 2t | state loop | loop / "
        "chunked | "
        "flash | flash / chunked |\n");
    std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const Index m : kFeatures)
      for (const Index n : kLengths) {
        const double* c = find(key("chunked", n, m));
        const double* c2 = find(key("chunked_2t", n, m));
        const double* s = find(key("scan", n, m));
        const double* f = find(key("flash", n, 0));
        const double* l = find(key("state_loop", n, m));
        if (!c && !s && !l && !c2) continue;
        const auto ms = [](const double* x) { return x ? fmt(*x * 1e3, 2) : std::string("-"); };
        const auto ratio = [](const double* a, const double* b) {
          return a && b ? fmt(*a / *b, 2) : std::string("-");
        };
        std::printf("| %ld | %ld | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", static_cast<long>(n),
                    static_cast<long>(m), ms(c).c_str(), ms(c2).c_str(), ms(s).c_str(), ratio(s, c).c_str(),
                    ratio(s, c2).c_str(), ms(l).c_str(), ratio(l, c).c_str(), ms(f).c_str(),
                    ratio(f, c).c_str());
      }
    // Crossover: the first measured n where chunked beats flash, interpolated
    // in log n on the log of the time ratio between it and the previous n.
    for (const Index m : kFeatures) {
      double prev_n = 0, prev_ratio = 0;
      bool found = false;
      for (const Index n : kLengths) {
        const double* c = find(key("chunked", n, m));
        const double* f = find(key("flash", n, 0));
        if (!c || !f) continue;
        const double ratio = *f / *c;  // > 1: chunked faster
        if (ratio >= 1) {
          std::printf("\nm = %ld: chunked overtakes flash ", static_cast<long>(m));
          if (prev_n > 0) {
            const double t = std::log(prev_ratio) / (std::log(prev_ratio) - std::log(ratio));
            const double cross =
                std::exp(std::log(prev_n) + t * (std::log(static_cast<double>(n)) - std::log(prev_n)));
            std::printf("at n ~ %.0f (between %.0f and %ld)\n", cross, prev_n, static_cast<long>(n));
          } else {
            std::printf("at or below n = %ld (the shortest length measured)\n", static_cast<long>(n));
          }
          found = true;
          break;
        }
        prev_n = static_cast<double>(n);
        prev_ratio = ratio;
      }
      if (!found && prev_n > 0)
        std::printf("\nm = %ld: flash is faster at every measured length (up to %.0f)\n",
                    static_cast<long>(m), prev_n);
    }
    bool sweep = false;
    for (const Index m : kFeatures)
      for (const Index c : {16, 32, 64, 128, 256})
        if (const double* t = find(key("chunk_sweep", 16384, m) + "/C:" + std::to_string(c))) {
          if (!sweep) std::printf("\nChunk sweep, n = 16384: m, C, ms\n");
          sweep = true;
          std::printf("  %ld %ld %.2f\n", static_cast<long>(m), static_cast<long>(c), *t * 1e3);
        }
  }

 private:
  static std::string fmt(double x, int digits) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", digits, x);
    return buf;
  }
  std::map<std::string, double> seconds_;
};

/// FAVOR+ error against exact softmax attention on the built-in workloads:
/// relative Frobenius error of the output, mean over 3 seeds of W, n = 1024,
/// d = 64, float; elu + 1 and ReLU (other kernels, not estimators of softmax)
/// for scale.
void print_favor_error() {
  const Index n = 1024;
  std::printf("FAVOR+ relative Frobenius error against exact softmax attention (reference_attention),\n");
  std::printf("n = %ld, d = 64, float, mean over seeds 1-3 of W; elu+1 and ReLU for comparison.\n\n",
              static_cast<long>(n));
  std::printf("| workload | mask | m = 64 | m = 128 | m = 256 | m = 512 | elu+1 | ReLU |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
  for (const WorkloadKind kind : {WorkloadKind::iid, WorkloadKind::clustered, WorkloadKind::llm_like})
    for (const Mask mask : {Mask::none(), Mask::causal()}) {
      const auto w = make_workload<float>(kind, {n, n, kD, kD}, 2026);
      const auto exact = reference_attention(w.q, w.k, w.v, {mask});
      std::printf("| %s | %s |", to_string(kind), to_string(mask.kind));
      for (const Index m : {64, 128, 256, 512}) {
        double sum = 0;
        for (std::uint64_t seed = 1; seed <= 3; ++seed) {
          const PositiveRandomFeatures<float> map(kD, {m, seed});
          sum += relative_frobenius_error(linear_attention(w.q, w.k, w.v, map, {mask}).output, exact.output);
        }
        std::printf(" %.3f |", sum / 3);
      }
      std::printf(" %.3f |",
                  relative_frobenius_error(linear_attention(w.q, w.k, w.v, EluFeatureMap{}, {mask}).output,
                                           exact.output));
      std::printf(" %.3f |\n",
                  relative_frobenius_error(linear_attention(w.q, w.k, w.v, ReluFeatureMap{}, {mask}).output,
                                           exact.output));
    }
  // The estimator's regime: its relative variance grows like
  // exp(|q' + k'|^2), so the same iid workload with q and k scaled down.
  std::printf(
      "\nThe same against the input scale: iid, q and k multiplied by s (logit std s^2), no mask.\n\n");
  std::printf(
      "| s | m = 64 | m = 128 | m = 256 | m = 512 | m = 2048 | elu+1 "
      "|\n|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const double s : {1.0, 0.5, 0.25}) {
    auto w = make_workload<float>(WorkloadKind::iid, {n, n, kD, kD}, 2026);
    w.q *= static_cast<float>(s);
    w.k *= static_cast<float>(s);
    const auto exact = reference_attention(w.q, w.k, w.v);
    std::printf("| %.2f |", s);
    for (const Index m : {64, 128, 256, 512, 2048}) {
      double sum = 0;
      for (std::uint64_t seed = 1; seed <= 3; ++seed)
        sum += relative_frobenius_error(
            linear_attention(w.q, w.k, w.v, PositiveRandomFeatures<float>(kD, {m, seed})).output,
            exact.output);
      std::printf(" %.3f |", sum / 3);
    }
    std::printf(" %.3f |\n", relative_frobenius_error(linear_attention(w.q, w.k, w.v, EluFeatureMap{}).output,
                                                      exact.output));
  }
}

}  // namespace
}  // namespace attnkit::bench

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--favor-error") == 0) {
      attnkit::bench::print_favor_error();
      return 0;
    }
  attnkit::bench::register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  attnkit::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print_ratios();
  benchmark::Shutdown();
  return 0;
}
