// attnkit-eval's command-line vocabulary (declared in flags.hpp).

#include "attnkit-eval/flags.hpp"

#include <stdexcept>

#include "attnkit-eval/errors.hpp"
#include "attnkit-eval/numbers.hpp"
#include "attnkit/core/mask.hpp"
#include "attnkit/prune/config.hpp"
#include "attnkit/prune/optimum.hpp"
#include "attnkit/prune/selection.hpp"

namespace attnkit_eval {

using attnkit::Index;

attnkit::AttentionOptions attention_options(const MaskFlags& f, Index n_q, Index n_k) {
  attnkit::AttentionOptions o;
  const auto kind = attnkit::parse_mask_kind(f.mask);
  if (!kind) throw UsageError("--mask " + f.mask + ": expected " + attnkit::mask_kind_names());
  o.mask.kind = *kind;
  if (!f.offset.empty()) o.mask.offset = parse_integer("--offset", f.offset);
  if (!f.window.empty()) o.mask.window = parse_integer("--window", f.window, 1);
  if (!f.sinks.empty()) {
    o.mask.sinks = parse_integer("--sinks", f.sinks, 0);
    if (o.mask.sinks > n_k)
      throw UsageError("--sinks " + f.sinks + ": must be in [0, n_k] = [0, " + std::to_string(n_k) + "]");
  }
  try {
    attnkit::resolve_mask(o.mask, n_q, n_k);
  } catch (const std::invalid_argument& e) {
    // Window and sinks were checked above: what is left is the offset (given
    // or the default n_k - n_q) against the mask kind.
    throw UsageError((f.offset.empty() ? "--mask " + f.mask : "--offset " + f.offset) + ": " + e.what());
  }
  if (!f.scale.empty()) {
    const double s = parse_real("--scale", f.scale);
    if (!(s > 0)) throw UsageError("--scale " + f.scale + ": must be finite and > 0");
    o.scale = s;
  }
  return o;
}

std::string describe_mask(const MaskFlags& f) {
  std::string s = "mask " + f.mask;
  if (!f.window.empty()) s += " window " + f.window;
  if (!f.sinks.empty()) s += " sinks " + f.sinks;
  if (!f.offset.empty()) s += " offset " + f.offset;
  return s;
}

attnkit::NpyDtype dtype_flag(const std::string& text) {
  for (const attnkit::NpyDtype t : {attnkit::NpyDtype::float32, attnkit::NpyDtype::float64})
    if (text == attnkit::to_string(t)) return t;
  throw UsageError("--dtype " + text + ": expected float32|float64");
}

attnkit::WorkloadKind workload_flag(const std::string& text) {
  const auto kind = attnkit::parse_workload_kind(text);
  if (!kind) throw UsageError("--workload " + text + ": expected iid|clustered|llm");
  return *kind;
}

bool on_off_flag(const std::string& flag, const std::string& text) {
  if (text == "on") return true;
  if (text == "off") return false;
  throw UsageError(flag + " " + text + ": expected on|off");
}

PruneSettings prune_settings(const PruneFlags& f) {
  PruneSettings s;
  attnkit::PruneProtocolOptions& o = s.protocol;
  o.prune.ratio = parse_real("--ratio", f.ratio);
  if (!(o.prune.ratio >= 0 && o.prune.ratio < 1))
    throw UsageError("--ratio " + f.ratio + ": the share of dimensions to drop must be in [0, 1)");
  attnkit::PruneConfig& c = o.prune.config;
  const auto weights = attnkit::parse_prune_weights(f.weights);
  if (!weights) throw UsageError("--weights " + f.weights + ": expected " + attnkit::prune_weights_names());
  const auto selector = attnkit::parse_prune_selector(f.select);
  if (!selector) throw UsageError("--select " + f.select + ": expected " + attnkit::prune_selector_names());
  const auto compensation = attnkit::parse_prune_compensation(f.compensation);
  if (!compensation)
    throw UsageError("--compensation " + f.compensation + ": expected " +
                     attnkit::prune_compensation_names());
  c.weights = *weights;
  c.selector = *selector;
  c.compensation = *compensation;
  if (f.rope_pairs != "none") {
    const auto layout = attnkit::parse_rope_pairs(f.rope_pairs);
    if (!layout)
      throw UsageError("--rope-pairs " + f.rope_pairs + ": expected " + attnkit::rope_pairs_names() +
                       "|none");
    c.rope_pairs = *layout;
  }
  c.scale_correction = f.scale_correction;
  o.window = parse_integer("--query-window", f.query_window, 1);
  o.prune.recent = parse_integer("--recent", f.recent, 0);
  if (!f.prompt.empty()) o.prompt = parse_integer("--prompt", f.prompt, 1);
  s.shared_selection = f.shared_selection;
  return s;
}

void check_prune_width(const PruneFlags& f, const PruneSettings& s, Index d) {
  try {
    static_cast<void>(attnkit::kept_dimension_count(d, s.protocol.prune.ratio));
  } catch (const std::invalid_argument&) {
    throw UsageError("--ratio " + f.ratio + ": keeps no key dimension of D = " + std::to_string(d));
  }
  const bool pairs = s.protocol.prune.config.rope_pairs.has_value();
  if (pairs && d % 2 != 0)
    throw UsageError("--rope-pairs " + f.rope_pairs + ": D = " + std::to_string(d) + " is odd");
  const Index units = pairs ? d / 2 : d;
  if (s.protocol.prune.config.selector == attnkit::PruneSelector::optimal &&
      units > attnkit::max_optimal_groups)
    throw UsageError("--select optimal: enumerates at most " + std::to_string(attnkit::max_optimal_groups) +
                     " units; D = " + std::to_string(d) + " has " + std::to_string(units));
}

}  // namespace attnkit_eval
