// attnkit-eval's built-in methods (declared in eval/methods.hpp). Compiled once
// into attnkit_eval_core, which the binary and its in-process tests link: the
// float and double instantiations of every kernel live in this file only.

#include <algorithm>
#include <string>
#include <utility>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/prune/prompt.hpp"
#include "eval/methods.hpp"
#include "eval/prune_options.hpp"

namespace attnkit::eval {

// ---------------------------------------------------------------------------
// THE METHODS. Adding a method is one block here, e.g. for a kernel in
// attnkit/attention/flash.hpp (include it at the top of this file):
//
//   {
//     Method m("flash", "tiled exact attention, O(n) extra memory", /*exact=*/true);
//     m.set_kernel([](const auto& q, const auto& k, const auto& v, const AttentionOptions& o,
//                     const MethodParams&) { return flash_attention(q, k, v, o); });
//     r.add(std::move(m));
//   }
//
// A method with parameters declares them as options (flags of `attention`),
// the settings compare sweeps, and optionally a check run before any work:
//
//     m.options = {{"eps", "0.01", "target relative error of approx"}};
//     m.sweep = {{{"eps", "0.1"}}, {{"eps", "0.01"}}, {{"eps", "0.001"}}};
//     m.check = [](const MethodParams& p) { p.positive("eps"); };
//     ... p.positive("eps") inside the kernel lambda reads the value.
// ---------------------------------------------------------------------------
Registry builtin_methods() {
  Registry r;
  {
    Method m("reference", "exact attention in a wider type, row by row (attnkit/attention/reference.hpp)",
             true);
    m.set_kernel([](const auto& q, const auto& k, const auto& v, const AttentionOptions& o,
                    const MethodParams&) { return reference_attention(q, k, v, o); });
    r.add(std::move(m));
  }
  {
    Method m("materialized", "the plain baseline: Q K^T materialised in Scalar, row softmax, times V", true);
    m.set_kernel([](const auto& q, const auto& k, const auto& v, const AttentionOptions& o,
                    const MethodParams&) { return materialized_attention(q, k, v, o); });
    r.add(std::move(m));
  }
  {
    Method m("flash", "fused tiled online-softmax exact kernel, all cores (attnkit/attention/flash.hpp)",
             true);
    m.options = {{"threads", "all", "flash: threads, a count >= 1 or 'all' (default all)"}};
    m.sweep = {{{"threads", "1"}}, {{"threads", "all"}}};
    m.check = [](const MethodParams& p) { flash_threads(p); };
    m.set_kernel(
        [](const auto& q, const auto& k, const auto& v, const AttentionOptions& o, const MethodParams& p) {
          return flash_attention(q, k, v, o, FlashConfig{flash_threads(p)});
        });
    r.add(std::move(m));
  }
  {
    // Every query attends to the whole key set through a pruned key cache whose
    // dimensions the last `window` queries chose (the protocol with N0 = n;
    // `attnkit-eval prune` runs the full protocol with a prompt length).
    Method m("prune",
             "key-dimension pruning: attention over a pruned key cache (attnkit/prune, docs/pruning.md)",
             false);
    m.options = {{"ratio", "0.5", "prune: share of the key dimensions to drop, in [0, 1)"},
                 {"weights", "gram", std::string("prune: dimension weights, ") + prune_weights_names()},
                 {"select", "topk", std::string("prune: selector, ") + prune_selector_names()},
                 {"compensation", "none", std::string("prune: compensation, ") + prune_compensation_names()},
                 {"rope-pairs", "none", "prune: keep rotary pairs together, interleaved | half | none"},
                 {"scale-correction", "off", "prune: rescale kept dimensions by sqrt(D/D'), on | off"},
                 {"window", "32", "prune: the last queries that choose the dimensions"},
                 {"recent", "32", "prune: most recent keys kept at full dimension"}};
    // ThinK, the graph greedy + swap with regression, and the best
    // fixed configuration on LLM-like heads (docs/pruning.md).
    m.sweep = {
        {{"weights", "gram"}, {"select", "topk"}, {"compensation", "none"}},
        {{"weights", "gram"}, {"select", "swap"}, {"compensation", "regression"}},
        {{"weights", "attention"}, {"select", "greedy-remove-literal"}, {"compensation", "regression"}}};
    m.check = [](const MethodParams& p) { parse_prune_protocol(prune_flags(p)); };
    // "ratio=0.5 gram/swap/regression", plus the options that differ from their defaults.
    m.label = [defaults = m.resolve()](const MethodParams& p) {
      std::string s = "ratio=" + p.text("ratio") + " " + p.text("weights") + "/" + p.text("select") + "/" +
                      p.text("compensation");
      for (const char* extra : {"rope-pairs", "scale-correction", "window", "recent"})
        if (p.text(extra) != defaults.text(extra)) s += std::string(" ") + extra + "=" + p.text(extra);
      return s;
    };
    m.set_kernel(
        [](const auto& q, const auto& k, const auto& v, const AttentionOptions& o, const MethodParams& p) {
          const PruneProtocolOptions po = parse_prune_protocol(prune_flags(p));
          PruneOptions opt = po.prune;
          opt.scale = o.scale;
          const auto pruned = prune_prompt(q.bottomRows(std::min(po.window, q.rows())), k, opt);
          return pruned.cache.attention(q, v, o);
        });
    r.add(std::move(m));
  }
  return r;
}

}  // namespace attnkit::eval
