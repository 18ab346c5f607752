#pragma once

// attnkit-eval: the subcommands, as cli.cpp hands them over after every check
// that can be made before any work (flags, input headers, shapes, output
// paths, plot tools). Each is defined in its own file: attention.cpp,
// prune.cpp, compare.cpp.

#include <ostream>
#include <string>
#include <vector>

#include "attnkit-eval/flags.hpp"
#include "attnkit-eval/inputs.hpp"
#include "attnkit-eval/memory.hpp"
#include "attnkit-eval/methods.hpp"
#include "attnkit-eval/plot.hpp"
#include "attnkit/attention/problem.hpp"

namespace attnkit_eval {

/// What every subcommand reads.
struct CommonArgs {
  InputPlan inputs;
  MaskFlags mask;
  attnkit::AttentionOptions options;
  Scoring scoring;
  KvDtype kv_dtype = KvDtype::as_computed;
  bool quiet = false;

  /// The run context of these arguments (kv16: 16-bit K and V or nullptr).
  RunContext context(const HalfKv* kv16 = nullptr) const {
    return {inputs.shape.heads(), options, scoring, kv16};
  }
};

struct AttentionArgs {
  CommonArgs common;
  const Method* method = nullptr;
  MethodParams params;  ///< resolved
  std::string out_path;
  std::string lse_path;    ///< "" = no --lse
  std::string bound_path;  ///< "" = no --bound (methods with Method::reports_bound)
};

/// `attention`: one method's output (and lse) written as .npy.
void run_attention(const AttentionArgs& a, std::ostream& out, std::ostream& err);

struct PruneArgs {
  CommonArgs common;
  PruneSettings settings;
  std::string dims_path;
  std::string out_path;  ///< "" = no --out
};

/// `prune`: the protocol per head (or per key/value group), the kept
/// dimensions and judged outputs written as .npy, a table on `out`.
void run_prune(const PruneArgs& a, std::ostream& out, std::ostream& err);

struct CompareArgs {
  CommonArgs common;
  int repeats = 3;
  /// The methods to time, by name; empty = every method but the reference
  /// (which always runs once, untimed, as the oracle).
  std::vector<std::string> methods;
  std::string json_path, csv_path, plot_path;
  PlotTools plot;  ///< checked when plot_path is set
};

/// `compare`: every method timed and measured against the oracle.
void run_compare(const Registry& registry, const CompareArgs& a, PeakMemoryProbe* probe, std::ostream& out,
                 std::ostream& err);

}  // namespace attnkit_eval
