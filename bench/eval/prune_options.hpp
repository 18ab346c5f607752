#pragma once

// attnkit-eval: the pruning flags (seed note 000, docs/pruning.md), shared by
// the `prune` subcommand and the `prune` method of `attention` and `compare`.
// Names are exactly the library's (attnkit/prune/config.hpp); every bad value
// is a std::invalid_argument naming the flag (exit code 2).

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

#include "attnkit/prune/config.hpp"
#include "attnkit/prune/optimum.hpp"
#include "attnkit/prune/protocol.hpp"
#include "attnkit/prune/selection.hpp"

namespace attnkit::eval {

/// The pruning flags as typed (strings, so both CLI11 and MethodParams feed them).
struct PruneFlags {
  std::string ratio = "0.5";
  std::string weights = "gram";
  std::string select = "topk";
  std::string compensation = "none";
  std::string rope_pairs = "none";  ///< interleaved | half | none
  bool scale_correction = false;
  std::string window = "32";
  std::string recent = "32";
  std::string prompt;  ///< empty: N0 = n
};

namespace detail {

inline double parse_number(const std::string& flag, const std::string& text) {
  std::size_t used = 0;
  double x = std::nan("");
  try {
    x = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || !std::isfinite(x))
    throw std::invalid_argument("--" + flag + " " + text + ": not a finite number");
  return x;
}

inline Index parse_count(const std::string& flag, const std::string& text, Index min) {
  const double x = parse_number(flag, text);
  if (!(x == std::floor(x) && x >= static_cast<double>(min) && x < 9e15))
    throw std::invalid_argument("--" + flag + " " + text + ": must be an integer >= " + std::to_string(min));
  return static_cast<Index>(x);
}

}  // namespace detail

/// The PruneConfig the flags name.
/// \throws std::invalid_argument naming the flag and the accepted names.
inline PruneConfig parse_prune_config(const PruneFlags& f) {
  PruneConfig c;
  const auto w = parse_prune_weights(f.weights);
  if (!w) throw std::invalid_argument("--weights " + f.weights + ": expected " + prune_weights_names());
  const auto s = parse_prune_selector(f.select);
  if (!s) throw std::invalid_argument("--select " + f.select + ": expected " + prune_selector_names());
  const auto comp = parse_prune_compensation(f.compensation);
  if (!comp)
    throw std::invalid_argument("--compensation " + f.compensation + ": expected " +
                                prune_compensation_names());
  c.weights = *w;
  c.selector = *s;
  c.compensation = *comp;
  if (f.rope_pairs != "none") {
    const auto r = parse_rope_pairs(f.rope_pairs);
    if (!r)
      throw std::invalid_argument("--rope-pairs " + f.rope_pairs + ": expected " + rope_pairs_names() +
                                  " or none");
    c.rope_pairs = *r;
  }
  c.scale_correction = f.scale_correction;
  return c;
}

/// The protocol options the flags describe (docs/pruning.md, "protocol").
/// \throws std::invalid_argument naming the flag: a ratio outside [0, 1), a
///         window < 1, recent < 0, a prompt < 1, or a bad name.
inline PruneProtocolOptions parse_prune_protocol(const PruneFlags& f) {
  PruneProtocolOptions o;
  o.prune.ratio = detail::parse_number("ratio", f.ratio);
  if (!(o.prune.ratio >= 0 && o.prune.ratio < 1))
    throw std::invalid_argument("--ratio " + f.ratio + ": the share of dimensions to drop must be in [0, 1)");
  o.prune.config = parse_prune_config(f);
  o.window = detail::parse_count("window", f.window, 1);
  o.prune.recent = detail::parse_count("recent", f.recent, 0);
  if (!f.prompt.empty()) o.prompt = detail::parse_count("prompt", f.prompt, 1);
  return o;
}

}  // namespace attnkit::eval
