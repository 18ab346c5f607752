// attnkit-eval's command line (declared in eval/cli.hpp). Compiled once into
// attnkit_eval_core with the subcommands' float and double instantiations.

#include <cstdlib>
#include <filesystem>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "eval/cli.hpp"

namespace attnkit::eval {

namespace {

// ATTNKIT_EVAL_DEFAULT_PYTHON, ATTNKIT_EVAL_INSTALLED_SCRIPT and
// ATTNKIT_EVAL_SOURCE_SCRIPT are set for this file by bench/CMakeLists.txt.

/// Python: $ATTNKIT_PYTHON, else the interpreter found when attnkit was
/// configured (ATTNKIT_EVAL_DEFAULT_PYTHON), else python3 on PATH.
/// Script: $ATTNKIT_EVAL_PLOT_SCRIPT, else the installed copy next to the
/// executable (<bindir>/../share/attnkit/attnkit_eval_plot.py), else the
/// source tree's bench/attnkit_eval_plot.py.
PlotTools find_plot_tools() {
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
      t.script = c.lexically_normal().string();  // bin/../share/... -> share/...
      break;
    }
  }
  return t;
}

/// Fails fast, before any work, when --plot cannot be honoured.
void check_plot_tools(const PlotTools& t) {
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

}  // namespace

int run_cli(int argc, const char* const* argv, const Registry& registry, PeakMemoryProbe* probe,
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
      check_prune_flags(pr, po, shape);
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
