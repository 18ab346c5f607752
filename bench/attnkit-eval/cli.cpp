// attnkit-eval's command line (declared in cli.hpp): CLI11 parsing into text,
// every check that can be made before any work, then the subcommand
// (attention.cpp, prune.cpp, compare.cpp). Exit codes: 0 success, 2 bad
// arguments or input (UsageError, or the library's std::invalid_argument),
// 1 internal error.

#include "attnkit-eval/cli.hpp"

#include <map>
#include <new>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "attnkit-eval/commands.hpp"
#include "attnkit-eval/errors.hpp"
#include "attnkit-eval/numbers.hpp"
#include "attnkit-eval/outputs.hpp"
#include "attnkit/core/mask.hpp"
#include "attnkit/prune/config.hpp"
#include "attnkit/version.hpp"

namespace attnkit_eval {

namespace {

/// The flags every subcommand reads, as typed.
struct CommonFlags {
  InputSpec spec;
  MaskFlags mask;
  SimilarityFlags similarity;
  std::string kv_dtype;
  bool quiet = false;
  std::vector<CLI::Option*> builtin_options;  // --workload --n --d --heads --kv-heads --seed
};

void add_common_flags(CLI::App* app, CommonFlags& f) {
  app->add_option("--q", f.spec.q_path, "queries .npy: (n_q, d) or (heads, n_q, d)");
  app->add_option("--k", f.spec.k_path, "keys .npy: (n_k, d) or (kv_heads, n_k, d)");
  app->add_option("--v", f.spec.v_path, "values .npy: (n_k, d_v) or (kv_heads, n_k, d_v)");
  app->add_option("--mask", f.mask.mask, std::string(attnkit::mask_kind_names()) + " (default none)");
  app->add_option("--offset", f.mask.offset, "position of query 0 in the keys (default n_k - n_q)");
  app->add_option("--window", f.mask.window,
                  "sliding window: each query sees its W most recent visible keys");
  app->add_option("--sinks", f.mask.sinks, "attention sinks: the first S keys stay visible (with --window)");
  app->add_option("--scale", f.mask.scale, "logit scale (default 1/sqrt(d))");
  app->add_option("--dtype", f.spec.dtype,
                  "float32 | float64: compute and write in this type (default: the inputs')");
  app->add_option("--similarity", f.similarity.similarity,
                  "score of reference, flash and topk: dot | rbf | cosine | hyperbolic (default dot)");
  app->add_option("--tau", f.similarity.tau, "temperature of rbf, cosine and hyperbolic (default 1)");
  app->add_option("--curvature", f.similarity.curvature, "curvature c of hyperbolic (default 1)");
  app->add_option("--softcap", f.similarity.softcap,
                  "logit soft-capping cap tanh(s / cap) of the dot product");
  app->add_flag("--alibi", f.similarity.alibi, "ALiBi: the standard per-head linear position bias");
  app->add_option(
      "--kv-dtype", f.kv_dtype,
      "round K and V once on load to f32 | f64 | bf16 | f16 (bf16/f16: flash reads them in 16 bits)");
  f.builtin_options = {
      app->add_option("--workload", f.spec.workload,
                      "built-in workload: llm | iid | clustered (default llm)"),
      app->add_option("--n", f.spec.n, "built-in workload: tokens (default 4096)"),
      app->add_option("--d", f.spec.d, "built-in workload: head width (default 128)"),
      app->add_option("--heads", f.spec.heads, "built-in workload: query heads (default 8)"),
      app->add_option(
          "--kv-heads", f.spec.kv_heads,
          "built-in workload: key/value heads, dividing --heads (default --heads; fewer: grouped-query)"),
      app->add_option("--seed", f.spec.seed,
                      "built-in workload: seed; key/value head g uses seed + g (default 1)"),
  };
  app->add_flag("--quiet", f.quiet, "no progress lines on stderr");
}

/// The inputs and attention options of `f`, validated (no data read).
CommonArgs common_args(const CommonFlags& f, const MaskFlags& mask) {
  if (f.spec.from_files())
    for (const CLI::Option* o : f.builtin_options)
      if (o->count() > 0)
        throw UsageError(o->get_name() +
                         " sets up the built-in workload; it cannot be combined with --q/--k/--v");
  CommonArgs c;
  c.inputs = plan_inputs(f.spec);
  c.mask = mask;
  c.quiet = f.quiet;
  c.options = attention_options(mask, c.inputs.shape.n_q, c.inputs.shape.n_k);
  c.scoring = scoring_flags(f.similarity);
  c.kv_dtype = kv_dtype_flag(f.kv_dtype);
  if (is_16bit(c.kv_dtype) && c.inputs.shape.dtype != attnkit::NpyDtype::float32)
    throw UsageError("--kv-dtype " + f.kv_dtype +
                     ": 16-bit K and V are computed in float32, but the compute dtype is " +
                     attnkit::to_string(c.inputs.shape.dtype) + " (pass --dtype float32)");
  return c;
}

std::vector<FileArg> input_files(const InputSpec& s) {
  return {{"--q", s.q_path}, {"--k", s.k_path}, {"--v", s.v_path}};
}

/// Splits "a,b, c" into names.
std::vector<std::string> split_list(const std::string& s) {
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
  std::string method_name, out_path, lse_path, bound_path;
  std::map<std::string, std::string> method_values;  // method options by name
  std::map<std::string, CLI::Option*> method_flags;
  CLI::App* attention = app.add_subcommand("attention", "compute one method's output and write it as .npy");
  add_common_flags(attention, af);
  attention->add_option("--method", method_name, "method: " + registry.names())->required();
  attention->add_option("--out", out_path, "output .npy: (n_q, d_v) or (heads, n_q, d_v)")->required();
  attention->add_option("--lse", lse_path, "also write each row's log-sum-exp: (n_q) or (heads, n_q)");
  attention->add_option(
      "--bound", bound_path,
      "approx: also write the proven error bound of every output entry (float64, shaped as --out)");
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

  // prune: the protocol of docs/pruning.md per head.
  CommonFlags pf;
  PruneFlags pr;
  std::string out_dims, prune_out;
  CLI::App* prune = app.add_subcommand(
      "prune", "choose the key dimensions to keep and judge them by the queries after the prompt");
  add_common_flags(prune, pf);
  prune->add_option("--ratio", pr.ratio, "share of the key dimensions to drop, in [0, 1)")->required();
  prune->add_option("--weights", pr.weights,
                    std::string("dimension weights: ") + attnkit::prune_weights_names() + " (default gram)");
  prune->add_option("--select", pr.select,
                    std::string("selector: ") + attnkit::prune_selector_names() + " (default topk)");
  prune->add_option("--compensation", pr.compensation,
                    std::string("compensation: ") + attnkit::prune_compensation_names() + " (default none)");
  prune->add_option("--rope-pairs", pr.rope_pairs, "keep rotary pairs together: interleaved | half | none");
  prune->add_flag("--scale-correction", pr.scale_correction, "rescale kept dimensions by sqrt(D/D')");
  prune->add_option("--query-window", pr.query_window,
                    "W: the last prompt queries that choose the dimensions (default 32)");
  prune->add_option("--recent", pr.recent,
                    "R: the most recent prompt keys kept at full dimension (default 32)");
  prune->add_option("--prompt", pr.prompt,
                    "N0: prompt length; the queries after it are judged (default n: every query judged)");
  prune->add_flag("--shared-selection", pr.shared_selection,
                  "one selection per key/value head from all its query heads' windows (grouped-query)");
  prune->add_option("--out-dims", out_dims, "kept dimensions .npy (int64): (D') or (heads, D')")->required();
  prune->add_option("--out", prune_out,
                    "outputs of the judged queries .npy: (n_j, d_v) or (heads, n_j, d_v)");

  // compare
  CommonFlags cf;
  std::string repeats = "3", methods_list, json_path, csv_path, plot_path;
  CLI::App* compare = app.add_subcommand("compare", "run every method on the inputs: table, JSON, CSV, plot");
  add_common_flags(compare, cf);
  compare->add_option("--json", json_path, "write the results as JSON");
  compare->add_option("--csv", csv_path, "write the results as CSV");
  compare->add_option("--plot", plot_path, "draw error against speedup (PNG, needs matplotlib)");
  compare->add_option("--repeats", repeats, "timed calls per method (median; default 3)");
  compare->add_option("--methods", methods_list,
                      "comma-separated methods to time, of: " + registry.names() +
                          " (default all but the reference, which always runs once, untimed, as the oracle)");

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
      PruneArgs a;
      a.settings = prune_settings(pr);
      if (pf.mask.mask != "none" && pf.mask.mask != "causal")
        throw UsageError("--mask " + pf.mask.mask + ": prune judges the queries causally (the protocol)");
      if (!pf.mask.offset.empty())
        throw UsageError("--offset " + pf.mask.offset +
                         ": prune has no offset (one query per token, causal)");
      if (!pf.mask.window.empty())
        throw UsageError(
            "--window " + pf.mask.window +
            ": prune judges every query causally over its whole prefix (the protocol), without a "
            "sliding window; the queries that choose the dimensions are set by --query-window");
      if (!pf.mask.sinks.empty())
        throw UsageError("--sinks " + pf.mask.sinks +
                         ": prune judges every query causally over its whole prefix (the protocol), without "
                         "attention sinks");
      if (!pf.similarity.similarity.empty() || !pf.similarity.tau.empty() ||
          !pf.similarity.curvature.empty() || !pf.similarity.softcap.empty() || pf.similarity.alibi)
        throw UsageError(
            "--similarity/--tau/--curvature/--softcap/--alibi: prune ranks key dimensions by their "
            "dot-product contributions; similarities are for attention and compare");
      if (!pf.kv_dtype.empty())
        throw UsageError("--kv-dtype " + pf.kv_dtype +
                         ": prune keeps K in the compute dtype (attention and "
                         "compare take --kv-dtype)");
      MaskFlags scale_only;
      scale_only.scale = pf.mask.scale;
      a.common = common_args(pf, scale_only);
      const ProblemShape& s = a.common.inputs.shape;
      if (s.n_q != s.n_k)
        throw UsageError("prune needs one query per token: Q has " + std::to_string(s.n_q) + " rows, K " +
                         std::to_string(s.n_k));
      const Index n0 = a.settings.protocol.prompt.value_or(s.n_q);
      if (n0 > s.n_q)
        throw UsageError("--prompt " + pr.prompt + ": the prompt length must be in [1, n] = [1, " +
                         std::to_string(s.n_q) + "]");
      if (a.settings.protocol.window > n0)
        throw UsageError("--query-window " + pr.query_window +
                         ": longer than the prompt (N0 = " + std::to_string(n0) + ")");
      check_prune_width(pr, a.settings, s.d);
      a.dims_path = out_dims;
      a.out_path = prune_out;
      check_outputs(input_files(pf.spec), {{"--out-dims", out_dims}, {"--out", prune_out}});
      run_prune(a, out, err);
      return 0;
    }

    if (attention->parsed()) {
      AttentionArgs a;
      a.method = registry.find(method_name);
      if (!a.method)
        throw UsageError("--method " + method_name + ": unknown method; available: " + registry.names());
      MethodParams given;
      for (const auto& [name, flag] : method_flags) {
        if (flag->count() == 0) continue;
        bool own = false;
        for (const MethodOption& o : a.method->options)
          own = own || o.name == name;
        if (!own) throw UsageError("--" + name + " is not an option of method '" + a.method->name + "'");
        given.set(name, method_values[name]);
      }
      a.params = a.method->resolve(given);
      if (a.method->check) a.method->check(a.params);
      a.common = common_args(af, af.mask);
      check_scoring(*a.method, a.common.scoring);
      if (a.method->check_shape) a.method->check_shape(a.params, a.common.inputs.shape);
      a.out_path = out_path;
      a.lse_path = lse_path;
      a.bound_path = bound_path;
      if (!bound_path.empty() && !a.method->reports_bound)
        throw UsageError("--bound " + bound_path + ": method '" + a.method->name +
                         "' proves no error bound (approx does)");
      check_outputs(input_files(af.spec),
                    {{"--out", out_path}, {"--lse", lse_path}, {"--bound", bound_path}});
      run_attention(a, out, err);
      return 0;
    }

    // compare
    CompareArgs a;
    a.repeats = static_cast<int>(parse_integer("--repeats", repeats, 1, 1000000));
    a.methods = split_list(methods_list);
    for (const std::string& name : a.methods)
      if (!registry.find(name))
        throw UsageError("--methods: unknown method '" + name + "'; available: " + registry.names());
    for (const Method& m : registry.methods())
      if (m.check)
        for (const MethodParams& p : m.compare_settings())
          m.check(p);
    a.common = common_args(cf, cf.mask);
    a.json_path = json_path;
    a.csv_path = csv_path;
    a.plot_path = plot_path;
    std::vector<FileArg> inputs = input_files(cf.spec);
    if (!plot_path.empty()) {
      a.plot = find_plot_tools();
      inputs.push_back({"the plot script", a.plot.script});
    }
    check_outputs(inputs, {{"--json", json_path}, {"--csv", csv_path}, {"--plot", plot_path}});
    if (!plot_path.empty()) check_plot_tools(a.plot);
    run_compare(registry, a, probe, out, err);
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

}  // namespace attnkit_eval
