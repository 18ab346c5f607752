// Approximate attention with a proven bound (attnkit/approx/approx_attention.hpp)
// against the fused exact kernel, in the same run: float, d = 64, causal
// mask, n in {4096, 16384, 65536}, on three workloads:
//   iid        Gaussian Q, K with entries of std 1.5 (logit std 2.25 at
//              scale 1/8): large entries, the Alman-Song regime in which no
//              sub-quadratic method can be accurate; the certified mode must
//              notice and cost about the exact kernel;
//   clustered  16 tight clusters (make_clustered_workload with a logit
//              spread of 0.05 inside a cluster) whose values are the
//              cluster's value plus N(0, 0.05^2) noise: the structure the
//              method exploits (a cluster can be summarised, not only
//              skipped);
//   clustered_loose  make_clustered_workload's defaults (logit spread 2
//              inside a cluster, iid values): a query's own cluster must be
//              attended exactly, the other clusters can be skipped;
//   llm        the LLM-like workload (attnkit/workload/llm_like.hpp).
// Rows: flash (the baseline), certified eps in {1e-1, 1e-2, 1e-3},
// budgeted B in {64, 256, 1024, 4096} (second-order estimator); on llm also
// the budgeted mode with the centroid-only (monopole) estimator and exact
// top-k attention with k = B + 256 keys (256: the mean number of keys the
// approximation attends exactly near the diagonal, B_0 / 2).
//
// Per row (counters, also in --benchmark_out JSON): time of one call, index
// build included; err_contract = max over sampled entries of
// |O'_rc - O_rc| / (eps max_{visible j} |V_jc|) (the exact O from the kernel
// in double on 128 evenly spaced rows, including the last; eps = 1e-2 for the
// rows without one); bound_contract = max over all entries of bound_rc / (eps
// max |V_jc|) (ApproxStats::max_bound_ratio / eps); exact, summarised,
// skipped = shares of the visible (row, key) pairs; keys_row = exact keys
// per row. After the runs: a table of medians with the speedup against flash
// (same workload and n) and, per approximate row present at both n = 16384
// and 65536, the time exponent log(t_65536 / t_16384) / log 4.
//
//   build/rel/bench/approx_bench --max-n=16384                      # smoke
//   build/rel/bench/approx_bench --threads=2 --benchmark_repetitions=3
//       --benchmark_out=approx.json --benchmark_out_format=json      # full (one line)
// Flags: --max-n=N (largest n, default 65536), --threads=T (default 2),
// --workload=iid|clustered|clustered_loose|llm (default all), and Google Benchmark's own.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "attnkit/approx/approx_attention.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/sparse/topk.hpp"
#include "attnkit/workload/llm_like.hpp"
#include "bench_util.hpp"

namespace attnkit::bench {
namespace {

const Index kD = 64;
const Index kSampleRows = 128;
const double kNominalEps = 1e-2;
int g_threads = 2;
Index g_max_n = 65536;
std::string g_workload;

const char* const kWorkloads[] = {"iid", "clustered", "clustered_loose", "llm"};

Workload<float> generate(const std::string& name, Index n) {
  const WorkloadShape shape{n, n, kD, kD};
  if (name == "iid") return make_iid_workload<float>(shape, 2026, IidOptions{1.5, 1.5, 1.0});
  if (name == "clustered_loose") return make_clustered_workload<float>(shape, 2026);
  if (name == "clustered") {
    // Tight clusters whose values are the cluster's value plus 5 % noise:
    // the generator puts key j in cluster j mod 16 (interleaved).
    ClusteredOptions o;
    o.key_logit_std = 0.05;
    Workload<float> w = make_clustered_workload<float>(shape, 2026, o);
    detail::Random rng(2027);
    const RowMatrix<double> centre_v = rng.normal_matrix(o.clusters, kD);
    for (Index j = 0; j < n; ++j)
      for (Index c = 0; c < kD; ++c)
        w.v(j, c) = static_cast<float>(centre_v(j % o.clusters, c) + 0.05 * rng.normal());
    return w;
  }
  return make_llm_like_workload<float>(shape, 2026);
}

/// The inputs and the exact output of the sampled rows, once per (workload, n).
struct Problem {
  Workload<float> w;
  std::vector<Index> rows;  ///< sampled rows
  RowMatrix<double> exact;  ///< (rows x d_v) in double
  RowMatrix<double> vmax;   ///< (rows x d_v) max_{j <= r} |V_jc|
};

const Problem& problem(const std::string& name, Index n) {
  static std::map<std::pair<std::string, Index>, Problem> cache;
  const auto key = std::make_pair(name, n);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  Problem p{generate(name, n), {}, {}, {}};
  const Index s = std::min(n, kSampleRows);
  for (Index i = 0; i < s; ++i)
    p.rows.push_back((i + 1) * n / s - 1);
  p.exact.resize(s, kD);
  p.vmax.resize(s, kD);
  const RowMatrix<double> q = p.w.q.cast<double>(), k = p.w.k.cast<double>(), v = p.w.v.cast<double>();
  for (Index i = 0; i < s; ++i) {
    const Index r = p.rows[static_cast<std::size_t>(i)];
    const AttentionResult<double> e = flash_attention<double>(q.row(r), k.topRows(r + 1), v.topRows(r + 1),
                                                              {Mask::none()}, FlashConfig{g_threads});
    p.exact.row(i) = e.output.row(0);
    p.vmax.row(i) = v.topRows(r + 1).cwiseAbs().colwise().maxCoeff();
  }
  return cache.emplace(key, std::move(p)).first->second;
}

/// max over the sampled entries of |out - exact| / max |V_jc|.
double sampled_error(const Problem& p, const RowMatrix<float>& out) {
  double worst = 0;
  for (Index i = 0; i < p.exact.rows(); ++i)
    for (Index c = 0; c < p.exact.cols(); ++c) {
      const double err =
          std::fabs(static_cast<double>(out(p.rows[static_cast<std::size_t>(i)], c)) - p.exact(i, c));
      if (p.vmax(i, c) > 0) worst = std::max(worst, err / p.vmax(i, c));
    }
  return worst;
}

void run_flash(benchmark::State& state, const std::string& name, Index n) {
  const Problem& p = problem(name, n);
  AttentionResult<float> r{RowMatrix<float>(n, kD), Vector<float>(n)};
  for (auto _ : state) {
    flash_attention_into(p.w.q, p.w.k, p.w.v, r.output, r.lse, {Mask::causal()}, FlashConfig{g_threads});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  state.counters["err_contract"] = sampled_error(p, r.output) / kNominalEps;
  state.counters["exact"] = 1;
}

void run_topk(benchmark::State& state, const std::string& name, Index n, Index k) {
  const Problem& p = problem(name, n);
  AttentionResult<float> r{RowMatrix<float>(n, kD), Vector<float>(n)};
  for (auto _ : state) {
    topk_attention_into(p.w.q, p.w.k, p.w.v, {k}, r.output, r.lse, {Mask::causal()}, FlashConfig{g_threads});
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  state.counters["err_contract"] = sampled_error(p, r.output) / kNominalEps;
  state.counters["keys_row"] = static_cast<double>(k);
}

void run_approx(benchmark::State& state, const std::string& name, Index n, ApproxOptions opt) {
  const Problem& p = problem(name, n);
  opt.mask = Mask::causal();
  opt.threads = g_threads;
  ApproxResult<float> r;
  for (auto _ : state) {
    r = approx_attention(p.w.q, p.w.k, p.w.v, opt);
    benchmark::DoNotOptimize(r.output.data());
    benchmark::ClobberMemory();
  }
  const ApproxStats& st = r.stats;
  const double pairs = st.exact_keys + st.summarised_keys + st.skipped_keys;
  state.counters["err_contract"] = sampled_error(p, r.output) / opt.eps;
  state.counters["bound_contract"] = st.max_bound_ratio / opt.eps;
  state.counters["exact"] = st.exact_keys / pairs;
  state.counters["summarised"] = st.summarised_keys / pairs;
  state.counters["skipped"] = st.skipped_keys / pairs;
  state.counters["keys_row"] = st.exact_keys / static_cast<double>(n);
  state.counters["index_MB"] = static_cast<double>(st.index_bytes) / 1e6;
  state.counters["repaired_rows"] = static_cast<double>(st.repaired_rows);
}

class Reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      std::string name = run.run_name.str();
      name = name.substr(0, name.find("/iterations"));
      name = name.substr(0, name.find("/real_time"));
      Entry& e = entries_[name];
      e.seconds = run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
      for (const auto& [key, counter] : run.counters)
        e.counters[key] = static_cast<double>(counter);
    }
  }
  void print() const {
    std::printf(
        "\nfloat, d %ld, causal, %d thread(s) (medians when repeated); ratios to the contract "
        "eps max|V| (eps 1e-2 for flash and top-k)\n",
        static_cast<long>(kD), g_threads);
    std::printf("%-36s %10s %8s %10s %10s %7s %7s %7s %9s\n", "row", "ms", "speedup", "err/ctr", "bound/ctr",
                "exact", "summ", "skip", "keys/row");
    for (const auto& entry : entries_) {
      // Not a structured binding: the lambda below uses e, and clang before
      // 16 cannot capture one in C++17.
      const std::string& name = entry.first;
      const Entry& e = entry.second;
      const std::string prefix = name.substr(0, name.find('/', name.find('/') + 1));  // workload/n
      const auto flash = entries_.find(prefix + "/flash");
      const auto get = [&](const char* key) {
        const auto it = e.counters.find(key);
        return it == e.counters.end() ? std::nan("") : it->second;
      };
      std::printf("%-36s %10.1f %8.2f %10.3g %10.3g %7.3f %7.3f %7.3f %9.0f\n", name.c_str(), e.seconds * 1e3,
                  flash == entries_.end() ? std::nan("") : flash->second.seconds / e.seconds,
                  get("err_contract"), get("bound_contract"), get("exact"), get("summarised"), get("skipped"),
                  get("keys_row"));
    }
    bool header = false;
    for (const auto& [name, e] : entries_) {
      const std::string::size_type a = name.find('/'), b = name.find('/', a + 1);
      if (name.substr(a + 1, b - a - 1) != "16384") continue;
      const auto big = entries_.find(name.substr(0, a) + "/65536" + name.substr(b));
      if (big == entries_.end()) continue;
      if (!header) std::printf("\ntime exponent log(t(65536) / t(16384)) / log 4 (exact attention: 2)\n");
      header = true;
      std::printf("%-36s %6.2f\n", (name.substr(0, a) + name.substr(b)).c_str(),
                  std::log(big->second.seconds / e.seconds) / std::log(4.0));
    }
  }

 private:
  struct Entry {
    double seconds = 0;
    std::map<std::string, double> counters;
  };
  std::map<std::string, Entry> entries_;
};

template <typename F>
void add(const std::string& name, F f) {
  benchmark::RegisterBenchmark(name.c_str(), f)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
}

void register_all() {
  const std::vector<Index> budgets = {64, 256, 1024, 4096};
  for (const Index n : {Index(4096), Index(16384), Index(65536)}) {
    if (n > g_max_n) continue;
    for (const std::string w : kWorkloads) {
      if (!g_workload.empty() && g_workload != w) continue;
      const std::string base = w + "/" + std::to_string(n) + "/";
      add(base + "flash", [=](benchmark::State& s) { run_flash(s, w, n); });
      for (const double eps : {1e-1, 1e-2, 1e-3}) {
        ApproxOptions o;
        o.eps = eps;
        char label[32];
        std::snprintf(label, sizeof label, "certified_eps%.0e", eps);
        add(base + label, [=](benchmark::State& s) { run_approx(s, w, n, o); });
      }
      for (const Index b : budgets) {
        ApproxOptions o;
        o.budget = b;
        add(base + "budgeted_B" + std::to_string(b), [=](benchmark::State& s) { run_approx(s, w, n, o); });
      }
      if (w != "llm") continue;
      for (const Index b : budgets) {
        ApproxOptions o;
        o.budget = b;
        o.estimator = ApproxEstimator::monopole;
        add(base + "monopole_B" + std::to_string(b), [=](benchmark::State& s) { run_approx(s, w, n, o); });
        add(base + "topk_k" + std::to_string(b + 256),
            [=](benchmark::State& s) { run_topk(s, w, n, b + 256); });
      }
    }
  }
}

/// Removes the flags of this binary from argv (Google Benchmark rejects them).
void parse_flags(int& argc, char** argv) {
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--max-n=", 8) == 0) {
      g_max_n = std::atol(argv[i] + 8);
    } else if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      g_threads = std::atoi(argv[i] + 10);
    } else if (std::strncmp(argv[i], "--workload=", 11) == 0) {
      g_workload = argv[i] + 11;
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
}

}  // namespace
}  // namespace attnkit::bench

int main(int argc, char** argv) {
  attnkit::bench::parse_flags(argc, argv);
  attnkit::bench::register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  attnkit::bench::Reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print();
  benchmark::Shutdown();
  return 0;
}
