// Key-dimension pruning (attnkit/prune): speed and quality.
//
// Speed (Google Benchmark; the default mode). What a prompt's pruning costs --
// statistics, weights, selection, compensation fit and building the
// PrunedKeyCache -- for D = 128 from w = 32 window queries over n = 32768
// prompt keys (float, LLM-like), next to exact attention passes over the same
// keys measured in the same run. "One exact attention pass over those keys"
// is taken as the causal prefill: all n queries attending to their prefix of
// the n keys (the pass that produces the cache being pruned). The window-only
// pass (just the 32 window queries over the n keys) is reported as well, as
// the small reference point it is. A table of median-time ratios is printed
// after the benchmarks.
//
//   prune_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//   prune_bench --speed-n=4096 ...            a quick run on fewer keys
//
// Quality (deterministic, no repetition needed): the evaluation protocol of
// docs/pruning.md on every synthetic workload, D in {64, 128}, lambda in
// {0.25, 0.5, 0.75}, n = 4096, n0 = 3072, w = r = 32, every weights x
// selector x compensation (the exact optimum only where it is computable,
// D <= 24: not here), plus scale correction and rotary-pair rows. Markdown
// to stdout, CSV to a file.
//
//   prune_bench --quality [--csv=FILE] [--workload=iid|clustered|llm] [--d=64|128]
//
// The LLM-like aim (lambda = 0.5) over several heads (seeds 1..N):
//
//   prune_bench --heads=8 [--d=64|128] [--derotate]
//   prune_bench --gqa=8x2 [--d=64|128]   shared vs per-query-head selection
//
// --derotate undoes the generator's rotary encoding first (a diagnostic).
// --high-frequency-amplitude=X sets LlmLikeOptions::high_frequency_amplitude of
// every LLM-like head (default 0.1; 1 = every rotary pair with equal energy).
// It also applies to --quality and --optimum-gap.
//
// Distance to the optimum on 200 random D = 16 instances per family:
//
//   prune_bench --optimum-gap [--instances=200]
//
// --weight-keys=compressed computes the weights over the compressed keys only
// (WeightKeys::compressed) in --quality and --heads.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/prune/protocol.hpp"
#include "attnkit/workload/grouped.hpp"
#include "bench_util.hpp"

namespace attnkit::bench {
namespace {

constexpr Index kWindow = 32;
constexpr Index kRecent = 32;
Index speed_n = 32768;
constexpr Index kSpeedD = 128;
WeightKeys quality_weight_keys = WeightKeys::prompt;
bool heads_derotate = false;
// Options of every LLM-like head in --quality, --heads and --optimum-gap;
// --high-frequency-amplitude=1 gives the flat rotary energy profile.
LlmLikeOptions llm_options{};

// The quality workloads: cached_workload's seed, the LLM-like options above.
Workload<float> quality_workload(WorkloadKind kind, Index n, Index d) {
  if (kind == WorkloadKind::llm_like) return make_llm_like_workload<float>({n, n, d, d}, 2026, llm_options);
  return cached_workload<float>(kind, n, n, d);
}

// Undoes the LLM-like generator's rotary encoding (half layout, base 10000):
// row r of x is the token at position r. A diagnostic of what RoPE costs
// key-dimension pruning; the attention pattern changes with it.
void derotate(RowMatrix<float>& x) {
  const Index d = x.cols();
  const RotaryOptions rope{};
  for (Index p = 0; p < d / 2; ++p) {
    const double theta = rotary_frequency(p, d, rope.base);
    const auto [a, b] = rotary_pair_dims(p, d, rope.layout);
    for (Index r = 0; r < x.rows(); ++r) {
      const double angle = -static_cast<double>(r) * theta, c = std::cos(angle), s = std::sin(angle);
      const double xa = x(r, a), xb = x(r, b);
      x(r, a) = static_cast<float>(xa * c - xb * s);
      x(r, b) = static_cast<float>(xa * s + xb * c);
    }
  }
}

// ---------------------------------------------------------------------------
// Speed

struct NamedConfig {
  const char* name;
  PruneConfig config;
};

const NamedConfig speed_configs[] = {
    {"think", {}},
    {"gram/swap/none", {PruneWeights::gram, PruneSelector::swap, PruneCompensation::none, {}, false}},
    {"centered/swap/mean", {PruneWeights::centered, PruneSelector::swap, PruneCompensation::mean, {}, false}},
    {"gram/swap/regression",
     {PruneWeights::gram, PruneSelector::swap, PruneCompensation::regression, {}, false}},
    {"gram/residual/regression",
     {PruneWeights::gram, PruneSelector::residual, PruneCompensation::regression, {}, false}},
    {"attention/swap/regression",
     {PruneWeights::attention, PruneSelector::swap, PruneCompensation::regression, {}, false}},
};

const Workload<float>& speed_workload() {
  return cached_workload<float>(WorkloadKind::llm_like, speed_n, speed_n, kSpeedD);
}

// The exact passes the pruning cost is compared with. Each computes the causal
// prefill of all n tokens (queries over their prefix of the keys). To add a
// kernel, add one line to exact_passes.
RowMatrix<float> prefill_reference(const Workload<float>& w) {
  return reference_attention(w.q, w.k, w.v, {Mask::causal(), {}}).output;
}

// materialized.hpp's materialized_attention, applied to blocks of 1024 queries with
// the keys of their prefix (it puts the queries at the end of the keys), so the
// n x n score matrix never exists at once (4 GB at n = 32768).
RowMatrix<float> prefill_materialized(const Workload<float>& w) {
  constexpr Index block = 1024;
  const Index n = w.q.rows();
  RowMatrix<float> out(n, w.v.cols());
  for (Index r0 = 0; r0 < n; r0 += block) {
    const Index rows = std::min(block, n - r0);
    const RowMatrix<float> q = w.q.middleRows(r0, rows);
    const RowMatrix<float> k = w.k.topRows(r0 + rows), v = w.v.topRows(r0 + rows);
    out.middleRows(r0, rows) = materialized_attention(q, k, v, mask_options(true)).output;
  }
  return out;
}

// The fused exact kernel. This binary is built without OpenMP, so it runs on
// one thread, like prune_prompt: the comparison is one core against one core.
RowMatrix<float> prefill_flash(const Workload<float>& w) {
  return flash_attention(w.q, w.k, w.v, {Mask::causal(), {}}).output;
}

struct ExactPass {
  const char* name;
  RowMatrix<float> (*run)(const Workload<float>&);
};
const ExactPass exact_passes[] = {
    {"reference", &prefill_reference},
    {"materialized", &prefill_materialized},
    {"flash", &prefill_flash},
};

void register_speed_benchmarks() {
  for (const NamedConfig& c : speed_configs) {
    const PruneConfig config = c.config;
    benchmark::RegisterBenchmark((std::string("BM_prune_prompt/") + c.name).c_str(),
                                 [config](benchmark::State& state) {
                                   const Workload<float>& w = speed_workload();
                                   const Index n = w.q.rows();
                                   PruneOptions o;
                                   o.config = config;
                                   o.recent = kRecent;
                                   for (auto _ : state) {
                                     auto p = prune_prompt(w.q.middleRows(n - kWindow, kWindow), w.k, o);
                                     benchmark::DoNotOptimize(p.cache.compressed_keys().data());
                                     benchmark::ClobberMemory();
                                   }
                                 })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  for (const PruneWeights kind : {PruneWeights::gram, PruneWeights::centered, PruneWeights::attention}) {
    benchmark::RegisterBenchmark((std::string("BM_weights/") + to_string(kind)).c_str(),
                                 [kind](benchmark::State& state) {
                                   const Workload<float>& w = speed_workload();
                                   const auto qw = w.q.bottomRows(kWindow);
                                   for (auto _ : state) {
                                     const RowMatrix<double> m =
                                         kind == PruneWeights::gram       ? gram_weights(qw, w.k)
                                         : kind == PruneWeights::centered ? centered_weights(qw, w.k)
                                                                          : attention_weights(qw, w.k);
                                     benchmark::DoNotOptimize(m.data());
                                     benchmark::ClobberMemory();
                                   }
                                 })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  for (const ExactPass& p : exact_passes) {
    const auto run = p.run;
    benchmark::RegisterBenchmark(
        (std::string("BM_exact_prefill/") + p.name).c_str(),
        [run](benchmark::State& state) {
          const Workload<float>& w = speed_workload();
          for (auto _ : state) {
            const RowMatrix<float> o = run(w);
            benchmark::DoNotOptimize(o.data());
            benchmark::ClobberMemory();
          }
          set_gflops(state, attention_flops(w.q.rows(), w.k.rows(), kSpeedD, kSpeedD, true));
        })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark(
      "BM_exact_window/reference",
      [](benchmark::State& state) {
        const Workload<float>& w = speed_workload();
        for (auto _ : state) {
          const auto r = reference_attention(w.q.bottomRows(kWindow), w.k, w.v, {Mask::causal(), {}});
          benchmark::DoNotOptimize(r.output.data());
          benchmark::ClobberMemory();
        }
      })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

// Console output as usual, plus the median (or single) real time of each
// benchmark for the ratio table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  RatioReporter() : ConsoleReporter(OO_None) {}
  void ReportRuns(const std::vector<Run>& reports) override {
    for (const Run& r : reports) {
      if (r.error_occurred) continue;
      const std::string name = r.run_name.function_name;
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name == "median")
        median_ms[name] = r.GetAdjustedRealTime();
      else if (r.run_type == Run::RT_Iteration)
        single_ms[name].push_back(r.GetAdjustedRealTime());
    }
    ConsoleReporter::ReportRuns(reports);
  }
  double time_ms(const std::string& name) const {
    if (auto it = median_ms.find(name); it != median_ms.end()) return it->second;
    auto it = single_ms.find(name);
    if (it == single_ms.end() || it->second.empty()) return -1;
    std::vector<double> v = it->second;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }

 private:
  std::map<std::string, double> median_ms;
  std::map<std::string, std::vector<double>> single_ms;
};

void print_ratios(const RatioReporter& rep) {
  std::printf(
      "\nPruning a prompt (D = %ld, w = %ld window queries, n = %ld keys, r = %ld, lambda = 0.5, float)\n",
      static_cast<long>(kSpeedD), static_cast<long>(kWindow), static_cast<long>(speed_n),
      static_cast<long>(kRecent));
  std::printf("against exact passes over the same keys, median real times of this run:\n\n");
  std::printf("| pruning | ms |");
  for (const ExactPass& p : exact_passes)
    std::printf(" / %s prefill |", p.name);
  std::printf(" / reference window |\n|---|---:|");
  for (std::size_t i = 0; i < std::size(exact_passes); ++i)
    std::printf("---:|");
  std::printf("---:|\n");
  const auto row = [&](const std::string& label, double ms) {
    std::printf("| %s | %.3g |", label.c_str(), ms);
    for (const ExactPass& p : exact_passes) {
      const double e = rep.time_ms(std::string("BM_exact_prefill/") + p.name);
      if (e > 0)
        std::printf(" %.3g |", ms / e);
      else
        std::printf(" - |");
    }
    const double win = rep.time_ms("BM_exact_window/reference");
    if (win > 0)
      std::printf(" %.3g |\n", ms / win);
    else
      std::printf(" - |\n");
  };
  for (const NamedConfig& c : speed_configs) {
    const double ms = rep.time_ms(std::string("BM_prune_prompt/") + c.name);
    if (ms > 0) row(std::string("prune_prompt ") + c.name, ms);
  }
  for (const char* w : {"gram", "centered", "attention"}) {
    const double ms = rep.time_ms(std::string("BM_weights/") + w);
    if (ms > 0) row(std::string("weights only: ") + w, ms);
  }
  std::printf("\nexact passes:");
  for (const ExactPass& p : exact_passes)
    std::printf(" %s prefill %.4g ms;", p.name, rep.time_ms(std::string("BM_exact_prefill/") + p.name));
  std::printf(" reference window (w queries) %.4g ms\n", rep.time_ms("BM_exact_window/reference"));
}

// ---------------------------------------------------------------------------
// Quality

struct QualityRow {
  WorkloadKind workload;
  Index d;
  double ratio;
  PruneConfig config;
  Index kept;
  double objective, objective_total, logit_rmse, output_error;
};

std::vector<PruneConfig> quality_configs() {
  std::vector<PruneConfig> out;
  for (const PruneWeights w : {PruneWeights::gram, PruneWeights::centered, PruneWeights::attention})
    for (const PruneSelector s :
         {PruneSelector::topk, PruneSelector::greedy_remove, PruneSelector::greedy_remain,
          PruneSelector::greedy_remove_literal, PruneSelector::greedy_remain_literal, PruneSelector::swap,
          PruneSelector::residual})
      for (const PruneCompensation c :
           {PruneCompensation::none, PruneCompensation::mean, PruneCompensation::regression})
        out.push_back({w, s, c, {}, false});
  // Scale correction and rotary pairs (the LLM-like workload uses the half layout).
  out.push_back({PruneWeights::gram, PruneSelector::topk, PruneCompensation::none, {}, true});
  out.push_back({PruneWeights::gram, PruneSelector::swap, PruneCompensation::regression, {}, true});
  out.push_back(
      {PruneWeights::gram, PruneSelector::topk, PruneCompensation::none, RotaryLayout::half, false});
  out.push_back(
      {PruneWeights::gram, PruneSelector::swap, PruneCompensation::regression, RotaryLayout::half, false});
  out.push_back({PruneWeights::gram, PruneSelector::residual, PruneCompensation::regression,
                 RotaryLayout::half, false});
  return out;
}

const double quality_ratios[] = {0.25, 0.5, 0.75};

std::string short_name(const PruneConfig& c) {
  std::string s =
      std::string(to_string(c.weights)) + " | " + to_string(c.selector) + " | " + to_string(c.compensation);
  if (c.rope_pairs) s += std::string(" +rope-") + to_string(*c.rope_pairs);
  if (c.scale_correction) s += " +scale";
  return s;
}

void run_quality(const std::vector<WorkloadKind>& kinds, const std::vector<Index>& dims,
                 const char* csv_path) {
  constexpr Index n = 4096, n0 = 3072;
  const std::vector<PruneConfig> configs = quality_configs();
  std::vector<QualityRow> rows;
  for (const WorkloadKind kind : kinds)
    for (const Index d : dims) {
      const Workload<float> w = quality_workload(kind, n, d);
      PruneProtocolOptions o;
      o.prompt = n0;
      o.window = kWindow;
      o.prune.recent = kRecent;
      o.prune.weight_keys = quality_weight_keys;
      const RowMatrix<float> exact = protocol_exact_outputs(w.q, w.k, w.v, o);
      for (const double ratio : quality_ratios)
        for (const PruneConfig& c : configs) {
          o.prune.ratio = ratio;
          o.prune.config = c;
          const auto r = run_prune_protocol(w.q, w.k, w.v, o, exact);
          rows.push_back({kind, d, ratio, c, r.selection.kept_count(), r.objective, r.objective_total,
                          r.logit_rmse, r.output_error});
        }
      std::fprintf(stderr, "quality: %s D = %ld done\n", to_string(kind), static_cast<long>(d));
    }

  if (csv_path) {
    std::ofstream csv(csv_path);
    csv << "workload,d,lambda,kept,weights,selector,compensation,rope_pairs,scale_correction,objective,"
           "objective_total,objective_share,logit_rmse,output_error\n";
    char buf[512];
    for (const QualityRow& r : rows) {
      std::snprintf(
          buf, sizeof buf, "%s,%ld,%.2f,%ld,%s,%s,%s,%s,%d,%.9g,%.9g,%.6g,%.6g,%.6g\n", to_string(r.workload),
          static_cast<long>(r.d), r.ratio, static_cast<long>(r.kept), to_string(r.config.weights),
          to_string(r.config.selector), to_string(r.config.compensation),
          r.config.rope_pairs ? to_string(*r.config.rope_pairs) : "", r.config.scale_correction ? 1 : 0,
          r.objective, r.objective_total, r.objective / r.objective_total, r.logit_rmse, r.output_error);
      csv << buf;
    }
  }

  const auto find = [&](WorkloadKind k, Index d, double ratio, const PruneConfig& c) -> const QualityRow* {
    for (const QualityRow& r : rows)
      if (r.workload == k && r.d == d && r.ratio == ratio && r.config == c) return &r;
    return nullptr;
  };

  // Summary: ThinK against the best configuration and a few named ones.
  const PruneConfig think{};
  const PruneConfig graph_swap{PruneWeights::gram, PruneSelector::swap, PruneCompensation::none, {}, false};
  const PruneConfig graph_swap_mean{
      PruneWeights::centered, PruneSelector::swap, PruneCompensation::mean, {}, false};
  const PruneConfig think_reg{
      PruneWeights::gram, PruneSelector::topk, PruneCompensation::regression, {}, false};
  const PruneConfig graph_swap_reg{
      PruneWeights::gram, PruneSelector::swap, PruneCompensation::regression, {}, false};
  std::printf("### Summary: output error relative to ThinK\n\n");
  std::printf(
      "| workload | D | lambda | ThinK output error | gram/swap | centered/swap/mean | ThinK sel. + "
      "regression | "
      "gram/swap/regression | best configuration | best | best / ThinK |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
  for (const WorkloadKind kind : kinds)
    for (const Index d : dims)
      for (const double ratio : quality_ratios) {
        const QualityRow* t = find(kind, d, ratio, think);
        const QualityRow* best = t;
        for (const QualityRow& r : rows)
          if (r.workload == kind && r.d == d && r.ratio == ratio && r.output_error < best->output_error)
            best = &r;
        const auto rel = [&](const PruneConfig& c) {
          return find(kind, d, ratio, c)->output_error / t->output_error;
        };
        std::printf("| %s | %ld | %.2f | %.4f | %.3f | %.3f | %.3f | %.3f | %s | %.4f | %.3f |\n",
                    to_string(kind), static_cast<long>(d), ratio, t->output_error, rel(graph_swap),
                    rel(graph_swap_mean), rel(think_reg), rel(graph_swap_reg),
                    to_string(best->config).c_str(), best->output_error,
                    best->output_error / t->output_error);
      }

  // Full tables, one per workload and D.
  for (const WorkloadKind kind : kinds)
    for (const Index d : dims) {
      std::printf("\n### %s, D = %ld (n = %ld, n0 = %ld, w = r = %ld)\n\n", to_string(kind),
                  static_cast<long>(d), static_cast<long>(n), static_cast<long>(n0),
                  static_cast<long>(kWindow));
      std::printf(
          "objective = F(B) / sum W of the row's own weights; logit = RMS scaled-logit error on the "
          "compressed keys; output = relative Frobenius output error of the judged queries.\n\n");
      std::printf("| weights | selector | compensation |");
      for (const double ratio : quality_ratios)
        std::printf(" l=%.2f objective | logit | output |", ratio);
      std::printf("\n|---|---|---|");
      for (std::size_t i = 0; i < std::size(quality_ratios); ++i)
        std::printf("---:|---:|---:|");
      std::printf("\n");
      for (const PruneConfig& c : configs) {
        std::printf("| %s |", short_name(c).c_str());
        for (const double ratio : quality_ratios) {
          const QualityRow* r = find(kind, d, ratio, c);
          std::printf(" %.4f | %.3f | %.4f |", r->objective / r->objective_total, r->logit_rmse,
                      r->output_error);
        }
        std::printf("\n");
      }
    }
}

// ---------------------------------------------------------------------------
// The LLM-like aim over several heads: lambda = 0.5, output error relative to
// ThinK per head (seeds 1..heads), median and worst over heads per
// configuration, and the per-head best.

void run_heads(int heads, const std::vector<Index>& dims) {
  constexpr Index n = 4096, n0 = 3072;
  const std::vector<PruneConfig> configs = quality_configs();
  for (const Index d : dims) {
    std::vector<std::vector<double>> ratio(configs.size());
    std::vector<double> think_error, best_ratio;
    for (int h = 1; h <= heads; ++h) {
      Workload<float> w =
          make_llm_like_workload<float>({n, n, d, d}, static_cast<std::uint64_t>(h), llm_options);
      if (heads_derotate) {
        derotate(w.q);
        derotate(w.k);
      }
      PruneProtocolOptions o;
      o.prompt = n0;
      o.window = kWindow;
      o.prune.recent = kRecent;
      o.prune.weight_keys = quality_weight_keys;
      o.prune.ratio = 0.5;
      const RowMatrix<float> exact = protocol_exact_outputs(w.q, w.k, w.v, o);
      std::vector<double> err(configs.size());
      for (std::size_t c = 0; c < configs.size(); ++c) {
        o.prune.config = configs[c];
        err[c] = run_prune_protocol(w.q, w.k, w.v, o, exact).output_error;
      }
      const double think = err[0];  // configs[0] is gram/topk/none
      think_error.push_back(think);
      double best = 1e300;
      for (std::size_t c = 0; c < configs.size(); ++c) {
        ratio[c].push_back(err[c] / think);
        best = std::min(best, err[c] / think);
      }
      best_ratio.push_back(best);
      std::fprintf(stderr, "heads: D = %ld head %d done\n", static_cast<long>(d), h);
    }
    std::vector<std::size_t> order(configs.size());
    for (std::size_t c = 0; c < configs.size(); ++c)
      order[c] = c;
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return median(ratio[a]) < median(ratio[b]); });
    std::printf("\n### LLM-like%s, D = %ld, lambda = 0.5, %d heads (seeds 1..%d): output error / ThinK's\n\n",
                heads_derotate ? " with RoPE undone" : "", static_cast<long>(d), heads, heads);
    if (quality_weight_keys == WeightKeys::compressed)
      std::printf("Weights over the compressed keys only (ThinK's row too).\n\n");
    std::printf(
        "ThinK's output error: median %.4f over heads. Per-head best configuration (chosen after the "
        "fact): median ratio %.3f, worst %.3f.\n\n",
        median(think_error), median(best_ratio), *std::max_element(best_ratio.begin(), best_ratio.end()));
    std::printf("| configuration | median ratio | worst ratio | heads at <= 0.5 |\n|---|---:|---:|---:|\n");
    for (std::size_t t = 0; t < order.size(); ++t) {
      const std::size_t c = order[t];
      const bool named =
          configs[c] == PruneConfig{} ||
          configs[c] ==
              PruneConfig{PruneWeights::gram, PruneSelector::swap, PruneCompensation::none, {}, false} ||
          configs[c] ==
              PruneConfig{PruneWeights::centered, PruneSelector::swap, PruneCompensation::mean, {}, false} ||
          configs[c] ==
              PruneConfig{
                  PruneWeights::gram, PruneSelector::topk, PruneCompensation::regression, {}, false} ||
          configs[c] ==
              PruneConfig{PruneWeights::gram, PruneSelector::swap, PruneCompensation::regression, {}, false};
      if (t >= 10 && !named) continue;
      int good = 0;
      for (const double x : ratio[c])
        good += x <= 0.5 ? 1 : 0;
      std::printf("| %s | %.3f | %.3f | %d / %d |\n", to_string(configs[c]).c_str(), median(ratio[c]),
                  *std::max_element(ratio[c].begin(), ratio[c].end()), good, heads);
    }
  }
}

// ---------------------------------------------------------------------------
// Grouped-query attention: one selection per key/value head (shared by its
// query heads) against one per query head, on make_grouped_workload's LLM-like
// heads (query heads of a group turned pair by pair, workload/grouped.hpp).
// Per configuration: the median over query heads of the output error, and the
// key bytes of the prompt caches (per query head: one pruned cache per query
// head; shared: one per key/value head).

void run_gqa(const std::string& spec, const std::vector<Index>& dims) {
  const auto x = spec.find('x');
  const Index q_heads = std::stol(spec.substr(0, x)), kv_heads = std::stol(spec.substr(x + 1));
  constexpr Index n = 4096, n0 = 3072;
  const std::vector<PruneConfig> configs = {
      PruneConfig{},
      PruneConfig{PruneWeights::gram, PruneSelector::swap, PruneCompensation::regression, {}, false},
      PruneConfig{PruneWeights::attention,
                  PruneSelector::greedy_remove_literal,
                  PruneCompensation::regression,
                  {},
                  false}};
  for (const Index d : dims) {
    const auto g = make_grouped_workload<float>(WorkloadKind::llm_like, {n, n, d, d}, q_heads, kv_heads, 1);
    const Index group = q_heads / kv_heads;
    PruneProtocolOptions o;
    o.prompt = n0;
    o.window = kWindow;
    o.prune.recent = kRecent;
    o.prune.ratio = 0.5;
    std::printf(
        "\n### Grouped-query LLM-like heads, %ld query heads over %ld key/value heads, D = %ld, lambda = "
        "0.5\n\n",
        static_cast<long>(q_heads), static_cast<long>(kv_heads), static_cast<long>(d));
    std::printf(
        "| configuration | per-query-head selection: median error | shared selection: median error | "
        "shared / per-head (median of ratios) | prompt key bytes per-head | shared |\n"
        "|---|---:|---:|---:|---:|---:|\n");
    for (const PruneConfig& c : configs) {
      o.prune.config = c;
      std::vector<double> per_head, shared, ratio;
      std::size_t bytes_per_head = 0, bytes_shared = 0;
      for (Index kv = 0; kv < kv_heads; ++kv) {
        const RowMatrix<float> k = g.stacked.k.middleRows(kv * n, n), v = g.stacked.v.middleRows(kv * n, n);
        const RowMatrix<float> qg = g.stacked.q.middleRows(kv * group * n, group * n);
        const auto sh = run_prune_protocol_shared(qg, group, k, v, o);
        for (Index h = 0; h < group; ++h) {
          const RowMatrix<float> q = qg.middleRows(h * n, n);
          const auto one = run_prune_protocol(q, k, v, o, sh[static_cast<std::size_t>(h)].exact);
          per_head.push_back(one.output_error);
          shared.push_back(sh[static_cast<std::size_t>(h)].output_error);
          ratio.push_back(sh[static_cast<std::size_t>(h)].output_error / one.output_error);
          bytes_per_head += one.memory.total_bytes();
        }
        bytes_shared += sh[0].memory.total_bytes();
        std::fprintf(stderr, "gqa: D = %ld %s kv head %ld done\n", static_cast<long>(d), to_string(c).c_str(),
                     static_cast<long>(kv));
      }
      std::printf("| %s | %.4f | %.4f | %.3f | %zu | %zu |\n", to_string(c).c_str(), median(per_head),
                  median(shared), median(ratio), bytes_per_head, bytes_shared);
    }
  }
}

// ---------------------------------------------------------------------------
// Distance to the optimum, D = 16

// Correlated Gaussian rows: column scales log-uniform in [0.2, 5], a random
// mixing and a common mean, so edges matter.
RowMatrix<double> correlated(detail::Random& rng, Index rows, Index d) {
  RowMatrix<double> mix = rng.normal_matrix(d, d, 1.0);
  for (Index c = 0; c < d; ++c)
    mix.col(c) *= 0.2 * std::pow(25.0, rng.uniform());
  mix += 2.0 * RowMatrix<double>::Identity(d, d);
  const Eigen::RowVectorXd mean = rng.normal_matrix(1, d, 1.0);
  RowMatrix<double> x = rng.normal_matrix(rows, d, 1.0) * mix;
  x.rowwise() += mean;
  return x;
}

void run_optimum_gap(int instances) {
  constexpr Index d = 16;
  struct Sel {
    const char* name;
    PruneSelector selector;
  };
  const Sel sels[] = {{"topk", PruneSelector::topk},
                      {"greedy-remove", PruneSelector::greedy_remove},
                      {"greedy-remain", PruneSelector::greedy_remain},
                      {"greedy-remove-literal", PruneSelector::greedy_remove_literal},
                      {"greedy-remain-literal", PruneSelector::greedy_remain_literal},
                      {"swap", PruneSelector::swap},
                      {"residual", PruneSelector::residual}};
  std::printf(
      "### Distance to the optimum: F(selector) / F(optimal), %d instances per family, D = 16, gram "
      "weights\n\n",
      instances);
  std::printf(
      "| family | lambda | selector | mean ratio | worst ratio | optimal found "
      "|\n|---|---:|---|---:|---:|---:|\n");
  for (const char* family : {"correlated", "llm"}) {
    for (const double ratio : quality_ratios) {
      const Index kept = kept_dimension_count(d, ratio);
      std::vector<std::vector<double>> r(std::size(sels));
      for (int i = 0; i < instances; ++i) {
        RowMatrix<double> q, k;
        if (std::strcmp(family, "correlated") == 0) {
          detail::Random rng(static_cast<std::uint64_t>(1000 + i));
          q = correlated(rng, kWindow, d);
          k = correlated(rng, 256, d);
        } else {
          const Workload<double> w = make_llm_like_workload<double>(
              {512, 512, d, d}, static_cast<std::uint64_t>(1000 + i), llm_options);
          q = w.q.bottomRows(kWindow);
          k = w.k;
        }
        const RowMatrix<double> g = query_gram(q);
        const KeyStatistics st = key_statistics(k);
        const RowMatrix<double> wm = gram_weights_from_statistics(g, st);
        const double f_opt = selection_objective(wm, select_optimal(wm, kept));
        for (std::size_t s = 0; s < std::size(sels); ++s) {
          PruneConfig c;
          c.selector = sels[s].selector;
          const double f = selection_objective(wm, choose_dimensions(wm, g, st, kept, c));
          r[s].push_back(f / f_opt);
        }
      }
      for (std::size_t s = 0; s < std::size(sels); ++s) {
        double mean = 0, worst = 0;
        int hits = 0;
        for (const double x : r[s]) {
          mean += x;
          worst = std::max(worst, x);
          hits += x <= 1.0 + 1e-12 ? 1 : 0;
        }
        mean /= static_cast<double>(r[s].size());
        std::printf("| %s | %.2f | %s | %.4f | %.4f | %d / %d |\n", family, ratio, sels[s].name, mean, worst,
                    hits, instances);
      }
    }
  }
}

}  // namespace
}  // namespace attnkit::bench

int main(int argc, char** argv) {
  using namespace attnkit;
  using namespace attnkit::bench;
  bool quality = false, gap = false;
  int heads = 0;
  std::string gqa;
  const char* csv = nullptr;
  int instances = 200;
  std::vector<WorkloadKind> kinds = {WorkloadKind::iid, WorkloadKind::clustered, WorkloadKind::llm_like};
  std::vector<Index> dims = {64, 128};
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quality") {
      quality = true;
    } else if (a == "--optimum-gap") {
      gap = true;
    } else if (a.rfind("--csv=", 0) == 0) {
      csv = argv[i] + 6;
    } else if (a.rfind("--heads=", 0) == 0) {
      heads = std::stoi(a.substr(8));
    } else if (a.rfind("--gqa=", 0) == 0) {
      gqa = a.substr(6);
    } else if (a == "--derotate") {
      heads_derotate = true;
    } else if (a.rfind("--high-frequency-amplitude=", 0) == 0) {
      llm_options.high_frequency_amplitude = std::stod(a.substr(27));
    } else if (a == "--weight-keys=compressed") {
      quality_weight_keys = WeightKeys::compressed;
    } else if (a.rfind("--instances=", 0) == 0) {
      instances = std::stoi(a.substr(12));
    } else if (a.rfind("--workload=", 0) == 0) {
      const auto k = parse_workload_kind(a.substr(11));
      if (!k) {
        std::fprintf(stderr, "unknown workload %s (iid|clustered|llm)\n", a.c_str() + 11);
        return 2;
      }
      kinds = {*k};
    } else if (a.rfind("--d=", 0) == 0) {
      dims = {static_cast<Index>(std::stol(a.substr(4)))};
    } else if (a.rfind("--speed-n=", 0) == 0) {
      speed_n = static_cast<Index>(std::stol(a.substr(10)));
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (quality || gap || heads > 0 || !gqa.empty()) {
    if (!gqa.empty()) run_gqa(gqa, dims);
    if (gap) run_optimum_gap(instances);
    if (heads > 0) run_heads(heads, dims);
    if (quality) run_quality(kinds, dims, csv);
    return 0;
  }
  int bargc = static_cast<int>(rest.size());
  benchmark::Initialize(&bargc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(bargc, rest.data())) return 1;
  register_speed_benchmarks();
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  print_ratios(reporter);
  benchmark::Shutdown();
  return 0;
}
