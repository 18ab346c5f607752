// The fused exact kernel (attnkit/attention/flash.hpp) against, in the same
// run: the reference, the plain "materialise Q K^T with Eigen, softmax,
// multiply by V" baseline, and Eigen's own GEMM on the matching
// (n x d)(d x n) product (the practical ceiling). Float, LLM-like workload,
// n in {1024, 4096, 16384}, d in {64, 128}, masks none and causal, 1 and 2
// threads. Decode: one query against 65536 cached keys, d = 128, against the
// time to read K and V once (a plain reduction over an equally large array).
//
// Also in the same run: the kernel of the previous commit (9c49f25, kept in
// bench/baseline/) as "prev" rows, for before/after ratios; a sliding window
// (w = 4096 at n = 65536, d = 64) against the causal run it is a band of; and
// the pruned key cache (ratio 0.5, D = 128) decoding one query over 65536
// keys against the full-dimension decode, and attending the judged queries
// of the pruning protocol against flash on the same queries.
//
// GFLOP/s counts 4 n_q n_k d flops (the two products), halved for causal;
// the GEMM counts its own 2 n^2 d. After the runs the binary prints a table of
// ratios computed from the medians when --benchmark_repetitions > 1.
//
//   build/release/bench/flash_bench --benchmark_repetitions=3
//   build/release/bench/flash_bench --benchmark_filter='flash|prev|fma' --benchmark_repetitions=5

#include "attnkit/attention/flash.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "attnkit/attention/reference.hpp"
#include "attnkit/prune/prompt.hpp"
#include "baseline/flash_9c49f25.hpp"
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

// The same call through the kernel of commit 9c49f25 (bench/baseline/).
void run_prev(benchmark::State& state, Index n, Index d, bool causal, int threads) {
  const auto& w = cached_workload<float>(kKind, n, n, d);
  const AttentionOptions opt{causal ? Mask::causal() : Mask::none(), {}};
  RowMatrix<float> out(n, d);
  Vector<float> lse(n);
  for (auto _ : state) {
    baseline_9c49f25::flash_attention_into(w.q, w.k, w.v, out, lse, opt,
                                           baseline_9c49f25::FlashConfig{threads});
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_gflops(state, attention_flops(n, n, d, d, causal));
}

// A sliding window of w keys under the causal mask: 2 n w - w^2 ... pairs; the
// counter counts the visible pairs (n w - w (w - 1) / 2) at 4 d flops each.
void run_window(benchmark::State& state, Index n, Index d, Index window, int threads) {
  const auto& w = cached_workload<float>(kKind, n, n, d);
  const AttentionOptions opt{Mask::causal().with_window(window), {}};
  AttentionResult<float> r{RowMatrix<float>(n, d), Vector<float>(n)};
  for (auto _ : state) {
    flash_attention_into(w.q, w.k, w.v, r.output, r.lse, opt, FlashConfig{threads});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  const double pairs = static_cast<double>(n) * static_cast<double>(window) -
                       0.5 * static_cast<double>(window) * static_cast<double>(window - 1);
  set_gflops(state, 4.0 * pairs * static_cast<double>(d));
}

// The pruned key cache of the LLM-like keys (ThinK: gram weights, top-k,
// ratio 0.5, the last 32 tokens at full width) decoding one query over all
// of them, against flash decode over the full-width keys of the same cache.
struct PrunedSetup {
  Workload<float> w;
  PrunedPrompt<float> pruned;
};

const PrunedSetup& pruned_setup(Index n, Index d) {
  static std::map<std::pair<Index, Index>, PrunedSetup> cache;
  auto it = cache.find({n, d});
  if (it == cache.end()) {
    Workload<float> w = make_workload<float>(kKind, {n, n, d, d}, 2026);
    PruneOptions o;
    o.ratio = 0.5;
    PrunedPrompt<float> p = prune_prompt(w.q.bottomRows(32), w.k, o);
    it = cache.emplace(std::make_pair(n, d), PrunedSetup{std::move(w), std::move(p)}).first;
  }
  return it->second;
}

void run_pruned_decode(benchmark::State& state, Index n_k, Index d, int threads) {
  const PrunedSetup& s = pruned_setup(n_k, d);
  const RowMatrix<float> q = s.w.q.bottomRows(1);
  for (auto _ : state) {
    auto r = s.pruned.cache.attention(q, s.w.v, {}, FlashConfig{threads});
    benchmark::DoNotOptimize(r.output.data());
  }
  const double kept = static_cast<double>(s.pruned.cache.kept_dim());
  state.counters["GB/s"] =
      benchmark::Counter(static_cast<double>(n_k) * (kept + static_cast<double>(d)) * sizeof(float) / 1e9,
                         benchmark::Counter::kIsIterationInvariantRate);
}

void run_full_decode(benchmark::State& state, Index n_k, Index d, int threads) {
  const PrunedSetup& s = pruned_setup(n_k, d);
  const RowMatrix<float> q = s.w.q.bottomRows(1);
  for (auto _ : state) {
    auto r = flash_attention(q, s.w.k, s.w.v, {}, FlashConfig{threads});
    benchmark::DoNotOptimize(r.output.data());
  }
  state.counters["GB/s"] = benchmark::Counter(2.0 * static_cast<double>(n_k * d) * sizeof(float) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// The pruning protocol's judged queries (n = 4096, prompt n0 = 3072, D = 128):
// the cache after the judged tokens were appended at full width, the 1024
// judged queries attending causally. GFLOP/s counts the pruned flops:
// 2 (D' + d_v) per compressed pair, 2 (D + d_v) per full-width pair.
struct ProtocolSetup {
  Workload<float> w;
  PrunedPrompt<float> pruned;
  RowMatrix<float> judged;
  double pruned_flops = 0, full_flops = 0;
};

const ProtocolSetup& protocol_setup() {
  static std::optional<ProtocolSetup> s;
  if (!s) {
    const Index n = 4096, n0 = 3072, d = 128;
    Workload<float> w = make_workload<float>(kKind, {n, n, d, d}, 2026);
    PruneOptions o;
    o.ratio = 0.5;
    o.compress_overflow = false;
    PrunedPrompt<float> p = prune_prompt(w.q.middleRows(n0 - 32, 32), w.k.topRows(n0), o);
    p.cache.append(w.k.bottomRows(n - n0));
    const double n_c = static_cast<double>(p.cache.compressed_size()),
                 kept = static_cast<double>(p.cache.kept_dim());
    double pruned = 0, full = 0;
    for (Index t = n0; t < n; ++t) {
      const double seen = static_cast<double>(t + 1);
      pruned += 2.0 * (n_c * (kept + d) + (seen - n_c) * (d + d));
      full += 2.0 * seen * (d + d);
    }
    RowMatrix<float> judged = w.q.bottomRows(n - n0);
    s = ProtocolSetup{std::move(w), std::move(p), std::move(judged), pruned, full};
  }
  return *s;
}

void run_protocol_pruned(benchmark::State& state, int threads) {
  const ProtocolSetup& s = protocol_setup();
  for (auto _ : state) {
    auto r = s.pruned.cache.attention(s.judged, s.w.v, {Mask::causal()}, FlashConfig{threads});
    benchmark::DoNotOptimize(r.output.data());
  }
  set_gflops(state, s.pruned_flops);
}

void run_protocol_flash(benchmark::State& state, int threads) {
  const ProtocolSetup& s = protocol_setup();
  for (auto _ : state) {
    auto r = flash_attention(s.judged, s.w.k, s.w.v, {Mask::causal()}, FlashConfig{threads});
    benchmark::DoNotOptimize(r.output.data());
  }
  set_gflops(state, s.full_flops);
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

// 16-bit storage (Eigen::half, Eigen::bfloat16): the workload rounded once,
// cached per (type, kind, n, d).
template <typename S>
const Workload<S>& cached_16bit(WorkloadKind kind, Index n_q, Index n_k, Index d) {
  static std::map<std::tuple<int, Index, Index, Index>, Workload<S>> cache;
  const auto key = std::make_tuple(static_cast<int>(kind), n_q, n_k, d);
  auto it = cache.find(key);
  if (it == cache.end()) {
    const Workload<float>& w = cached_workload<float>(kind, n_q, n_k, d);
    it = cache.emplace(key, Workload<S>{w.q.cast<S>(), w.k.cast<S>(), w.v.cast<S>()}).first;
  }
  return it->second;
}

// Decode over 16-bit K and V (float query and arithmetic).
template <typename S>
void run_decode16(benchmark::State& state, Index n_k, Index d, int threads) {
  const auto& wf = cached_workload<float>(WorkloadKind::iid, 1, n_k, d);
  const Workload<S>& w = cached_16bit<S>(WorkloadKind::iid, 1, n_k, d);
  AttentionResult<float> r{RowMatrix<float>(1, d), Vector<float>(1)};
  for (auto _ : state) {
    flash_attention_into(wf.q, w.k, w.v, r.output, r.lse, {}, FlashConfig{threads});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(2.0 * static_cast<double>(n_k * d) * sizeof(S) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// Reading 16-bit K and V once: the same plain vectorised reduction over the
// raw 16-bit words (as integers, so the compiler vectorises it).
template <typename S>
void run_read16(benchmark::State& state, Index n_k, Index d, int threads) {
  const Workload<S>& w = cached_16bit<S>(WorkloadKind::iid, 1, n_k, d);
  const std::uint16_t* arrays[2] = {reinterpret_cast<const std::uint16_t*>(w.k.data()),
                                    reinterpret_cast<const std::uint16_t*>(w.v.data())};
  const Index count = n_k * d;
  for (auto _ : state) {
    std::uint64_t total = 0;
    for (const std::uint16_t* a : arrays) {
      std::uint32_t sum = 0;
      ATTNKIT_PRAGMA(omp parallel for simd reduction(+ : sum) num_threads(threads))
      for (Index i = 0; i < count; ++i)
        sum += a[i];
      total += sum;
    }
    benchmark::DoNotOptimize(total);
  }
  state.counters["GB/s"] = benchmark::Counter(2.0 * static_cast<double>(count) * sizeof(S) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// Prefill with 16-bit storage: K and V (and, for bfloat16, Q: the bfloat16
// dot-product path when the CPU has it) stored in S, float arithmetic.
template <typename S>
void run_flash16(benchmark::State& state, Index n, Index d, bool causal, int threads, bool store_q) {
  const auto& wf = cached_workload<float>(kKind, n, n, d);
  const Workload<S>& w = cached_16bit<S>(kKind, n, n, d);
  const AttentionOptions opt{causal ? Mask::causal() : Mask::none(), {}};
  AttentionResult<float> r{RowMatrix<float>(n, d), Vector<float>(n)};
  for (auto _ : state) {
    if (store_q)
      flash_attention_into(w.q, w.k, w.v, r.output, r.lse, opt, FlashConfig{threads});
    else
      flash_attention_into(wf.q, w.k, w.v, r.output, r.lse, opt, FlashConfig{threads});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  set_gflops(state, attention_flops(n, n, d, d, causal));
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
  const AttentionProblem pb = make_attention_problem("phase", w.q, w.k, w.v, {});
  using In = detail::FlashInputs<float, float, float, float, DotProductScore>;
  const In in{w.q.data(), d, w.k.data(), d, w.v.data(), d,
              n,          d, d,          0, pb.mask,    DotProductScore{}.kernel<float>(pb)};
  detail::FlashWorkspace<float> ws;
  ws.reserve(d, d, block_q, block_k, 0, 0);
  RowMatrix<float> out(n, d);
  Vector<float> lse(n);
  for (Index i0 = 0; i0 < n; i0 += block_q) {  // realistic contents for st
    const auto b = detail::block_shape<float>(std::min(block_q, n - i0));
    detail::block_begin(in, i0, b, ws);
    detail::tile_scores(in, b, 0, block_k, ws);
    detail::tile_softmax(b.npk, b.bq, block_k, ws);
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
        if (phase == 2) detail::tile_softmax(b.npk, b.bq, nk, ws);
        if (phase == 3) detail::tile_accumulate(in, b, j0, nk, 0, ws);
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
    std::printf("%-6s %-4s %-7s %-3s %9s %9s %8s %9s %8s %8s %9s %9s %9s\n", "n", "d", "mask", "thr", "flash",
                "prev", "flash/", "gemm", "flash/", "vs mat.", "vs ref", "2thr/1thr", "causal/");
    std::printf("%-6s %-4s %-7s %-3s %9s %9s %8s %9s %8s %8s %9s %9s %9s\n", "", "", "", "", "GFLOP/s",
                "GFLOP/s", "prev", "GFLOP/s", "gemm", "speedup", "speedup", "", "none");
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
            const Entry* pv = find(key("prev", n, d, mask, t));
            std::printf("%-6ld %-4ld %-7s %-3d %9.1f %9s %8s %9s %8s %8s %9s %9s %9s\n", static_cast<long>(n),
                        static_cast<long>(d), mask, t, f->rate, pv ? fmt(pv->rate).c_str() : "-",
                        pv ? fmt(f->rate / pv->rate, 3).c_str() : "-", g ? fmt(g->rate).c_str() : "-",
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
      const Entry* win = find("window/n:65536/d:64/w:4096/threads:" + std::to_string(t));
      const Entry* cau = find(key("flash", 65536, 64, "causal", t));
      if (win && cau) {
        // The band's share of the causal pairs: (n w - w (w - 1) / 2) / (n (n + 1) / 2).
        const double n = 65536, w = 4096, share = (n * w - 0.5 * w * (w - 1)) / (0.5 * n * (n + 1));
        std::printf(
            "window w 4096, n 65536, d 64, %d thread(s): %.1f ms vs causal %.1f ms; causal time x band share "
            "(%.4f) = %.1f ms: window / (causal x share) = %.3f (%.1f vs %.1f GFLOP/s)\n",
            t, win->seconds * 1e3, cau->seconds * 1e3, share, cau->seconds * share * 1e3,
            win->seconds / (cau->seconds * share), win->rate, cau->rate);
      }
      const Entry* pd = find("pruned_decode/n_k:65536/d:128/threads:" + std::to_string(t));
      const Entry* fd = find("full_decode/n_k:65536/d:128/threads:" + std::to_string(t));
      if (pd && fd)
        std::printf(
            "pruned cache decode (ratio 0.5, D 128) 1 x 65536, %d thread(s): %.3f ms vs full-width decode "
            "%.3f ms: "
            "%.3f (%.1f vs %.1f GB/s)\n",
            t, pd->seconds * 1e3, fd->seconds * 1e3, pd->seconds / fd->seconds, pd->rate, fd->rate);
      const Entry* pp = find("protocol_pruned/threads:" + std::to_string(t));
      const Entry* pf = find("protocol_flash/threads:" + std::to_string(t));
      if (pp && pf)
        std::printf(
            "protocol judged queries (n 4096, n0 3072, D 128, ratio 0.5), %d thread(s): pruned cache %.1f "
            "GFLOP/s "
            "(pruned flops, %.2f ms) vs flash %.1f GFLOP/s (%.2f ms): rate ratio %.3f\n",
            t, pp->rate, pp->seconds * 1e3, pf->rate, pf->seconds * 1e3, pp->rate / pf->rate);
    }
    for (const int t : {1, 2}) {
      const std::string th = "/n_k:65536/d:128/threads:" + std::to_string(t);
      const Entry* f32 = find("decode" + th);
      for (const char* ty : {"bf16", "f16"}) {
        const Entry* dec = find(std::string("decode_") + ty + th);
        const Entry* rd = find(std::string("read_") + ty + th);
        if (dec && rd && f32)
          std::printf(
              "decode 1 x 65536, d 128, %s K/V, %d thread(s): %.3f ms vs reading the 16-bit K and V once "
              "%.3f ms: "
              "%.2fx; fp32 decode %.3f ms: %.2fx faster\n",
              ty, t, dec->seconds * 1e3, rd->seconds * 1e3, dec->seconds / rd->seconds, f32->seconds * 1e3,
              f32->seconds / dec->seconds);
      }
      for (const Index d : {64, 128}) {
        const std::string nd = "/n:16384/d:" + std::to_string(d) + "/mask:none/threads:" + std::to_string(t);
        const Entry* base = find("flash" + nd);
        for (const char* ty : {"bf16kv", "f16kv", "bf16qkv"}) {
          const Entry* e = find(std::string("flash_") + ty + nd);
          if (e && base)
            std::printf("prefill n 16384, d %ld, %s storage, %d thread(s): %.1f GFLOP/s vs fp32 %.1f: %.3f\n",
                        static_cast<long>(d), ty, t, e->rate, base->rate, e->rate / base->rate);
        }
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
          if (n >= 4096)
            benchmark::RegisterBenchmark(("prev" + nd + mask + th).c_str(),
                                         [=](benchmark::State& s) { run_prev(s, n, d, causal, t); })
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
    benchmark::RegisterBenchmark(("flash/n:65536/d:64/mask:causal" + th).c_str(),
                                 [=](benchmark::State& s) { run_flash(s, 65536, 64, true, t); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("window/n:65536/d:64/w:4096" + th).c_str(),
                                 [=](benchmark::State& s) { run_window(s, 65536, 64, 4096, t); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("pruned_decode/n_k:65536/d:128" + th).c_str(),
                                 [=](benchmark::State& s) { run_pruned_decode(s, 65536, 128, t); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("full_decode/n_k:65536/d:128" + th).c_str(),
                                 [=](benchmark::State& s) { run_full_decode(s, 65536, 128, t); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("protocol_pruned" + th).c_str(),
                                 [=](benchmark::State& s) { run_protocol_pruned(s, t); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("protocol_flash" + th).c_str(),
                                 [=](benchmark::State& s) { run_protocol_flash(s, t); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("decode/n_k:65536/d:128" + th).c_str(),
                                 [=](benchmark::State& s) { run_decode(s, 65536, 128, t); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(
        ("decode_bf16/n_k:65536/d:128" + th).c_str(),
        [=](benchmark::State& s) { run_decode16<Eigen::bfloat16>(s, 65536, 128, t); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("decode_f16/n_k:65536/d:128" + th).c_str(),
                                 [=](benchmark::State& s) { run_decode16<Eigen::half>(s, 65536, 128, t); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("read_bf16/n_k:65536/d:128" + th).c_str(),
                                 [=](benchmark::State& s) { run_read16<Eigen::bfloat16>(s, 65536, 128, t); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("read_f16/n_k:65536/d:128" + th).c_str(),
                                 [=](benchmark::State& s) { run_read16<Eigen::half>(s, 65536, 128, t); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    for (const Index d : {64, 128}) {
      const std::string nd = "/n:16384/d:" + std::to_string(d) + "/mask:none" + th;
      benchmark::RegisterBenchmark(
          ("flash_bf16kv" + nd).c_str(),
          [=](benchmark::State& s) { run_flash16<Eigen::bfloat16>(s, 16384, d, false, t, false); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(
          ("flash_f16kv" + nd).c_str(),
          [=](benchmark::State& s) { run_flash16<Eigen::half>(s, 16384, d, false, t, false); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(
          ("flash_bf16qkv" + nd).c_str(),
          [=](benchmark::State& s) { run_flash16<Eigen::bfloat16>(s, 16384, d, false, t, true); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
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
