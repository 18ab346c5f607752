#pragma once

// attnkit-eval compare: every method (and parameter setting) on the same
// inputs, timed, measured against the reference, printed as a table and
// written as JSON / CSV.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "attnkit/core/metrics.hpp"
#include "attnkit/version.hpp"
#include "eval/inputs.hpp"
#include "eval/memory.hpp"
#include "eval/methods.hpp"
#include "eval/run.hpp"

namespace attnkit::eval {

/// One line of the table.
struct CompareRow {
  std::string method;
  std::string params;
  bool exact = false;
  double seconds = 0;  ///< median over the timed runs of the time for all heads
  double speedup = 0;  ///< baseline seconds / seconds (see speedup_baseline)
  double max_abs_error = 0;
  double rel_fro_error = 0;
  std::optional<std::int64_t> peak_bytes;  ///< largest per-head peak; empty when not measured
};

/// The row the speedup column is relative to — THE one place to change it:
/// the fastest exact method (smallest seconds among rows with `exact` set).
/// \throws std::logic_error if no exact method ran.
inline std::size_t speedup_baseline(const std::vector<CompareRow>& rows) {
  std::size_t best = rows.size();
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (rows[i].exact && (best == rows.size() || rows[i].seconds < rows[best].seconds)) best = i;
  if (best == rows.size()) throw std::logic_error("compare: no exact method ran");
  return best;
}

/// "the fastest exact method (flash threads=all)" for the table and JSON.
inline std::string speedup_baseline_description(const std::vector<CompareRow>& rows) {
  const CompareRow& b = rows[speedup_baseline(rows)];
  return "the fastest exact method (" + b.method + (b.params == "-" ? "" : " " + b.params) + ")";
}

struct CompareOptions {
  int repeats = 3;
  std::vector<std::string> methods;  ///< empty: all; the reference always runs
};

/// Runs every selected method; the reference first (its untimed output is the
/// oracle every error is measured against).
template <typename Scalar>
std::vector<CompareRow> run_compare(const Registry& registry, const Inputs<Scalar>& in,
                                    const AttentionOptions& options, const CompareOptions& co,
                                    PeakMemoryProbe* probe, Progress& progress) {
  using Clock = std::chrono::steady_clock;
  const Index heads = in.shape.q_heads;
  std::vector<const Method*> order;
  if (const Method* ref = registry.find("reference")) order.push_back(ref);
  for (const Method& m : registry.methods())
    if (m.name != "reference" &&
        (co.methods.empty() || std::find(co.methods.begin(), co.methods.end(), m.name) != co.methods.end()))
      order.push_back(&m);

  std::optional<Stacked<Scalar>> oracle;
  std::vector<CompareRow> rows;
  for (const Method* m : order) {
    for (const MethodParams& params : m->compare_settings()) {
      CompareRow row;
      row.method = m->name;
      row.params = m->describe(params);
      row.exact = m->exact;
      const std::string label = m->name + (params.values().empty() ? "" : " " + row.params);
      Stacked<Scalar> out = make_stacked<Scalar>(in.shape);
      std::vector<double> times(static_cast<std::size_t>(co.repeats), 0.0);
      std::int64_t peak = 0;
      for (Index h = 0; h < heads; ++h) {
        // Untimed run: warms the caches, gives the output, measures memory.
        if (probe) probe->start();
        {
          AttentionResult<Scalar> r = run_head(*m, in, h, options, params);
          if (probe) peak = std::max(peak, probe->peak_extra_bytes());
          store_head(out, h, r);
        }
        for (std::size_t rep = 0; rep < times.size(); ++rep) {
          const auto t0 = Clock::now();
          const AttentionResult<Scalar> r = run_head(*m, in, h, options, params);
          const auto t1 = Clock::now();
          times[rep] += std::chrono::duration<double>(t1 - t0).count();
        }
        progress.step(label, h + 1, heads);
      }
      std::sort(times.begin(), times.end());
      const std::size_t n = times.size();
      row.seconds = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
      if (probe) row.peak_bytes = peak;
      if (!oracle) oracle = out;  // the reference's output
      row.max_abs_error = max_abs_error(out.output.data, oracle->output.data);
      row.rel_fro_error = relative_frobenius_error(out.output.data, oracle->output.data);
      rows.push_back(row);
    }
  }
  const double base = rows[speedup_baseline(rows)].seconds;
  for (CompareRow& r : rows)
    r.speedup = base / r.seconds;
  return rows;
}

/// What was compared, for the table header and the JSON "workload" block.
struct CompareContext {
  InputSpec spec;
  ProblemShape shape;
  MaskFlags mask;
  double scale = 0;
  int repeats = 3;
  const char* memory_method = nullptr;  ///< nullptr: peak bytes not measured
};

inline std::string format_bytes(const std::optional<std::int64_t>& b) {
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

inline std::string format_number(double x, const char* fmt) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, x);
  return buf;
}

inline std::string describe_workload(const CompareContext& c) {
  std::ostringstream os;
  const ProblemShape& s = c.shape;
  if (c.spec.from_files())
    os << "Q '" << c.spec.q_path << "', K '" << c.spec.k_path << "', V '" << c.spec.v_path << "'";
  else
    os << "built-in " << c.spec.workload << " workload (seed " << c.spec.seed << ")";
  os << ": " << s.q_heads << (s.q_heads == 1 ? " head" : " heads");
  if (s.kv_heads != s.q_heads) os << " (" << s.kv_heads << " key/value)";
  os << ", n_q " << s.n_q << ", n_k " << s.n_k << ", d " << s.d << ", d_v " << s.d_v << ", "
     << to_string(s.dtype) << ", mask " << c.mask.mask;
  if (c.mask.has_offset) os << " offset " << c.mask.offset;
  os << ", scale " << c.scale;
  return os.str();
}

/// The table, as printed on stdout.
inline void print_table(std::ostream& out, const std::vector<CompareRow>& rows, const CompareContext& c) {
  out << describe_workload(c) << '\n'
      << "seconds: median of " << c.repeats << " timed runs over all heads, after one untimed run per head; "
      << "speedup vs " << speedup_baseline_description(rows) << "; errors vs the reference; peak bytes: "
      << (c.memory_method ? "largest per-head heap growth" : "not measured on this platform") << "\n\n";
  std::vector<std::vector<std::string>> cells = {
      {"method", "params", "exact", "seconds", "speedup", "max_abs_error", "rel_fro_error", "peak_bytes"}};
  for (const CompareRow& r : rows)
    cells.push_back({r.method, r.params, r.exact ? "yes" : "no", format_number(r.seconds, "%.4g"),
                     format_number(r.speedup, "%.2f"), format_number(r.max_abs_error, "%.3g"),
                     format_number(r.rel_fro_error, "%.3g"), format_bytes(r.peak_bytes)});
  std::vector<std::size_t> width(cells[0].size(), 0);
  for (const auto& line : cells)
    for (std::size_t j = 0; j < line.size(); ++j)
      width[j] = std::max(width[j], line[j].size());
  for (const auto& line : cells) {
    std::string text;
    for (std::size_t j = 0; j < line.size(); ++j) {
      const std::size_t pad = width[j] - line[j].size();
      const bool left = j < 3;  // text columns left, numbers right
      if (j > 0) text += "  ";
      text += left ? line[j] + std::string(pad, ' ') : std::string(pad, ' ') + line[j];
    }
    while (!text.empty() && text.back() == ' ')
      text.pop_back();
    out << text << '\n';
  }
}

/// The JSON document: {"workload": {...}, "results": [{...}, ...]}.
inline nlohmann::ordered_json to_json(const std::vector<CompareRow>& rows, const CompareContext& c) {
  nlohmann::ordered_json w;
  const ProblemShape& s = c.shape;
  if (c.spec.from_files()) {
    w["source"] = "files";
    w["q"] = c.spec.q_path;
    w["k"] = c.spec.k_path;
    w["v"] = c.spec.v_path;
  } else {
    w["source"] = "built-in";
    w["kind"] = c.spec.workload;
    w["seed"] = c.spec.seed;
  }
  w["heads"] = s.q_heads;
  w["kv_heads"] = s.kv_heads;
  w["n_q"] = s.n_q;
  w["n_k"] = s.n_k;
  w["d"] = s.d;
  w["d_v"] = s.d_v;
  w["dtype"] = to_string(s.dtype);
  w["mask"] = c.mask.mask;
  w["offset"] = c.mask.has_offset ? nlohmann::ordered_json(c.mask.offset) : nlohmann::ordered_json(nullptr);
  w["scale"] = c.scale;
  w["repeats"] = c.repeats;
  w["speedup_baseline"] = speedup_baseline_description(rows);
  w["peak_bytes_method"] =
      c.memory_method ? nlohmann::ordered_json(c.memory_method) : nlohmann::ordered_json(nullptr);
  w["attnkit_version"] = attnkit::version_string;
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const CompareRow& r : rows) {
    nlohmann::ordered_json j;
    j["method"] = r.method;
    j["params"] = r.params;
    j["exact"] = r.exact;
    j["seconds"] = r.seconds;
    j["speedup"] = r.speedup;
    j["max_abs_error"] = r.max_abs_error;
    j["rel_fro_error"] = r.rel_fro_error;
    j["peak_bytes"] = r.peak_bytes ? nlohmann::ordered_json(*r.peak_bytes) : nlohmann::ordered_json(nullptr);
    results.push_back(j);
  }
  return {{"workload", w}, {"results", results}};
}

/// CSV with a header line; params quoted; empty peak_bytes when not measured.
inline std::string to_csv(const std::vector<CompareRow>& rows) {
  std::ostringstream os;
  os.precision(17);
  os << "method,params,exact,seconds,speedup,max_abs_error,rel_fro_error,peak_bytes\n";
  for (const CompareRow& r : rows) {
    std::string params;
    for (const char ch : r.params)
      params += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    os << r.method << ",\"" << params << "\"," << (r.exact ? "true" : "false") << ',' << r.seconds << ','
       << r.speedup << ',' << r.max_abs_error << ',' << r.rel_fro_error << ',';
    if (r.peak_bytes) os << *r.peak_bytes;
    os << '\n';
  }
  return os.str();
}

/// Writes `text` to `path`. \throws UsageError naming the flag.
inline void write_text(const std::string& flag, const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw UsageError(flag + " '" + path + "': write failed");
}

}  // namespace attnkit::eval
