// The fused exact kernel (attnkit/attention/flash.hpp) against, in the same
// run: the reference, the plain "materialise Q K^T with Eigen, softmax,
// multiply by V" baseline, and Eigen's own GEMM on the matching
// (n x d)(d x n) product (the practical ceiling). Float, LLM-like workload,
// n in {1024, 4096, 16384}, d in {64, 128}, masks none and causal, 1 and 2
// threads. Decode: one query against 65536 cached keys, d = 128, against the
// time to read K and V once (a plain reduction over an equally large array).
//
// GFLOP/s counts 4 n_q n_k d flops (the two products), halved for causal;
// the GEMM counts its own 2 n^2 d. After the runs the binary prints a table of
// ratios computed from the medians when --benchmark_repetitions > 1.
//
//   build/release/bench/flash_bench --benchmark_repetitions=3
//   build/release/bench/flash_bench --benchmark_filter='flash|gemm' --benchmark_repetitions=3

#include "attnkit/attention/flash.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "attnkit/attention/reference.hpp"
#include "bench_util.hpp"

namespace attnkit::bench {
namespace {

const WorkloadKind kKind = WorkloadKind::llm_like;

void set_threads(int threads) {
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#endif
  Eigen::setNbThreads(threads);
}

void run_flash(benchmark::State& state, Index n, Index d, bool causal, int threads) {
  const auto& w = cached_workload<float>(kKind, n, n, d);
  const AttentionOptions opt{causal ? Mask::causal() : Mask::none(), {}};
  AttentionResult<float> r{RowMatrix<float>(n, d), Vector<float>(n)};
  for (auto _ : state) {
    flash_attention_into(w.q, w.k, w.v, r.output, r.lse, opt, FlashConfig{threads});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  set_gflops(state, attention_flops(n, n, d, d, causal));
}

void run_reference(benchmark::State& state, Index n, Index d, bool causal) {
  const auto& w = cached_workload<float>(kKind, n, n, d);
  const AttentionOptions opt{causal ? Mask::causal() : Mask::none(), {}};
  for (auto _ : state) {
    auto r = reference_attention(w.q, w.k, w.v, opt);
    benchmark::DoNotOptimize(r.output.data());
  }
  set_gflops(state, attention_flops(n, n, d, d, causal));
}

void run_materialized(benchmark::State& state, Index n, Index d, bool causal, int threads) {
  const auto& w = cached_workload<float>(kKind, n, n, d);
  set_threads(threads);
  for (auto _ : state) {
    auto o = materialized_attention(w.q, w.k, w.v, mask_options(causal));
    benchmark::DoNotOptimize(o.output.data());
  }
  set_threads(1);
  set_gflops(state, attention_flops(n, n, d, d, causal));
}

// Eigen's GEMM S = Q K^T: the (n x d)(d x n) product at the heart of attention.
void run_gemm(benchmark::State& state, Index n, Index d, int threads) {
  const auto& w = cached_workload<float>(kKind, n, n, d);
  RowMatrix<float> s(n, n);
  set_threads(threads);
  for (auto _ : state) {
    s.noalias() = w.q * w.k.transpose();
    benchmark::DoNotOptimize(s.data());
    benchmark::ClobberMemory();
  }
  set_threads(1);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(d) / 1e9,
                         benchmark::Counter::kIsIterationInvariantRate);
}

// Decode: one query against a cache of n_k keys (no mask: it sees them all).
void run_decode(benchmark::State& state, Index n_k, Index d, int threads) {
  const auto& w = cached_workload<float>(WorkloadKind::iid, 1, n_k, d);
  AttentionResult<float> r{RowMatrix<float>(1, d), Vector<float>(1)};
  for (auto _ : state) {
    flash_attention_into(w.q, w.k, w.v, r.output, r.lse, {}, FlashConfig{threads});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(2.0 * static_cast<double>(n_k * d) * sizeof(float) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// The bandwidth bound of decode: read as many bytes as K and V hold, once,
// with a plain vectorised sum over the same two arrays.
void run_read(benchmark::State& state, Index n_k, Index d, int threads) {
  const auto& w = cached_workload<float>(WorkloadKind::iid, 1, n_k, d);
  const float* arrays[2] = {w.k.data(), w.v.data()};
  const Index count = n_k * d;
  for (auto _ : state) {
    float total = 0;
    for (const float* a : arrays) {
      float sum = 0;
      ATTNKIT_PRAGMA(omp parallel for simd reduction(+ : sum) num_threads(threads))
      for (Index i = 0; i < count; ++i)
        sum += a[i];
      total += sum;
    }
    benchmark::DoNotOptimize(total);
  }
  state.counters["GB/s"] = benchmark::Counter(2.0 * static_cast<double>(count) * sizeof(float) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// The FMA peak of this machine, measured: 12 independent chains of packet
// FMAs per thread (enough to cover the FMA latency), counted as 2 flops per
// lane.
void run_fma_peak(benchmark::State& state, int threads) {
  using Packet = detail::FlashPacket<float>::Packet;
  constexpr int P = detail::FlashPacket<float>::size;
  constexpr long kIters = 1 << 22;
  for (auto _ : state) {
    float sink = 0;
    ATTNKIT_PRAGMA(omp parallel num_threads(threads) reduction(+ : sink)) {
      Packet acc[12];
      for (int i = 0; i < 12; ++i)
        acc[i] = Eigen::internal::pset1<Packet>(static_cast<float>(i));
      const Packet b = Eigen::internal::pset1<Packet>(0.999999f), c = Eigen::internal::pset1<Packet>(1e-7f);
      for (long it = 0; it < kIters; ++it)
        for (int i = 0; i < 12; ++i)
          acc[i] = Eigen::internal::pmadd(acc[i], b, c);
      for (int i = 1; i < 12; ++i)
        acc[0] = Eigen::internal::padd(acc[0], acc[i]);
      sink += Eigen::internal::predux(acc[0]);
    }
    benchmark::DoNotOptimize(sink);
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * P * 12 * static_cast<double>(kIters) * threads / 1e9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// One phase of the kernel alone over exactly the tiles a full single-threaded
// non-causal run visits (phase 0 = pack Q^T + finish, 1 = scores, 2 = softmax,
// 3 = P V): where the time goes.
void run_phase(benchmark::State& state, Index n, Index d, int phase) {
  const auto& w = cached_workload<float>(kKind, n, n, d);
  const Index block_q = detail::flash_default_block_q<float>(),
              block_k = detail::flash_default_block_k<float>();
  const detail::FlashInputs<float> in{
      w.q.data(),
      d,
      w.k.data(),
      d,
      w.v.data(),
      d,
      n,
      n,
      d,
      d,
      static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(d))),
      resolve_mask(Mask::none(), n, n)};
  detail::FlashWorkspace<float> ws;
  ws.reserve(d, d, block_q, block_k);
  RowMatrix<float> out(n, d);
  Vector<float> lse(n);
  for (Index i0 = 0; i0 < n; i0 += block_q) {  // realistic contents for st
    const auto b = detail::block_shape<float>(std::min(block_q, n - i0));
    detail::block_begin(in, i0, b, ws);
    detail::tile_scores(in, b, 0, block_k, ws);
    detail::tile_softmax(b, block_k, ws);
  }
  for (auto _ : state) {
    for (Index i0 = 0; i0 < n; i0 += block_q) {
      const auto b = detail::block_shape<float>(std::min(block_q, n - i0));
      if (phase == 0) {
        detail::block_begin(in, i0, b, ws);
        detail::block_end(b, d, ws, out.data() + i0 * d, d, lse.data() + i0);
        continue;
      }
      for (Index j0 = 0; j0 < n; j0 += block_k) {
        const Index nk = std::min(block_k, n - j0);
        if (phase == 1) detail::tile_scores(in, b, j0, nk, ws);
        if (phase == 2) detail::tile_softmax(b, nk, ws);
        if (phase == 3) detail::tile_accumulate(in, b, j0, nk, false, ws);
      }
    }
    benchmark::DoNotOptimize(ws.ot.data());
    benchmark::ClobberMemory();
  }
  // Phases 1 and 3 are each half of the attention flops.
  if (phase == 1 || phase == 3) set_gflops(state, 0.5 * attention_flops(n, n, d, d, false));
}

// Tile sizes: one thread, non-causal, n = 4096.
void run_tiles(benchmark::State& state, Index n, Index d, Index block_q, Index block_k) {
  const auto& w = cached_workload<float>(kKind, n, n, d);
  AttentionResult<float> r{RowMatrix<float>(n, d), Vector<float>(n)};
  for (auto _ : state) {
    flash_attention_into(w.q, w.k, w.v, r.output, r.lse, {}, FlashConfig{1, block_q, block_k});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  set_gflops(state, attention_flops(n, n, d, d, false));
}

// Collects the median (or only) real time and GFLOP/s of every run for the
// ratio table printed at the end.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    // Aggregates arrive after the repetitions they summarise: the median,
    // when there is one, overwrites the single runs.
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      Entry& e = entries_[run.run_name.str()];
      e.seconds = run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
      for (const char* counter : {"GFLOP/s", "GB/s"}) {
        const auto it = run.counters.find(counter);
        if (it != run.counters.end()) e.rate = static_cast<double>(it->second);
      }
    }
  }

  void print_ratios() const {
    std::printf("\nRatios (medians when repeated):\n");
    std::printf("%-6s %-4s %-7s %-3s %9s %9s %8s %8s %9s %9s %9s\n", "n", "d", "mask", "thr", "flash", "gemm",
                "flash/", "vs mat.", "vs ref", "2thr/1thr", "causal/");
    std::printf("%-6s %-4s %-7s %-3s %9s %9s %8s %8s %9s %9s %9s\n", "", "", "", "", "GFLOP/s", "GFLOP/s",
                "gemm", "speedup", "speedup", "", "none");
    for (const Index n : {1024, 4096, 16384})
      for (const Index d : {64, 128})
        for (const char* mask : {"none", "causal"})
          for (const int t : {1, 2}) {
            const Entry* f = find(key("flash", n, d, mask, t));
            if (!f) continue;
            const Entry* g = find(key("gemm", n, d, "none", t));
            const Entry* m = find(key("materialized", n, d, mask, t));
            const Entry* r = find(key("reference", n, d, mask, 1));
            const Entry* f1 = find(key("flash", n, d, mask, 1));
            const Entry* fn = find(key("flash", n, d, "none", t));
            std::printf("%-6ld %-4ld %-7s %-3d %9.1f %9s %8s %8s %9s %9s %9s\n", static_cast<long>(n),
                        static_cast<long>(d), mask, t, f->rate, g ? fmt(g->rate).c_str() : "-",
                        g ? fmt(f->rate / g->rate, 2).c_str() : "-",
                        m ? fmt(m->seconds / f->seconds, 1).c_str() : "-",
                        r ? fmt(r->seconds / f->seconds, 1).c_str() : "-",
                        t == 2 && f1 ? fmt(f1->seconds / f->seconds, 2).c_str() : "-",
                        std::string(mask) == "causal" && fn ? fmt(f->rate / fn->rate, 2).c_str() : "-");
          }
    for (const int t : {1, 2})
      if (const Entry* peak = find("fma_peak/threads:" + std::to_string(t)))
        std::printf("FMA peak, %d thread(s): %.1f GFLOP/s\n", t, peak->rate);
    for (const Index d : {64, 128}) {
      const Entry* full = find(key("flash", 4096, d, "none", 1));
      const std::string nd = "/n:4096/d:" + std::to_string(d);
      const Entry* ph[4] = {find("phase/pack_finish" + nd), find("phase/scores" + nd),
                            find("phase/softmax" + nd), find("phase/accumulate" + nd)};
      if (!full || !ph[0] || !ph[1] || !ph[2] || !ph[3]) continue;
      const double sum = ph[0]->seconds + ph[1]->seconds + ph[2]->seconds + ph[3]->seconds;
      std::printf(
          "phases n 4096 d %ld, 1 thread (full run %.2f ms, sum of phases %.2f ms): Q^T pack+finish %.1f%%, "
          "S = K Q^T %.1f%% (%.0f GFLOP/s), softmax %.1f%%, O += V^T P %.1f%% (%.0f GFLOP/s)\n",
          static_cast<long>(d), full->seconds * 1e3, sum * 1e3, 100 * ph[0]->seconds / sum,
          100 * ph[1]->seconds / sum, ph[1]->rate, 100 * ph[2]->seconds / sum, 100 * ph[3]->seconds / sum,
          ph[3]->rate);
    }
    for (const Index d : {64, 128}) {
      std::printf("tiles n 4096 d %ld, 1 thread, GFLOP/s (rows block_q, columns block_k):\n       ",
                  static_cast<long>(d));
      for (const Index bk : {64, 128, 256, 512})
        std::printf(" %7ld", static_cast<long>(bk));
      std::printf("\n");
      for (const Index bq : {32, 64, 128}) {
        std::printf("  %4ld ", static_cast<long>(bq));
        for (const Index bk : {64, 128, 256, 512}) {
          const Entry* e = find("tiles/n:4096/d:" + std::to_string(d) + "/bq:" + std::to_string(bq) +
                                "/bk:" + std::to_string(bk));
          std::printf(" %7s", e ? fmt(e->rate).c_str() : "-");
        }
        std::printf("\n");
      }
    }
    for (const int t : {1, 2}) {
      const Entry* dec = find("decode/n_k:65536/d:128/threads:" + std::to_string(t));
      const Entry* rd = find("read_kv/n_k:65536/d:128/threads:" + std::to_string(t));
      if (dec && rd)
        std::printf(
            "decode 1 x 65536, d 128, %d thread(s): %.3f ms vs reading K and V once %.3f ms: %.2fx (%.1f vs "
            "%.1f GB/s)\n",
            t, dec->seconds * 1e3, rd->seconds * 1e3, dec->seconds / rd->seconds, dec->rate, rd->rate);
    }
  }

 private:
  struct Entry {
    double seconds = 0;
    double rate = 0;
  };
  static std::string key(const char* method, Index n, Index d, const char* mask, int t) {
    std::string k = std::string(method) + "/n:" + std::to_string(n) + "/d:" + std::to_string(d);
    if (std::string(method) != "gemm") k += std::string("/mask:") + mask;
    if (std::string(method) != "reference") k += "/threads:" + std::to_string(t);
    return k;
  }
  static std::string fmt(double x, int digits = 1) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", digits, x);
    return buf;
  }
  const Entry* find(const std::string& name) const {
    // Registered names carry "/real_time" (UseRealTime).
    auto it = entries_.find(name + "/real_time");
    if (it == entries_.end()) it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  std::map<std::string, Entry> entries_;
};

void register_all() {
  for (const Index n : {1024, 4096, 16384})
    for (const Index d : {64, 128}) {
      const std::string nd = "/n:" + std::to_string(n) + "/d:" + std::to_string(d);
      for (const bool causal : {false, true}) {
        const std::string mask = causal ? "/mask:causal" : "/mask:none";
        benchmark::RegisterBenchmark(("reference" + nd + mask).c_str(),
                                     [=](benchmark::State& s) { run_reference(s, n, d, causal); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        for (const int t : {1, 2}) {
          const std::string th = "/threads:" + std::to_string(t);
          benchmark::RegisterBenchmark(("materialized" + nd + mask + th).c_str(),
                                       [=](benchmark::State& s) { run_materialized(s, n, d, causal, t); })
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
          benchmark::RegisterBenchmark(("flash" + nd + mask + th).c_str(),
                                       [=](benchmark::State& s) { run_flash(s, n, d, causal, t); })
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
      }
      for (const int t : {1, 2})
        benchmark::RegisterBenchmark(("gemm" + nd + "/threads:" + std::to_string(t)).c_str(),
                                     [=](benchmark::State& s) { run_gemm(s, n, d, t); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    }
  for (const int t : {1, 2})
    benchmark::RegisterBenchmark(("fma_peak/threads:" + std::to_string(t)).c_str(),
                                 [=](benchmark::State& s) { run_fma_peak(s, t); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  for (const Index d : {64, 128}) {
    const std::string nd = "/n:4096/d:" + std::to_string(d);
    const char* names[4] = {"phase/pack_finish", "phase/scores", "phase/softmax", "phase/accumulate"};
    for (int phase = 0; phase < 4; ++phase)
      benchmark::RegisterBenchmark((names[phase] + nd).c_str(),
                                   [=](benchmark::State& s) { run_phase(s, 4096, d, phase); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    for (const Index bq : {32, 64, 128})
      for (const Index bk : {64, 128, 256, 512})
        benchmark::RegisterBenchmark(
            ("tiles" + nd + "/bq:" + std::to_string(bq) + "/bk:" + std::to_string(bk)).c_str(),
            [=](benchmark::State& s) { run_tiles(s, 4096, d, bq, bk); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
  }
  for (const int t : {1, 2}) {
    const std::string th = "/threads:" + std::to_string(t);
    benchmark::RegisterBenchmark(("decode/n_k:65536/d:128" + th).c_str(),
                                 [=](benchmark::State& s) { run_decode(s, 65536, 128, t); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("read_kv/n_k:65536/d:128" + th).c_str(),
                                 [=](benchmark::State& s) { run_read(s, 65536, 128, t); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
}

}  // namespace
}  // namespace attnkit::bench

int main(int argc, char** argv) {
  attnkit::bench::register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  attnkit::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print_ratios();
  benchmark::Shutdown();
  return 0;
}
