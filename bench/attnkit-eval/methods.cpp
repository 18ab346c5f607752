// attnkit-eval's method registry and built-in methods (declared in
// methods.hpp). Compiled once into attnkit_eval_core, which the binary and
// its in-process tests link: the float and double instantiations of every
// kernel live in this file only.

#include "attnkit-eval/methods.hpp"

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>

#include "attnkit-eval/errors.hpp"
#include "attnkit-eval/flags.hpp"
#include "attnkit-eval/numbers.hpp"
#include "attnkit-eval/scored.hpp"
#include "attnkit/approx/approx_attention.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/heads.hpp"
#include "attnkit/detail/parallel.hpp"
#include "attnkit/linear/feature_maps.hpp"
#include "attnkit/linear/linear_attention.hpp"
#include "attnkit/linear/positive_random_features.hpp"
#include "attnkit/prune/prompt.hpp"
#include "attnkit/sparse/lsh_attention.hpp"
#include "materialized.hpp"

namespace attnkit_eval {

using attnkit::AttentionOptions;
using attnkit::HeadLayout;

// --- MethodParams, Method, Registry -----------------------------------------

void MethodParams::set(const std::string& name, const std::string& value) {
  for (auto& [k, v] : values_)
    if (k == name) {
      v = value;
      return;
    }
  values_.emplace_back(name, value);
}

const std::string* MethodParams::find(const std::string& name) const {
  for (const auto& [k, v] : values_)
    if (k == name) return &v;
  return nullptr;
}

const std::string& MethodParams::text(const std::string& name) const {
  if (const std::string* v = find(name)) return *v;
  throw UsageError("--" + name + ": no such parameter");
}

double MethodParams::number(const std::string& name) const {
  return parse_real("--" + name, text(name));
}

double MethodParams::positive(const std::string& name) const {
  const double x = number(name);
  if (!(x > 0)) throw UsageError("--" + name + " " + text(name) + ": must be > 0");
  return x;
}

Index MethodParams::count(const std::string& name) const {
  return parse_integer("--" + name, text(name), 1);
}

std::string MethodParams::to_string() const {
  std::string s;
  for (const auto& [k, v] : values_)
    s += (s.empty() ? "" : " ") + k + "=" + v;
  return s.empty() ? "-" : s;
}

MethodParams Method::resolve(const MethodParams& given) const {
  MethodParams p;
  for (const MethodOption& o : options)
    p.set(o.name, given.has(o.name) ? given.text(o.name) : o.default_value);
  return p;
}

std::vector<MethodParams> Method::compare_settings() const {
  if (sweep.empty()) return {resolve()};
  std::vector<MethodParams> out;
  for (const MethodParams& s : sweep)
    out.push_back(resolve(s));
  return out;
}

void Registry::add(Method m) {
  if (find(m.name)) throw std::logic_error("attnkit-eval: method '" + m.name + "' registered twice");
  if (!m.run_float || !m.run_double)
    throw std::logic_error("attnkit-eval: method '" + m.name + "' has no kernel");
  for (const MethodOption& o : m.options)
    for (const Method& other : methods_)
      for (const MethodOption& oo : other.options)
        if (oo.name == o.name && oo.help != o.help)
          throw std::logic_error("attnkit-eval: option --" + o.name + " of method '" + m.name +
                                 "' is also an option of '" + other.name + "' with another meaning");
  methods_.push_back(std::move(m));
}

const Method* Registry::find(const std::string& name) const {
  for (const Method& m : methods_)
    if (m.name == name) return &m;
  return nullptr;
}

std::string Registry::names() const {
  std::string s;
  for (const Method& m : methods_)
    s += (s.empty() ? "" : ", ") + m.name;
  return s;
}

void check_scoring(const Method& m, const Scoring& scoring) {
  if (scoring.is_dot() || m.similarities) return;
  throw UsageError(scoring.flag() + ": method '" + m.name +
                   "' computes the dot-product score only (reference, flash and topk take every similarity)");
}

// --- the built-in methods' parameters ----------------------------------------

namespace {

/// flash's --threads: "all" (0 for FlashConfig) or a count in [1, flash_max_threads].
int flash_threads(const MethodParams& p) {
  if (p.text("threads") == "all") return 0;
  return static_cast<int>(parse_integer("--threads", p.text("threads"), 1, attnkit::flash_max_threads));
}

/// approx's --budget: "none" (certified mode) or a key count >= 1.
std::optional<Index> approx_budget(const MethodParams& p) {
  if (p.text("budget") == "none") return std::nullopt;
  return parse_integer("--budget", p.text("budget"), 1);
}

/// approx's --eps, in (0, 1).
double approx_eps(const MethodParams& p) {
  const double e = p.number("eps");
  if (!(e > 0 && e < 1)) throw UsageError("--eps " + p.text("eps") + ": must be in (0, 1)");
  return e;
}

/// approx on all heads, head by head (its index is per key/value head, but
/// each query head has its own queries), with the bound stacked like the
/// output.
template <typename Scalar>
MethodResult<Scalar> approx_all_heads(const ConstRef<Scalar>& q, const ConstRef<Scalar>& k,
                                      const ConstRef<Scalar>& v, const RunContext& ctx,
                                      const MethodParams& p) {
  const HeadLayout& heads = ctx.heads;
  attnkit::ApproxOptions ao;
  ao.mask = ctx.options.mask;
  ao.scale = ctx.options.scale;
  ao.eps = approx_eps(p);
  ao.budget = approx_budget(p);
  ao.threads = 0;
  const Index n_q = q.rows() / heads.q_heads, n_k = k.rows() / heads.kv_heads;
  attnkit::AttentionResult<Scalar> r{attnkit::RowMatrix<Scalar>(q.rows(), v.cols()),
                                     attnkit::Vector<Scalar>(q.rows())};
  attnkit::RowMatrix<double> bound(q.rows(), v.cols());
  for (Index h = 0; h < heads.q_heads; ++h) {
    const Index g = heads.kv_head(h);
    const attnkit::ApproxResult<Scalar> one = attnkit::approx_attention(
        q.middleRows(h * n_q, n_q), k.middleRows(g * n_k, n_k), v.middleRows(g * n_k, n_k), ao);
    r.output.middleRows(h * n_q, n_q) = one.output;
    r.lse.segment(h * n_q, n_q) = one.lse;
    bound.middleRows(h * n_q, n_q) = one.bound;
  }
  MethodResult<Scalar> res(std::move(r));
  res.bound = std::move(bound);
  return res;
}

/// The prune method's options as the pruning flags.
PruneFlags prune_flags(const MethodParams& p) {
  PruneFlags f;
  f.ratio = p.text("ratio");
  f.weights = p.text("weights");
  f.select = p.text("select");
  f.compensation = p.text("compensation");
  f.rope_pairs = p.text("rope-pairs");
  f.scale_correction = on_off_flag("--scale-correction", p.text("scale-correction"));
  f.query_window = p.text("query-window");
  f.recent = p.text("recent");
  f.shared_selection = on_off_flag("--shared-selection", p.text("shared-selection"));
  return f;
}

/// The prune method on all heads: per query head (or, with shared
/// selection, per key/value head for its group) the last min(W, n_q) queries
/// choose the dimensions over all n_k keys, and the head's queries attend
/// through the pruned cache (the fused kernel). The caches are built and
/// used in parallel, one per thread at a time (each pruning is sequential
/// work; a single cache uses every thread for its attention instead).
/// cache_bytes: every pruned cache's memory().total_bytes() plus V, kept once
/// per key/value head.
template <typename Scalar>
MethodResult<Scalar> prune_all_heads(const ConstRef<Scalar>& q, const ConstRef<Scalar>& k,
                                     const ConstRef<Scalar>& v, const RunContext& ctx,
                                     const MethodParams& p) {
  const HeadLayout& heads = ctx.heads;
  const AttentionOptions& o = ctx.options;
  const PruneSettings s = prune_settings(prune_flags(p));
  attnkit::PruneOptions opt = s.protocol.prune;
  opt.scale = o.scale;
  const Index n_q = q.rows() / heads.q_heads, n_k = k.rows() / heads.kv_heads;
  const Index w = std::min(s.protocol.window, n_q);
  const Index group = heads.q_heads / heads.kv_heads;
  // One cache per unit: a query head, or a key/value head's group.
  const Index units = s.shared_selection ? heads.kv_heads : heads.q_heads;
  const Index heads_per_unit = s.shared_selection ? group : 1;
  const attnkit::FlashConfig config{units > 1 ? 1 : 0};
  attnkit::AttentionResult<Scalar> r{attnkit::RowMatrix<Scalar>(q.rows(), v.cols()),
                                     attnkit::Vector<Scalar>(q.rows())};
  std::vector<std::size_t> key_bytes(static_cast<std::size_t>(units), 0);
  std::vector<std::exception_ptr> failures(static_cast<std::size_t>(units));
  ATTNKIT_PRAGMA(omp parallel for schedule(dynamic, 1) if (units > 1))
  for (Index u = 0; u < units; ++u) {
    try {
      const Index h0 = u * heads_per_unit, g = heads.kv_head(h0);
      attnkit::RowMatrix<Scalar> windows(heads_per_unit * w, q.cols());
      for (Index i = 0; i < heads_per_unit; ++i)
        windows.middleRows(i * w, w) = q.middleRows((h0 + i) * n_q + n_q - w, w);
      const auto kg = k.middleRows(g * n_k, n_k);
      const auto pruned = heads_per_unit == 1
                              ? attnkit::prune_prompt(windows, kg, opt)
                              : attnkit::prune_prompt_shared(windows, heads_per_unit, kg, opt);
      key_bytes[static_cast<std::size_t>(u)] = pruned.cache.memory().total_bytes();
      for (Index h = h0; h < h0 + heads_per_unit; ++h) {
        const attnkit::AttentionResult<Scalar> one =
            pruned.cache.attention(q.middleRows(h * n_q, n_q), v.middleRows(g * n_k, n_k), o, config);
        r.output.middleRows(h * n_q, n_q) = one.output;
        r.lse.segment(h * n_q, n_q) = one.lse;
      }
    } catch (...) {
      failures[static_cast<std::size_t>(u)] = std::current_exception();
    }
  }
  for (const std::exception_ptr& e : failures)
    if (e) std::rethrow_exception(e);
  std::size_t bytes = sizeof(Scalar) * static_cast<std::size_t>(v.size());
  for (const std::size_t b : key_bytes)
    bytes += b;
  return {std::move(r), bytes};
}

}  // namespace

// ---------------------------------------------------------------------------
// THE METHODS. Adding a method is one block here, e.g. for a kernel of
// attnkit/attention/ that takes stacked heads (include it at the top):
//
//   {
//     Method m("flash", "tiled exact attention, O(n) extra memory", /*exact=*/true);
//     m.set_kernel([](const auto& q, const auto& k, const auto& v, const RunContext& ctx,
//                     const MethodParams&) {
//       return attnkit::flash_attention_heads(q, k, v, ctx.heads, ctx.options);
//     });
//     r.add(std::move(m));
//   }
//
// or, for a method that works one head at a time, wrap its body in per_head:
//
//     m.set_kernel(per_head([](const auto& q, const auto& k, const auto& v, const AttentionOptions& o,
//                              const MethodParams& p) { return my_attention(q, k, v, o); }));
//
// A method with parameters declares them as options (flags of `attention`),
// the settings compare sweeps, and optionally checks run before any work:
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
    m.similarities = true;
    m.set_kernel([](const auto& q, const auto& k, const auto& v, const RunContext& ctx, const MethodParams&) {
      return run_scored(ScoredCall{ScoredMethod::reference, 0, 0}, q, k, v, ctx);
    });
    r.add(std::move(m));
  }
  {
    Method m("materialized", "the plain baseline: Q K^T materialised in Scalar, row softmax, times V", true);
    m.set_kernel(
        per_head([](const auto& q, const auto& k, const auto& v, const AttentionOptions& o,
                    const MethodParams&) { return attnkit::bench::materialized_attention(q, k, v, o); }));
    r.add(std::move(m));
  }
  {
    Method m("flash",
             "fused tiled online-softmax exact kernel, all heads in one call (attnkit/attention/heads.hpp)",
             true);
    m.options = {{"threads", "all", "flash: threads, a count >= 1 or 'all' (default all)"}};
    m.sweep = {{{"threads", "1"}}, {{"threads", "all"}}};
    m.check = [](const MethodParams& p) { flash_threads(p); };
    m.similarities = true;
    m.set_kernel(
        [](const auto& q, const auto& k, const auto& v, const RunContext& ctx, const MethodParams& p) {
          using Scalar = typename std::decay_t<decltype(q)>::Scalar;
          MethodResult<Scalar> res(
              run_scored(ScoredCall{ScoredMethod::flash, flash_threads(p), 0}, q, k, v, ctx));
          // With --kv-dtype bf16|f16 flash keeps K and V in 16 bits.
          if (ctx.kv16) res.cache_bytes = 2 * static_cast<std::size_t>(k.size() + v.size());
          return res;
        });
    r.add(std::move(m));
  }
  {
    // Every query attends to all keys through a pruned key cache whose
    // dimensions the last `query-window` queries chose (the protocol with
    // N0 = n; `attnkit-eval prune` runs the full protocol with a prompt).
    Method m("prune",
             "key-dimension pruning: attention over a pruned key cache (attnkit/prune, docs/pruning.md)",
             false);
    m.needs_finite_inputs = true;
    m.options = {
        {"ratio", "0.5", "prune: share of the key dimensions to drop, in [0, 1)"},
        {"weights", "gram", std::string("prune: dimension weights, ") + attnkit::prune_weights_names()},
        {"select", "topk", std::string("prune: selector, ") + attnkit::prune_selector_names()},
        {"compensation", "none", std::string("prune: compensation, ") + attnkit::prune_compensation_names()},
        {"rope-pairs", "none", "prune: keep rotary pairs together, interleaved | half | none"},
        {"scale-correction", "off", "prune: rescale kept dimensions by sqrt(D/D'), on | off"},
        {"query-window", "32", "prune: the last queries that choose the dimensions"},
        {"recent", "32", "prune: most recent keys kept at full dimension"},
        {"shared-selection", "off",
         "prune: one selection per key/value head from all its query heads' windows, on | off"}};
    // ThinK, greedy + swap with regression, and the best fixed configuration
    // on LLM-like heads (docs/pruning.md).
    m.sweep = {
        {{"weights", "gram"}, {"select", "topk"}, {"compensation", "none"}},
        {{"weights", "gram"}, {"select", "swap"}, {"compensation", "regression"}},
        {{"weights", "attention"}, {"select", "greedy-remove-literal"}, {"compensation", "regression"}}};
    m.check = [](const MethodParams& p) { prune_settings(prune_flags(p)); };
    m.check_shape = [](const MethodParams& p, const ProblemShape& shape) {
      const PruneFlags f = prune_flags(p);
      const PruneSettings s = prune_settings(f);
      check_prune_width(f, s, shape.d);
      const Index w = std::min(s.protocol.window, shape.n_q);
      if (w > shape.n_k)
        throw UsageError("--query-window " + f.query_window + ": the last " + std::to_string(w) +
                         " queries choose the dimensions over the keys, but there are only n_k = " +
                         std::to_string(shape.n_k));
    };
    // "ratio=0.5 gram/swap/regression", plus the options that differ from their defaults.
    m.label = [defaults = m.resolve()](const MethodParams& p) {
      std::string s = "ratio=" + p.text("ratio") + " " + p.text("weights") + "/" + p.text("select") + "/" +
                      p.text("compensation");
      for (const char* extra :
           {"rope-pairs", "scale-correction", "query-window", "recent", "shared-selection"})
        if (p.text(extra) != defaults.text(extra)) s += std::string(" ") + extra + "=" + p.text(extra);
      return s;
    };
    m.set_kernel([](const auto& q, const auto& k, const auto& v, const RunContext& ctx,
                    const MethodParams& p) { return prune_all_heads(q, k, v, ctx, p); });
    r.add(std::move(m));
  }
  {
    Method m(
        "topk",
        "exact top-k attention: each query's k largest logits, softmax over them (attnkit/sparse/topk.hpp)",
        false);
    m.similarities = true;
    m.options = {{"topk", "64", "topk: keys kept per query, >= 1"}};
    // compare's settings are kept few: `bash bench/run.sh` (every method on
    // the built-in workload) is the README's main job and must stay quick.
    m.sweep = {{{"topk", "32"}}, {{"topk", "128"}}};
    m.check = [](const MethodParams& p) { p.count("topk"); };
    m.set_kernel(
        [](const auto& q, const auto& k, const auto& v, const RunContext& ctx, const MethodParams& p) {
          return run_scored(ScoredCall{ScoredMethod::topk, 0, p.count("topk")}, q, k, v, ctx);
        });
    r.add(std::move(m));
  }
  {
    // Kernelized linear attention: softmax's kernel replaced by a feature
    // map's inner product (docs/linear.md).
    Method m("linear",
             "kernelized linear attention, O(n m d): elu+1, relu or FAVOR+ features (attnkit/linear)", false);
    m.options = {{"map", "elu", "linear: feature map, elu | relu | favor"},
                 {"features", "256", "linear: random features m of --map favor, >= 1"}};
    m.sweep = {{{"map", "elu"}}, {{"map", "relu"}}, {{"map", "favor"}}};
    m.check = [](const MethodParams& p) {
      const std::string& map = p.text("map");
      if (map != "elu" && map != "relu" && map != "favor")
        throw UsageError("--map " + map + ": expected elu|relu|favor");
      p.count("features");
    };
    m.label = [](const MethodParams& p) {
      return "map=" + p.text("map") + (p.text("map") == "favor" ? " features=" + p.text("features") : "");
    };
    m.set_kernel(per_head([](const auto& q, const auto& k, const auto& v, const AttentionOptions& o,
                             const MethodParams& p) {
      using Scalar = typename std::decay_t<decltype(q)>::Scalar;
      attnkit::LinearAttentionOptions lo;
      lo.mask = o.mask;
      lo.threads = 0;
      if (o.mask.window || o.mask.sinks != 0)  // named by the flags, not by the library's option
        throw UsageError("--window/--sinks: linear attention's prefix state covers whole prefixes");
      const std::string& map = p.text("map");
      if (map == "elu") return attnkit::linear_attention(q, k, v, attnkit::EluFeatureMap{}, lo);
      if (map == "relu") return attnkit::linear_attention(q, k, v, attnkit::ReluFeatureMap{}, lo);
      attnkit::PositiveRandomFeatureOptions fo;
      fo.features = p.count("features");
      fo.seed = 1;
      fo.scale = o.scale;
      return attnkit::linear_attention(q, k, v, attnkit::PositiveRandomFeatures<Scalar>(q.cols(), fo), lo);
    }));
    r.add(std::move(m));
  }
  {
    Method m("lsh",
             "LSH bucketed attention: each query attends to the keys sharing a SimHash bucket in any round "
             "(attnkit/sparse/lsh_attention.hpp)",
             false);
    m.options = {{"rounds", "4", "lsh: hash rounds L, >= 1"},
                 {"bits", "4", "lsh: SimHash bits per round (2^bits buckets), in [0, 30]"}};
    m.sweep = {{{"rounds", "4"}, {"bits", "3"}}};
    m.check = [](const MethodParams& p) {
      p.count("rounds");
      parse_integer("--bits", p.text("bits"), 0, 30);
    };
    m.set_kernel(per_head(
        [](const auto& q, const auto& k, const auto& v, const AttentionOptions& o, const MethodParams& p) {
          if (o.mask.window || o.mask.sinks != 0)
            throw UsageError("--window/--sinks: LSH attention supports none, causal and strict masks only");
          attnkit::LshAttentionOptions lo;
          lo.hash.kind = attnkit::LshHashKind::simhash;
          lo.hash.buckets = Index{1} << parse_integer("--bits", p.text("bits"), 0, 30);
          lo.hash.rounds = p.count("rounds");
          lo.hash.seed = 1;
          lo.mask = o.mask;
          lo.scale = o.scale;
          return attnkit::lsh_attention(q, k, v, lo);
        }));
    r.add(std::move(m));
  }
  {
    // Approximate attention with a bound it proves per output entry
    // (docs/approx.md): certified (--eps) or budgeted (--budget).
    Method m("approx",
             "approximate attention with a proven per-entry error bound, certified (--eps) or budgeted "
             "(--budget) (attnkit/approx, docs/approx.md)",
             false);
    m.reports_bound = true;
    m.options = {
        {"eps", "0.01", "approx: target bound eps * max|v| per column, in (0, 1)"},
        {"budget", "none", "approx: keys opened exactly per query (budgeted mode), or none (certified)"}};
    m.sweep = {{{"eps", "0.01"}}, {{"eps", "0.01"}, {"budget", "256"}}};
    m.check = [](const MethodParams& p) {
      approx_eps(p);
      approx_budget(p);
    };
    m.label = [](const MethodParams& p) {
      return p.text("budget") == "none" ? "certified eps=" + p.text("eps")
                                        : "budgeted budget=" + p.text("budget") + " eps=" + p.text("eps");
    };
    m.set_kernel([](const auto& q, const auto& k, const auto& v, const RunContext& ctx,
                    const MethodParams& p) { return approx_all_heads(q, k, v, ctx, p); });
    r.add(std::move(m));
  }
  return r;
}

}  // namespace attnkit_eval
