#pragma once

// attnkit-eval: the command-line vocabulary. Every flag whose value names one
// of the library's enums or options is mapped to the library's types HERE
// and nowhere else, with the messages that name the flag and repeat the value
// as typed. The names themselves are the library's (to_string / parse_* next
// to each enum: attnkit/core/mask.hpp, attnkit/prune/config.hpp,
// attnkit/workload/synthetic.hpp); docs/eval.md lists every flag.

#include <string>

#include "attnkit/attention/problem.hpp"
#include "attnkit/io/npy.hpp"
#include "attnkit/prune/protocol.hpp"
#include "attnkit/workload/synthetic.hpp"

namespace attnkit_eval {

/// --mask, --offset, --window, --sinks and --scale as typed ("" = not given).
struct MaskFlags {
  std::string mask = "none";
  std::string offset;
  std::string window;
  std::string sinks;
  std::string scale;
};

/// The attention options the flags describe, validated for n_q queries over
/// n_k keys (attnkit::resolve_mask).
/// \throws UsageError naming the flag and its value.
attnkit::AttentionOptions attention_options(const MaskFlags& f, attnkit::Index n_q, attnkit::Index n_k);

/// "mask causal window 256 sinks 4 offset 0": the mask flags in words.
std::string describe_mask(const MaskFlags& f);

/// --dtype float32|float64. \throws UsageError.
attnkit::NpyDtype dtype_flag(const std::string& text);

/// --workload iid|clustered|llm. \throws UsageError.
attnkit::WorkloadKind workload_flag(const std::string& text);

/// A method option's on|off. \throws UsageError naming `flag`.
bool on_off_flag(const std::string& flag, const std::string& text);

/// The pruning flags as typed, shared by the `prune` subcommand and the
/// `prune` method's options.
struct PruneFlags {
  std::string ratio = "0.5";
  std::string weights = "gram";
  std::string select = "topk";
  std::string compensation = "none";
  std::string rope_pairs = "none";  ///< interleaved | half | none
  bool scale_correction = false;
  std::string query_window = "32";
  std::string recent = "32";
  std::string prompt;  ///< "" = N0 = n
  bool shared_selection = false;
};

/// What the pruning flags select.
struct PruneSettings {
  /// Ratio, configuration, recent, query window (as `window`), prompt.
  attnkit::PruneProtocolOptions protocol;
  /// One selection per key/value head for all its query heads
  /// (attnkit::prune_prompt_shared) instead of one per query head.
  bool shared_selection = false;
};

/// The settings the flags name; checks that need no shapes (a ratio outside
/// [0, 1), a query window < 1, recent < 0, a prompt < 1, unknown names).
/// \throws UsageError naming the flag.
PruneSettings prune_settings(const PruneFlags& f);

/// The checks against the key width D: D' = floor((1 - ratio) D) >= 1, an
/// even D with --rope-pairs, at most attnkit::max_optimal_groups units for
/// --select optimal. \throws UsageError naming the flag.
void check_prune_width(const PruneFlags& f, const PruneSettings& s, attnkit::Index d);

}  // namespace attnkit_eval
