// attnkit-eval compare: the reference once (the oracle, untimed), then every
// selected method and parameter setting on the same inputs, timed and
// measured against it; a table on stdout, --json, --csv, --plot. A method
// that throws becomes a failed row; the others are kept.

#include "attnkit-eval/compare.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit-eval/commands.hpp"
#include "attnkit-eval/errors.hpp"
#include "attnkit-eval/outputs.hpp"
#include "attnkit-eval/progress.hpp"
#include "attnkit/core/metrics.hpp"
#include "attnkit/detail/parallel.hpp"
#include "attnkit/version.hpp"
#include "median.hpp"

namespace attnkit_eval {

std::optional<std::size_t> speedup_baseline(const std::vector<CompareRow>& rows) {
  std::optional<std::size_t> best;
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (rows[i].exact && rows[i].status == "ok" && rows[i].seconds &&
        (!best || *rows[i].seconds < *rows[*best].seconds))
      best = i;
  return best;
}

std::string speedup_baseline_description(const std::vector<CompareRow>& rows) {
  const auto best = speedup_baseline(rows);
  if (!best) return "no exact method was timed";
  const CompareRow& b = rows[*best];
  return "the fastest exact method (" + b.method + (b.params == "-" ? "" : " " + b.params) + ")";
}

namespace {

using Json = nlohmann::ordered_json;

/// What was compared, for the table header and the JSON "workload" block.
struct CompareContext {
  const CompareArgs& args;
  double scale;
  const char* memory_method;  ///< nullptr: peak bytes not measured
};

/// One line of text: a message's line breaks become spaces.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

template <typename T>
Json or_null(const std::optional<T>& x) {
  return x ? Json(*x) : Json(nullptr);
}

std::string format_bytes(const std::optional<std::int64_t>& b) {
  if (!b) return "n/a";
  char buf[32];
  const double x = static_cast<double>(*b);
  if (x >= 1024.0 * 1024.0)
    std::snprintf(buf, sizeof buf, "%.1f MiB", x / (1024.0 * 1024.0));
  else if (x >= 1024.0)
    std::snprintf(buf, sizeof buf, "%.1f KiB", x / 1024.0);
  else
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(*b));
  return buf;
}

std::string format_number(const std::optional<double>& x, const char* fmt) {
  if (!x) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, *x);
  return buf;
}

std::string describe_workload(const CompareContext& c) {
  std::ostringstream os;
  const InputPlan& in = c.args.common.inputs;
  const ProblemShape& s = in.shape;
  if (in.spec.from_files())
    os << "Q '" << in.spec.q_path << "', K '" << in.spec.k_path << "', V '" << in.spec.v_path << "'";
  else
    os << "built-in " << attnkit::to_string(in.kind) << " workload (seed " << in.seed << ")";
  os << ": " << s.q_heads << (s.q_heads == 1 ? " head" : " heads");
  if (s.kv_heads != s.q_heads) os << " (" << s.kv_heads << " key/value)";
  os << ", n_q " << s.n_q << ", n_k " << s.n_k << ", d " << s.d << ", d_v " << s.d_v << ", "
     << attnkit::to_string(s.dtype) << ", " << describe_mask(c.args.common.mask) << ", scale " << c.scale
     << ", similarity " << c.args.common.scoring.describe();
  if (c.args.common.kv_dtype != KvDtype::as_computed)
    os << ", K and V rounded to " << to_string(c.args.common.kv_dtype);
  return os.str();
}

void print_table(std::ostream& out, const std::vector<CompareRow>& rows, const CompareContext& c) {
  const bool rounding = c.args.common.kv_dtype != KvDtype::as_computed;
  out << describe_workload(c) << '\n'
      << "seconds: median of " << c.args.repeats
      << " timed calls over all heads, after one untimed call; speedup vs "
      << speedup_baseline_description(rows)
      << "; errors vs the reference (the oracle: computed once, untimed); peak bytes: "
      << (c.memory_method ? "heap growth during the untimed call" : "not measured on this platform")
      << "; cache bytes: K and V as the method keeps them, all heads"
      << (rounding ? "; *_rounded: errors vs the reference on the rounded K and V (the oracle row: what the "
                     "rounding alone moves)"
                   : "")
      << "\n\n";
  std::vector<std::vector<std::string>> cells = {{"method", "params", "exact", "status", "seconds", "speedup",
                                                  "max_abs_error", "rel_fro_error", "peak_bytes",
                                                  "cache_bytes"}};
  if (rounding) {
    cells[0].push_back("max_abs_error_rounded");
    cells[0].push_back("rel_fro_error_rounded");
  }
  for (const CompareRow& r : rows) {
    cells.push_back({r.method, r.params, r.exact ? "yes" : "no", r.status,
                     r.status == "oracle" ? "untimed" : format_number(r.seconds, "%.4g"),
                     format_number(r.speedup, "%.2f"), format_number(r.max_abs_error, "%.3g"),
                     format_number(r.rel_fro_error, "%.3g"),
                     r.status == "failed" ? "-" : format_bytes(r.peak_bytes),
                     r.status == "failed" ? "-" : format_bytes(r.cache_bytes)});
    if (rounding) {
      cells.back().push_back(format_number(r.max_abs_error_rounded, "%.3g"));
      cells.back().push_back(format_number(r.rel_fro_error_rounded, "%.3g"));
    }
  }
  std::vector<std::size_t> width(cells[0].size(), 0);
  for (const auto& line : cells)
    for (std::size_t j = 0; j < line.size(); ++j)
      width[j] = std::max(width[j], line[j].size());
  for (const auto& line : cells) {
    std::string text;
    for (std::size_t j = 0; j < line.size(); ++j) {
      const std::size_t pad = width[j] - line[j].size();
      const bool left = j < 4;  // text columns left, numbers right
      if (j > 0) text += "  ";
      text += left ? line[j] + std::string(pad, ' ') : std::string(pad, ' ') + line[j];
    }
    while (!text.empty() && text.back() == ' ')
      text.pop_back();
    out << text << '\n';
  }
  for (const CompareRow& r : rows)
    if (r.status == "failed")
      out << "failed: " << r.method << (r.params == "-" ? "" : " " + r.params) << ": " << r.message << '\n';
}

Json to_json(const std::vector<CompareRow>& rows, const CompareContext& c) {
  const InputPlan& in = c.args.common.inputs;
  const ProblemShape& s = in.shape;
  const MaskFlags& m = c.args.common.mask;
  const attnkit::Mask& mask = c.args.common.options.mask;
  Json w;
  if (in.spec.from_files()) {
    w["source"] = "files";
    w["q"] = in.spec.q_path;
    w["k"] = in.spec.k_path;
    w["v"] = in.spec.v_path;
  } else {
    w["source"] = "built-in";
    w["kind"] = attnkit::to_string(in.kind);
    w["seed"] = in.seed;
  }
  w["heads"] = s.q_heads;
  w["kv_heads"] = s.kv_heads;
  w["n_q"] = s.n_q;
  w["n_k"] = s.n_k;
  w["d"] = s.d;
  w["d_v"] = s.d_v;
  w["dtype"] = attnkit::to_string(s.dtype);
  w["mask"] = m.mask;
  w["offset"] = or_null(mask.offset);
  w["window"] = or_null(mask.window);
  w["sinks"] = mask.sinks;
  w["scale"] = c.scale;
  w["similarity"] = c.args.common.scoring.describe();
  w["kv_dtype"] = c.args.common.kv_dtype == KvDtype::as_computed ? Json(nullptr)
                                                                 : Json(to_string(c.args.common.kv_dtype));
  w["repeats"] = c.args.repeats;
  w["oracle"] = "reference: computed once, untimed; every error is measured against it";
  w["speedup_baseline"] = speedup_baseline_description(rows);
  w["peak_bytes_method"] = c.memory_method ? Json(c.memory_method) : Json(nullptr);
  w["attnkit_version"] = attnkit::version_string;
  Json results = Json::array();
  for (const CompareRow& r : rows) {
    Json j;
    j["method"] = r.method;
    j["params"] = r.params;
    j["exact"] = r.exact;
    j["status"] = r.status;
    j["message"] = r.message.empty() ? Json(nullptr) : Json(r.message);
    j["seconds"] = or_null(r.seconds);
    j["speedup"] = or_null(r.speedup);
    j["max_abs_error"] = or_null(r.max_abs_error);
    j["rel_fro_error"] = or_null(r.rel_fro_error);
    j["max_abs_error_rounded"] = or_null(r.max_abs_error_rounded);
    j["rel_fro_error_rounded"] = or_null(r.rel_fro_error_rounded);
    j["peak_bytes"] = or_null(r.peak_bytes);
    j["cache_bytes"] = or_null(r.cache_bytes);
    results.push_back(j);
  }
  return {{"workload", w}, {"results", results}};
}

std::string csv_quoted(const std::string& s) {
  std::string q = "\"";
  for (const char ch : s)
    q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

std::string to_csv(const std::vector<CompareRow>& rows) {
  std::ostringstream os;
  os.precision(17);
  const auto field = [&os](const auto& x) {
    if (x) os << *x;
  };
  os << "method,params,exact,status,seconds,speedup,max_abs_error,rel_fro_error,peak_bytes,cache_bytes,"
        "max_abs_error_rounded,rel_fro_error_rounded,message\n";
  for (const CompareRow& r : rows) {
    os << r.method << ',' << csv_quoted(r.params) << ',' << (r.exact ? "true" : "false") << ',' << r.status
       << ',';
    field(r.seconds);
    os << ',';
    field(r.speedup);
    os << ',';
    field(r.max_abs_error);
    os << ',';
    field(r.rel_fro_error);
    os << ',';
    field(r.peak_bytes);
    os << ',';
    field(r.cache_bytes);
    os << ',';
    field(r.max_abs_error_rounded);
    os << ',';
    field(r.rel_fro_error_rounded);
    os << ',' << csv_quoted(r.message) << '\n';
  }
  return os.str();
}

/// K and V as given: kv_heads n_k (d + d_v) scalars.
std::int64_t exact_cache_bytes(const ProblemShape& s) {
  const std::int64_t item = s.dtype == attnkit::NpyDtype::float32 ? 4 : 8;
  return s.kv_heads * s.n_k * (s.d + s.d_v) * item;
}

/// One method setting: an untimed call (output, errors, peak bytes), then
/// `repeats` timed calls. Anything it throws makes the row failed.
template <typename Scalar>
CompareRow run_setting(const Method& m, const MethodParams& params, const Inputs<Scalar>& in,
                       const RunContext& ctx, const attnkit::AttentionResult<Scalar>& oracle,
                       const attnkit::AttentionResult<Scalar>* oracle_rounded, const CompareArgs& a,
                       PeakMemoryProbe* probe, Progress& progress) {
  using Clock = std::chrono::steady_clock;
  const ProblemShape& s = a.common.inputs.shape;
  CompareRow row;
  row.method = m.name;
  row.params = m.describe(params);
  row.exact = m.exact;
  const std::string label = "compare: " + m.name + (params.values().empty() ? "" : " " + row.params) + " run";
  const Index runs = 1 + a.repeats;
  try {
    check_scoring(m, ctx.scoring);
    if (m.check_shape) m.check_shape(params, s);
    const Kernel<Scalar>& kernel = m.kernel<Scalar>();
    {
      if (probe) probe->start();
      const MethodResult<Scalar> r = kernel(in.q.data, in.k.data, in.v.data, ctx, params);
      if (probe) row.peak_bytes = probe->peak_extra_bytes();
      const auto& o = r.attention.output;
      if (o.rows() != oracle.output.rows() || o.cols() != oracle.output.cols())
        throw std::logic_error("it returned output (" + std::to_string(o.rows()) + " x " +
                               std::to_string(o.cols()) + "), expected (" +
                               std::to_string(oracle.output.rows()) + " x " +
                               std::to_string(oracle.output.cols()) + ")");
      row.max_abs_error = attnkit::max_abs_error(o, oracle.output);
      row.rel_fro_error = attnkit::relative_frobenius_error(o, oracle.output);
      if (oracle_rounded) {
        row.max_abs_error_rounded = attnkit::max_abs_error(o, oracle_rounded->output);
        row.rel_fro_error_rounded = attnkit::relative_frobenius_error(o, oracle_rounded->output);
      }
      row.cache_bytes = r.cache_bytes ? static_cast<std::int64_t>(*r.cache_bytes) : exact_cache_bytes(s);
    }
    progress.step(label, 1, runs);
    std::vector<double> times;
    for (int rep = 0; rep < a.repeats; ++rep) {
      const auto t0 = Clock::now();
      const MethodResult<Scalar> r = kernel(in.q.data, in.k.data, in.v.data, ctx, params);
      const auto t1 = Clock::now();
      times.push_back(std::chrono::duration<double>(t1 - t0).count());
      progress.step(label, rep + 2, runs);
    }
    row.seconds = attnkit::bench::median(times);
  } catch (const std::exception& e) {
    CompareRow failed;
    failed.method = row.method;
    failed.params = row.params;
    failed.exact = row.exact;
    failed.status = "failed";
    failed.message = one_line(e.what());
    return failed;
  }
  return row;
}

template <typename Scalar>
void compare_typed(const Registry& registry, const CompareArgs& a, PeakMemoryProbe* probe, std::ostream& out,
                   std::ostream& err) {
  const ProblemShape& s = a.common.inputs.shape;
  Progress progress(err, a.common.quiet);
  const Inputs<Scalar> in = load_inputs<Scalar>(a.common.inputs);
  check_finite(in, a.common.inputs, "compare");
  // --kv-dtype: the methods run on K and V rounded once (and flash on their
  // 16-bit copies); the oracle stays on the inputs as given, and a second
  // reference on the rounded K and V separates the two error sources.
  const bool rounding = a.common.kv_dtype != KvDtype::as_computed;
  Inputs<Scalar> rounded_storage;
  HalfKv kv16;
  bool has16 = false;
  if (rounding) {
    rounded_storage = in;
    has16 = round_kv(rounded_storage, a.common.kv_dtype, kv16);
  }
  const Inputs<Scalar>& run_in = rounding ? rounded_storage : in;
  const RunContext ctx = a.common.context(has16 ? &kv16 : nullptr);
  const RunContext oracle_ctx = a.common.context();

  // The oracle: the reference once, untimed. If it fails, nothing can be
  // measured: its exception ends the command.
  const Method* reference = registry.find("reference");
  if (!reference) throw std::logic_error("compare: the registry has no 'reference' method");
  const MethodParams ref_params = reference->resolve();
  std::vector<CompareRow> rows;
  CompareRow oracle_row;
  oracle_row.method = reference->name;
  oracle_row.params = reference->describe(ref_params);
  oracle_row.exact = true;
  oracle_row.status = "oracle";
  // OpenMP's thread team is started before anything is measured: its
  // one-time allocations (about 1 MB with LLVM's libomp, a few KB with GCC's
  // libgomp) belong to no method.
  ATTNKIT_PRAGMA(omp parallel) {}
  if (probe) probe->start();
  const MethodResult<Scalar> oracle =
      reference->kernel<Scalar>()(in.q.data, in.k.data, in.v.data, oracle_ctx, ref_params);
  if (probe) oracle_row.peak_bytes = probe->peak_extra_bytes();
  oracle_row.max_abs_error = 0.0;
  oracle_row.rel_fro_error = 0.0;
  oracle_row.cache_bytes = exact_cache_bytes(s);
  std::optional<MethodResult<Scalar>> oracle_rounded;
  if (rounding) {
    oracle_rounded.emplace(
        reference->kernel<Scalar>()(run_in.q.data, run_in.k.data, run_in.v.data, oracle_ctx, ref_params));
    oracle_row.max_abs_error_rounded =
        attnkit::max_abs_error(oracle.attention.output, oracle_rounded->attention.output);
    oracle_row.rel_fro_error_rounded =
        attnkit::relative_frobenius_error(oracle.attention.output, oracle_rounded->attention.output);
  }
  rows.push_back(oracle_row);
  progress.step("compare: reference (oracle)", 1, 1);

  for (const Method& m : registry.methods()) {
    const bool selected = a.methods.empty()
                              ? m.name != "reference"
                              : std::find(a.methods.begin(), a.methods.end(), m.name) != a.methods.end();
    if (!selected) continue;
    for (const MethodParams& params : m.compare_settings())
      rows.push_back(run_setting(m, params, run_in, ctx, oracle.attention,
                                 oracle_rounded ? &oracle_rounded->attention : nullptr, a, probe, progress));
  }
  if (const auto base = speedup_baseline(rows))
    for (CompareRow& r : rows)
      if (r.seconds) r.speedup = *rows[*base].seconds / *r.seconds;

  const CompareContext c{a, a.common.options.scale.value_or(1.0 / std::sqrt(static_cast<double>(s.d))),
                         probe ? probe->method() : nullptr};
  print_table(out, rows, c);
  const std::string json = to_json(rows, c).dump(2) + "\n";
  StagedOutputs files;
  std::string json_file;
  if (!a.json_path.empty()) json_file = files.write_text("--json", a.json_path, json);
  if (!a.csv_path.empty()) files.write_text("--csv", a.csv_path, to_csv(rows));
  if (!a.plot_path.empty()) {
    // The script reads the JSON: the staged --json file, or a scratch copy.
    if (json_file.empty()) json_file = files.scratch_text("--plot", a.plot_path, ".json", json);
    draw_plot(a.plot, json_file, files.stage("--plot", a.plot_path), a.plot_path);
  }
  files.commit();
  if (!a.plot_path.empty()) out << "plot: " << a.plot_path << " (drawn by " << a.plot.script << ")\n";
}

}  // namespace

void run_compare(const Registry& registry, const CompareArgs& a, PeakMemoryProbe* probe, std::ostream& out,
                 std::ostream& err) {
  if (a.common.inputs.shape.dtype == attnkit::NpyDtype::float32)
    compare_typed<float>(registry, a, probe, out, err);
  else
    compare_typed<double>(registry, a, probe, out, err);
}

}  // namespace attnkit_eval
