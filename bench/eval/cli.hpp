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

/// Python: $ATTNKIT_PYTHON, else the interpreter found when attnkit was
/// configured (ATTNKIT_EVAL_DEFAULT_PYTHON), else python3 on PATH.
/// Script: $ATTNKIT_EVAL_PLOT_SCRIPT, else the installed copy next to the
/// executable (<bindir>/../share/attnkit/attnkit_eval_plot.py), else the
/// source tree's bench/attnkit_eval_plot.py.
inline PlotTools find_plot_tools() {
  PlotTools t;
  if (const char* p = std::getenv("ATTNKIT_PYTHON"); p && *p)
    t.python = p;
  else
    t.python = std::string(ATTNKIT_EVAL_DEFAULT_PYTHON).empty() ? "python3" : ATTNKIT_EVAL_DEFAULT_PYTHON;
  std::vector<std::filesystem::path> candidates;
  if (const char* s = std::getenv("ATTNKIT_EVAL_PLOT_SCRIPT"); s && *s) {
    t.script = s;
    return t;
  }
  const auto dir = detail::executable_dir();
  if (!dir.empty()) candidates.push_back(dir / ATTNKIT_EVAL_INSTALLED_SCRIPT);
  candidates.push_back(ATTNKIT_EVAL_SOURCE_SCRIPT);
  for (const auto& c : candidates) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(c, ec)) {
      t.script = c.string();
      break;
    }
  }
  return t;
}

/// Fails fast, before any work, when --plot cannot be honoured.
inline void check_plot_tools(const PlotTools& t) {
  if (t.script.empty())
    throw UsageError("--plot: the plot script attnkit_eval_plot.py was not found next to attnkit-eval (" +
                     std::string(ATTNKIT_EVAL_INSTALLED_SCRIPT) +
                     ") nor in the source tree; set ATTNKIT_EVAL_PLOT_SCRIPT to its path");
  const int rc = detail::run_process({t.python, "-c", "import matplotlib"}, true);
  if (rc == -1 || rc == 127)
    throw UsageError("--plot: cannot run Python '" + t.python +
                     "'; install python3 or set ATTNKIT_PYTHON to an interpreter");
  if (rc != 0)
    throw UsageError("--plot: matplotlib is not installed for '" + t.python +
                     "'; install it with 'sudo apt-get install python3-matplotlib' (Debian/Ubuntu) or "
                     "'pip install matplotlib', or set ATTNKIT_PYTHON to a Python that has it");
}

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
  out << "plot: " << plot_path << '\n';
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

/// attnkit-eval's main. `probe` may be null (peak bytes n/a).
inline int run_cli(int argc, const char* const* argv, const Registry& registry, PeakMemoryProbe* probe,
                   std::ostream& out, std::ostream& err) {
  CLI::App app{
      "attnkit-eval: run attnkit's attention methods on your own tensors (.npy) or a built-in workload",
      "attnkit-eval"};
  app.set_version_flag("--version", std::string(attnkit::version_string));
  app.require_subcommand(1);

  // attention
  CommonFlags af;
  std::string method_name, out_path, lse_path;
  std::map<std::string, std::string> method_values;  // method options by name
  std::map<std::string, CLI::Option*> method_flags;
  CLI::App* attention = app.add_subcommand("attention", "compute one method's output and write it as .npy");
  add_common_flags(attention, af);
  attention->add_option("--method", method_name, "method: " + registry.names())->required();
  attention->add_option("--out", out_path, "output .npy: (n_q, d_v) or (heads, n_q, d_v)")->required();
  attention->add_option("--lse", lse_path, "also write each row's log-sum-exp: (n_q) or (heads, n_q)");
  for (const Method& m : registry.methods())
    for (const MethodOption& o : m.options) {
      if (method_flags.count(o.name)) continue;
      if (attention->get_option_no_throw("--" + o.name))
        throw std::logic_error("method option --" + o.name + " of '" + m.name +
                               "' clashes with a built-in flag");
      method_flags[o.name] =
          attention->add_option("--" + o.name, method_values[o.name],
                                o.help + " (method " + m.name + ", default " + o.default_value + ")");
    }

  // prune: the protocol (docs/pruning.md) per head.
  CommonFlags pf;
  PruneFlags pr;
  std::string out_dims, prune_out;
  CLI::App* prune = app.add_subcommand(
      "prune", "choose the key dimensions to keep and judge them by the queries after the prompt");
  add_common_flags(prune, pf);
  prune->add_option("--ratio", pr.ratio, "share of the key dimensions to drop, in [0, 1)")->required();
  prune->add_option("--weights", pr.weights,
                    std::string("dimension weights: ") + prune_weights_names() + " (default gram)");
  prune->add_option("--select", pr.select,
                    std::string("selector: ") + prune_selector_names() + " (default topk)");
  prune->add_option("--compensation", pr.compensation,
                    std::string("compensation: ") + prune_compensation_names() + " (default none)");
  prune->add_option("--rope-pairs", pr.rope_pairs, "keep rotary pairs together: interleaved | half | none");
  prune->add_flag("--scale-correction", pr.scale_correction, "rescale kept dimensions by sqrt(D/D')");
  prune->add_option("--window", pr.window,
                    "W: the last prompt queries that choose the dimensions (default 32)");
  prune->add_option("--recent", pr.recent,
                    "R: the most recent prompt keys kept at full dimension (default 32)");
  prune->add_option("--prompt", pr.prompt,
                    "N0: prompt length; the queries after it are judged (default n: every query judged)");
  prune->add_option("--out-dims", out_dims, "kept dimensions .npy (int64): (D') or (heads, D')")->required();
  prune->add_option("--out", prune_out,
                    "outputs of the judged queries .npy: (n_j, d_v) or (heads, n_j, d_v)");

  // compare
  CommonFlags cf;
  CompareOptions co;
  std::string methods_list, json_path, csv_path, plot_path;
  CLI::App* compare = app.add_subcommand("compare", "run every method on the inputs: table, JSON, CSV, plot");
  add_common_flags(compare, cf);
  compare->add_option("--json", json_path, "write the results as JSON");
  compare->add_option("--csv", csv_path, "write the results as CSV");
  compare->add_option("--plot", plot_path, "draw error against speedup (PNG, needs matplotlib)");
  compare->add_option("--repeats", co.repeats, "timed runs per method (median; default 3)");
  compare->add_option("--methods", methods_list,
                      "comma-separated subset of: " + registry.names() + " (the reference always runs)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e, out, err);
    if (argc >= 2 && argv[1][0] != '-' && !attention->parsed() && !prune->parsed() && !compare->parsed()) {
      err << "attnkit-eval: unknown subcommand '" << argv[1] << "' (expected attention, prune or compare)\n";
      return 2;
    }
    err << "attnkit-eval: " << e.what() << " (see attnkit-eval --help)\n";
    return 2;
  }

  const char* command = attention->parsed() ? "attention" : (prune->parsed() ? "prune" : "compare");
  try {
    if (prune->parsed()) {
      PruneProtocolOptions po = parse_prune_protocol(pr);
      if (pf.mask.mask != "none" && pf.mask.mask != "causal")
        throw UsageError("--mask " + pf.mask.mask + ": prune judges the queries causally (the protocol)");
      check_writable("--out-dims", out_dims);
      check_writable("--out", prune_out);
      const ProblemShape shape = resolve_shape(pf);
      if (pf.mask.has_offset) throw UsageError("--offset: prune has no offset (one query per token, causal)");
      if (shape.n_q != shape.n_k)
        throw UsageError("prune needs one query per token: Q has " + std::to_string(shape.n_q) + " rows, K " +
                         std::to_string(shape.n_k));
      po.prune.scale = make_attention_options(pf.mask, shape).scale;  // validates --scale
      if (shape.dtype == NpyDtype::float32)
        prune_command<float>(pf, shape, po, out_dims, prune_out, out, err);
      else
        prune_command<double>(pf, shape, po, out_dims, prune_out, out, err);
      return 0;
    }

    if (attention->parsed()) {
      const Method* method = registry.find(method_name);
      if (!method)
        throw UsageError("--method " + method_name + ": unknown method; available: " + registry.names());
      MethodParams given;
      for (const auto& [name, flag] : method_flags) {
        if (flag->count() == 0) continue;
        bool own = false;
        for (const MethodOption& o : method->options)
          own = own || o.name == name;
        if (!own) throw UsageError("--" + name + " is not an option of method '" + method->name + "'");
        given.set(name, method_values[name]);
      }
      const MethodParams params = method->resolve(given);
      if (method->check) method->check(params);
      check_writable("--out", out_path);
      check_writable("--lse", lse_path);
      const ProblemShape shape = resolve_shape(af);
      const AttentionOptions options = make_attention_options(af.mask, shape);
      if (shape.dtype == NpyDtype::float32)
        attention_command<float>(*method, params, af, shape, options, out_path, lse_path, err);
      else
        attention_command<double>(*method, params, af, shape, options, out_path, lse_path, err);
      return 0;
    }

    // compare
    if (co.repeats < 1) throw UsageError("--repeats " + std::to_string(co.repeats) + ": must be >= 1");
    co.methods = split_list(methods_list);
    for (const std::string& name : co.methods)
      if (!registry.find(name))
        throw UsageError("--methods: unknown method '" + name + "'; available: " + registry.names());
    for (const Method& m : registry.methods())
      if (m.check)
        for (const MethodParams& p : m.compare_settings())
          m.check(p);
    check_writable("--json", json_path);
    check_writable("--csv", csv_path);
    check_writable("--plot", plot_path);
    PlotTools plot;
    if (!plot_path.empty()) {
      plot = find_plot_tools();
      check_plot_tools(plot);
    }
    const ProblemShape shape = resolve_shape(cf);
    const AttentionOptions options = make_attention_options(cf.mask, shape);
    if (shape.dtype == NpyDtype::float32)
      compare_command<float>(registry, cf, shape, options, co, probe, json_path, csv_path, plot_path, plot,
                             out, err);
    else
      compare_command<double>(registry, cf, shape, options, co, probe, json_path, csv_path, plot_path, plot,
                              out, err);
    return 0;
  } catch (const UsageError& e) {
    err << "attnkit-eval " << command << ": " << e.what() << '\n';
    return 2;
  } catch (const std::invalid_argument& e) {
    // attnkit's own argument checks (the .npy reader, masks, shapes): bad input.
    err << "attnkit-eval " << command << ": " << e.what() << '\n';
    return 2;
  } catch (const std::bad_alloc&) {
    err << "attnkit-eval " << command << ": out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    err << "attnkit-eval " << command << ": internal error: " << e.what() << '\n';
    return 1;
  }
}

}  // namespace attnkit::eval
