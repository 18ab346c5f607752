#pragma once

// attnkit-eval's command line (CLI11): subcommands attention, prune, compare;
// exit codes 0 (success), 2 (bad arguments or input: one line naming the flag
// or file), 1 (internal error). docs/eval.md documents every flag.

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "attnkit/version.hpp"
#include "eval/compare.hpp"
#include "eval/inputs.hpp"
#include "eval/memory.hpp"
#include "eval/methods.hpp"
#include "eval/prune_options.hpp"
#include "eval/run.hpp"

extern char** environ;

namespace attnkit::eval {

namespace detail {

/// Runs argv[0] (searched in PATH) with argv; stdout and stderr go to
/// /dev/null when `quiet`. \returns the exit status, or -1 if it could not run.
inline int run_process(const std::vector<std::string>& args, bool quiet) {
  std::vector<char*> argv;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (quiet) {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// Directory of the running executable ("" if unknown).
inline std::filesystem::path executable_dir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : exe.parent_path();
}

}  // namespace detail

/// The Python interpreter and the plot script `--plot` runs.
struct PlotTools {
  std::string python;
  std::string script;
};

/// Flags shared by every subcommand that reads Q, K, V.
struct CommonFlags {
  InputSpec spec;
  MaskFlags mask;
  bool quiet = false;
  std::vector<CLI::Option*> builtin_options;  // --workload --n --d --heads --seed
  CLI::Option* offset = nullptr;
  CLI::Option* scale = nullptr;
};

inline void add_common_flags(CLI::App* app, CommonFlags& f) {
  app->add_option("--q", f.spec.q_path, "queries .npy: (n_q, d) or (heads, n_q, d)");
  app->add_option("--k", f.spec.k_path, "keys .npy: (n_k, d) or (kv_heads, n_k, d)");
  app->add_option("--v", f.spec.v_path, "values .npy: (n_k, d_v) or (kv_heads, n_k, d_v)");
  app->add_option("--mask", f.mask.mask, "none | causal | strict (default none)")
      ->check(CLI::IsMember({"none", "causal", "strict"}));
  f.offset =
      app->add_option("--offset", f.mask.offset, "position of query 0 in the keys (default n_k - n_q)");
  f.scale = app->add_option("--scale", f.mask.scale, "logit scale (default 1/sqrt(d))");
  app->add_option("--dtype", f.spec.dtype,
                  "float32 | float64: compute and write in this type (default: the inputs')")
      ->check(CLI::IsMember({"float32", "float64"}));
  f.builtin_options = {
      app->add_option("--workload", f.spec.workload, "built-in workload: llm | iid | clustered (default llm)")
          ->check(CLI::IsMember({"llm", "iid", "clustered"})),
      app->add_option("--n", f.spec.n, "built-in workload: tokens (default 4096)"),
      app->add_option("--d", f.spec.d, "built-in workload: head width (default 128)"),
      app->add_option("--heads", f.spec.heads, "built-in workload: heads (default 8)"),
      app->add_option("--seed", f.spec.seed,
                      "built-in workload: seed of head 0; head h uses seed + h (default 1)"),
  };
  app->add_flag("--quiet", f.quiet, "no progress lines on stderr");
}

/// Resolves the problem shape from the common flags.
inline ProblemShape resolve_shape(CommonFlags& f) {
  f.mask.has_offset = f.offset->count() > 0;
  f.mask.has_scale = f.scale->count() > 0;
  if (f.spec.from_files()) {
    for (const CLI::Option* o : f.builtin_options)
      if (o->count() > 0)
        throw UsageError(o->get_name() +
                         " sets up the built-in workload; it cannot be combined with --q/--k/--v");
    return inspect_files(f.spec);
  }
  return builtin_shape(f.spec);
}

/// Splits "a,b, c" into names.
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (const char ch : s + ",") {
    if (ch == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (ch != ' ') {
      cur += ch;
    }
  }
  return out;
}

template <typename Scalar>
void attention_command(const Method& method, const MethodParams& params, CommonFlags& f,
                       const ProblemShape& shape, const AttentionOptions& options,
                       const std::string& out_path, const std::string& lse_path, std::ostream& err) {
  Progress progress(err, f.quiet);
  const Inputs<Scalar> in = load_inputs<Scalar>(f.spec, shape);
  const Stacked<Scalar> r = run_all_heads(method, in, options, params, progress);
  write_outputs(r, out_path, lse_path);
}

template <typename Scalar>
void compare_command(const Registry& registry, CommonFlags& f, const ProblemShape& shape,
                     const AttentionOptions& options, const CompareOptions& co, PeakMemoryProbe* probe,
                     const std::string& json_path, const std::string& csv_path, const std::string& plot_path,
                     const PlotTools& plot, std::ostream& out, std::ostream& err) {
  Progress progress(err, f.quiet);
  const Inputs<Scalar> in = load_inputs<Scalar>(f.spec, shape);
  const std::vector<CompareRow> rows = run_compare(registry, in, options, co, probe, progress);
  CompareContext c{f.spec, shape, f.mask, 0, co.repeats, probe ? probe->method() : nullptr};
  c.scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(shape.d)));
  print_table(out, rows, c);
  const std::string json = to_json(rows, c).dump(2) + "\n";
  if (!json_path.empty()) write_text("--json", json_path, json);
  if (!csv_path.empty()) write_text("--csv", csv_path, to_csv(rows));
  if (plot_path.empty()) return;
  // The plot script reads the JSON: the --json file, or a temporary copy.
  std::string source = json_path;
  std::string temp;
  if (source.empty()) {
    std::string pattern = (std::filesystem::temp_directory_path() / "attnkit-eval-XXXXXX").string();
    const int fd = ::mkstemp(pattern.data());
    if (fd < 0) throw std::runtime_error("cannot create a temporary file for the plot data");
    ::close(fd);
    temp = source = pattern;
    write_text("--plot", temp, json);
  }
  const int rc = detail::run_process({plot.python, plot.script, source, plot_path}, false);
  if (!temp.empty()) std::remove(temp.c_str());
  if (rc != 0)
    throw UsageError("--plot '" + plot_path + "': the plot script failed (exit " + std::to_string(rc) + ")");
  out << "plot: " << plot_path << " (drawn by " << plot.script << ")\n";
}

/// The protocol's checks that depend on the shapes, made before any work and
/// reported against the flag: N0 <= n, W <= N0, D' >= 1, rotary pairs need an
/// even D, `optimal` enumerates at most 24 units.
/// \throws UsageError naming the flag.
inline void check_prune_flags(const PruneFlags& f, const PruneProtocolOptions& o, const ProblemShape& s) {
  const Index n = s.n_q, n0 = o.prompt.value_or(n);
  if (n0 > n)
    throw UsageError("--prompt " + f.prompt + ": the prompt length must be in [1, n] = [1, " +
                     std::to_string(n) + "]");
  if (o.window > n0)
    throw UsageError("--window " + f.window + ": longer than the prompt (N0 = " + std::to_string(n0) + ")");
  try {
    kept_dimension_count(s.d, o.prune.ratio);
  } catch (const std::invalid_argument&) {
    throw UsageError("--ratio " + f.ratio + ": keeps no key dimension of D = " + std::to_string(s.d));
  }
  const bool pairs = o.prune.config.rope_pairs.has_value();
  if (pairs && s.d % 2 != 0)
    throw UsageError("--rope-pairs " + f.rope_pairs + ": D = " + std::to_string(s.d) + " is odd");
  const Index units = pairs ? s.d / 2 : s.d;
  if (o.prune.config.selector == PruneSelector::optimal && units > max_optimal_groups)
    throw UsageError("--select optimal: enumerates at most " + std::to_string(max_optimal_groups) +
                     " units; D = " + std::to_string(s.d) + " has " + std::to_string(units));
}

/// `prune`: runs the protocol on every head (grouped-query heads choose their
/// dimensions per query head, over their shared key head), writes the kept
/// dimensions and the judged outputs, prints a table of the metrics.
template <typename Scalar>
void prune_command(CommonFlags& f, const ProblemShape& shape, PruneProtocolOptions po,
                   const std::string& dims_path, const std::string& out_path, std::ostream& out,
                   std::ostream& err) {
  Progress progress(err, f.quiet);
  const Inputs<Scalar> in = load_inputs<Scalar>(f.spec, shape);
  const Index heads = shape.q_heads;
  std::vector<std::int64_t> dims;
  Index kept = 0, judged = 0, first = 0;
  RowMatrix<Scalar> outputs;
  std::vector<double> errors;
  std::ostringstream table;
  table << "head  kept  output_error  logit_rmse  dropped_weight  key_bytes_before  key_bytes_after\n";
  for (Index h = 0; h < heads; ++h) {
    const Index g = shape.kv_head(h);
    const PruneProtocolResult<Scalar> r = run_prune_protocol(in.q.head(h), in.k.head(g), in.v.head(g), po);
    kept = r.selection.kept_count();
    judged = r.output.rows();
    first = r.first_judged;
    for (const Index c : r.selection.kept())
      dims.push_back(static_cast<std::int64_t>(c));
    if (outputs.size() == 0) outputs.resize(heads * judged, shape.d_v);
    outputs.middleRows(h * judged, judged) = r.output;
    errors.push_back(r.output_error);
    char line[200];
    std::snprintf(line, sizeof line, "%4ld  %4ld  %12.4g  %10.4g  %14.4g  %16zu  %15zu\n",
                  static_cast<long>(h), static_cast<long>(kept), r.output_error, r.logit_rmse,
                  r.objective_total > 0 ? r.objective / r.objective_total : 0.0, r.memory.unpruned_bytes,
                  r.memory.total_bytes());
    table << line;
    progress.step("prune", h + 1, heads);
  }
  std::sort(errors.begin(), errors.end());
  const std::size_t n = errors.size();
  const double median = n % 2 ? errors[n / 2] : 0.5 * (errors[n / 2 - 1] + errors[n / 2]);
  out << "prune " << to_string(po.prune.config) << ", ratio " << po.prune.ratio << ": keep " << kept << " of "
      << shape.d << " key dimensions; " << heads << " head(s), " << judged << " judged queries each (tokens "
      << first << ".." << first + judged - 1 << "), window " << po.window << ", recent " << po.prune.recent
      << "\n"
      << table.str() << "median output error " << median << "\n";
  write_array("--out-dims", dims_path,
              shape.three_d ? std::vector<Index>{heads, kept} : std::vector<Index>{kept}, dims.data(),
              dims.size());
  if (!out_path.empty())
    write_array(
        "--out", out_path,
        shape.three_d ? std::vector<Index>{heads, judged, shape.d_v} : std::vector<Index>{judged, shape.d_v},
        outputs.data(), static_cast<std::size_t>(outputs.size()));
}

/// attnkit-eval's main (defined in bench/eval/cli.cpp): parses argv, runs the
/// subcommand with `registry`'s methods, writes the table or messages to `out`
/// and `err`, and returns the exit code. `probe` may be null (peak bytes n/a).
int run_cli(int argc, const char* const* argv, const Registry& registry, PeakMemoryProbe* probe,
            std::ostream& out, std::ostream& err);

}  // namespace attnkit::eval
