// Key-dimension pruning (attnkit/prune/) for Python: attnkit.prune,
// attnkit.prune_shared, attnkit.PrunedKeyCache and attnkit.prune_protocol.
// Method names are the library's own (attnkit/prune/config.hpp parsers), so
// Python, the C++ API and attnkit-eval spell them alike.

#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>
#include <variant>

#include "attnkit/prune/prompt.hpp"
#include "attnkit/prune/protocol.hpp"
#include "bindings.hpp"

namespace attnkit_python {

namespace {

struct PruneArgs {
  double ratio = 0.5;
  std::string weights = "gram", select = "topk", compensation = "none";
  Index recent = 32;
  std::string weight_keys = "prompt";
  double ridge = 1e-6;
  std::optional<double> scale;
  std::optional<std::string> rope_pairs;
  bool scale_correction = false;
  bool compress_overflow = true;
  std::optional<double> refit_growth = 2.0;
};

attnkit::PruneOptions prune_options(const char* where, const PruneArgs& a) {
  attnkit::PruneOptions o;
  o.ratio = a.ratio;
  const auto weights = attnkit::parse_prune_weights(a.weights);
  if (!weights)
    value_error(where, ": weights='", a.weights, "' is not one of ", attnkit::prune_weights_names());
  const auto selector = attnkit::parse_prune_selector(a.select);
  if (!selector)
    value_error(where, ": select='", a.select, "' is not one of ", attnkit::prune_selector_names());
  const auto compensation = attnkit::parse_prune_compensation(a.compensation);
  if (!compensation)
    value_error(where, ": compensation='", a.compensation, "' is not one of ",
                attnkit::prune_compensation_names());
  o.config.weights = *weights;
  o.config.selector = *selector;
  o.config.compensation = *compensation;
  if (a.rope_pairs) {
    o.config.rope_pairs = attnkit::parse_rope_pairs(*a.rope_pairs);
    if (!o.config.rope_pairs)
      value_error(where, ": rope_pairs='", *a.rope_pairs, "' is not one of None|",
                  attnkit::rope_pairs_names());
  }
  o.config.scale_correction = a.scale_correction;
  o.recent = a.recent;
  if (a.weight_keys == "prompt")
    o.weight_keys = attnkit::WeightKeys::prompt;
  else if (a.weight_keys == "compressed")
    o.weight_keys = attnkit::WeightKeys::compressed;
  else
    value_error(where, ": weight_keys='", a.weight_keys, "' is not one of prompt|compressed");
  o.fit.ridge = a.ridge;
  o.scale = a.scale;
  o.compress_overflow = a.compress_overflow;
  o.refit_growth = a.refit_growth;
  return o;
}

py::array index_array(const std::vector<Index>& v) {
  py::array_t<std::int64_t> a = empty<std::int64_t>(Shape{static_cast<Index>(v.size())});
  std::copy(v.begin(), v.end(), a.mutable_data());
  return std::move(a);
}

py::dict memory_dict(const attnkit::PrunedCacheMemory& m) {
  using namespace pybind11::literals;
  return py::dict("unpruned_bytes"_a = m.unpruned_bytes, "compressed_key_bytes"_a = m.compressed_key_bytes,
                  "window_key_bytes"_a = m.window_key_bytes, "compensation_bytes"_a = m.compensation_bytes,
                  "selection_bytes"_a = m.selection_bytes, "statistics_bytes"_a = m.statistics_bytes,
                  "allocated_key_bytes"_a = m.allocated_key_bytes, "total_bytes"_a = m.total_bytes());
}

/// A 1-D token (d,) as (1, d); 2-D as it is; for queries also (heads, n, d).
Shape token_rows(const char* where, const char* name, const py::array& a, Index max_rank) {
  Shape s(a.shape(), a.shape() + a.ndim());
  check_shape(where, name, s, 1, max_rank);
  if (s.size() == 1) s.insert(s.begin(), 1);
  return s;
}

/// attnkit::PrunedKeyCache<float or double>, with the locking of kv_cache.cpp
/// (queries share, appends exclude; no lock holder waits for the GIL).
class PyPrunedKeyCache {
 public:
  template <typename Scalar>
  explicit PyPrunedKeyCache(attnkit::PrunedKeyCache<Scalar>&& cache) : cache_(std::move(cache)) {}

  bool is_double() const { return cache_.index() == 1; }

  void append(py::handle keys) {
    const char* where = "PrunedKeyCache.append";
    const py::array a = as_numpy(keys, where, "keys");
    const Shape s = token_rows(where, "keys", a, 2);
    const auto run = [&](auto tag) {
      using C = decltype(tag);
      Array k = contiguous<C>(a, where, "keys");
      k.shape = s;
      py::gil_scoped_release nogil;
      std::unique_lock lock(mutex_);
      std::get<attnkit::PrunedKeyCache<C>>(cache_).append(k.matrix<C>());
    };
    is_double() ? run(double{}) : run(float{});
  }

  py::object attention(py::handle q, py::handle v, const std::string& mask, std::optional<Index> offset,
                       std::optional<Index> window, Index sinks, std::optional<double> scale, int threads,
                       bool return_lse) const {
    const char* where = "PrunedKeyCache.attention";
    const attnkit::AttentionOptions options{parse_mask(where, mask, offset, window, sinks), scale};
    attnkit::FlashConfig config;
    config.threads = threads;
    const py::array qa = as_numpy(q, where, "q"), va = as_numpy(v, where, "v");
    const Shape qs = token_rows(where, "q", qa, 3);
    const Shape vs(va.shape(), va.shape() + va.ndim());
    check_shape(where, "v", vs, 2, 2);
    // (n, D) or (d,) is one head; (heads, n, D) runs every head over the cache.
    const Index heads = qs.size() == 3 ? qs[0] : 1, n_q = qs[qs.size() - 2], d_v = vs[1];
    Shape lead(qa.shape(), qa.shape() + qa.ndim() - 1);
    Shape out_shape = lead;
    out_shape.push_back(d_v);
    const auto run = [&](auto tag) -> py::object {
      using C = decltype(tag);
      const Array qc = contiguous<C>(qa, where, "q"), vc = contiguous<C>(va, where, "v");
      py::array_t<C> out = empty<C>(out_shape), lse = empty<C>(lead);
      {
        py::gil_scoped_release nogil;
        std::shared_lock lock(mutex_);
        const auto& cache = std::get<attnkit::PrunedKeyCache<C>>(cache_);
        const Index d = qs.back();
        for (Index h = 0; h < heads; ++h) {
          const attnkit::AttentionResult<C> r = cache.attention(
              ConstMap<C>(qc.data<C>() + h * n_q * d, n_q, d), vc.matrix<C>(), options, config);
          MutableMap<C>(out.mutable_data() + h * n_q * d_v, n_q, d_v) = r.output;
          Eigen::Map<Vector<C>>(lse.mutable_data() + h * n_q, n_q) = r.lse;
        }
      }
      if (return_lse) return py::make_tuple(out, lse);
      return std::move(out);
    };
    return is_double() ? run(double{}) : run(float{});
  }

  py::array logits(py::handle q, std::optional<double> scale) const {
    const char* where = "PrunedKeyCache.logits";
    const py::array qa = as_numpy(q, where, "q");
    const Shape qs = token_rows(where, "q", qa, 2);
    const auto run = [&](auto tag) -> py::array {
      using C = decltype(tag);
      Array qc = contiguous<C>(qa, where, "q");
      qc.shape = qs;
      RowMatrix<C> z;
      {
        py::gil_scoped_release nogil;
        std::shared_lock lock(mutex_);
        z = std::get<attnkit::PrunedKeyCache<C>>(cache_).logits(qc.matrix<C>(), scale);
      }
      const Index cols = z.cols();
      return adopt(std::move(z), qa.ndim() == 1 ? Shape{cols} : Shape{qs[0], cols});
    };
    return is_double() ? run(double{}) : run(float{});
  }

  template <typename F>
  auto read(F&& f) const {
    std::shared_lock lock(mutex_);
    return std::visit(std::forward<F>(f), cache_);
  }

  void refit() {
    py::gil_scoped_release nogil;
    std::unique_lock lock(mutex_);
    std::visit([](auto& c) { c.refit(); }, cache_);
  }

 private:
  std::variant<attnkit::PrunedKeyCache<float>, attnkit::PrunedKeyCache<double>> cache_;
  mutable std::shared_mutex mutex_;
};

/// window queries and prompt keys in one dtype (float64 if either is).
template <typename F>
py::object with_prompt(const char* where, py::handle queries, py::handle keys, Index query_rank, F&& f) {
  const py::array qa = as_numpy(queries, where, "window_queries"), ka = as_numpy(keys, where, "prompt_keys");
  check_shape(where, "window_queries", Shape(qa.shape(), qa.shape() + qa.ndim()), query_rank, query_rank);
  check_shape(where, "prompt_keys", Shape(ka.shape(), ka.shape() + ka.ndim()), 2, 2);
  const auto run = [&](auto tag) {
    using C = decltype(tag);
    return f(contiguous<C>(qa, where, "window_queries"), contiguous<C>(ka, where, "prompt_keys"), tag);
  };
  return compute_dtype({&qa, &ka}) == DType::f64 ? run(double{}) : run(float{});
}

py::object prune_heads(const char* where, py::handle window_queries, py::handle prompt_keys, bool shared,
                       const PruneArgs& args) {
  const attnkit::PruneOptions options = prune_options(where, args);
  return with_prompt(
      where, window_queries, prompt_keys, shared ? 3 : 2, [&](const Array& q, const Array& k, auto tag) {
        using C = decltype(tag);
        const Index heads = shared ? q.shape[0] : 1;
        std::optional<attnkit::PrunedPrompt<C>> pruned;
        {
          py::gil_scoped_release nogil;
          pruned.emplace(shared ? attnkit::prune_prompt_shared(q.matrix<C>(), heads, k.matrix<C>(), options)
                                : attnkit::prune_prompt(q.matrix<C>(), k.matrix<C>(), options));
        }
        py::array kept = index_array(pruned->cache.selection().kept());
        return py::object(py::make_tuple(kept, std::make_unique<PyPrunedKeyCache>(std::move(pruned->cache))));
      });
}

py::dict protocol_dict(const attnkit::PruneProtocolResult<float>* f,
                       const attnkit::PruneProtocolResult<double>* d) {
  using namespace pybind11::literals;
  const auto make = [](const auto& r) {
    return py::dict(
        "kept"_a = index_array(r.selection.kept()), "prompt"_a = r.prompt, "first_judged"_a = r.first_judged,
        "output"_a = adopt(r.output, Shape{r.output.rows(), r.output.cols()}),
        "exact"_a = adopt(r.exact, Shape{r.exact.rows(), r.exact.cols()}), "output_error"_a = r.output_error,
        "logit_rmse"_a = r.logit_rmse, "objective"_a = r.objective, "objective_total"_a = r.objective_total,
        "memory"_a = memory_dict(r.memory));
  };
  return f ? make(*f) : make(*d);
}

py::object prune_protocol(py::handle q, py::handle k, py::handle v, std::optional<Index> prompt, Index window,
                          bool compress_new_keys, const PruneArgs& args) {
  const char* where = "prune_protocol";
  attnkit::PruneProtocolOptions o;
  o.prompt = prompt;
  o.window = window;
  o.prune = prune_options(where, args);
  o.compress_new_keys = compress_new_keys;
  const py::array qa = as_numpy(q, where, "q"), ka = as_numpy(k, where, "k"), va = as_numpy(v, where, "v");
  const Shape qs(qa.shape(), qa.shape() + qa.ndim());
  check_shape(where, "q", qs, 2, 3);
  check_shape(where, "k", Shape(ka.shape(), ka.shape() + ka.ndim()), 2, 2);
  check_shape(where, "v", Shape(va.shape(), va.shape() + va.ndim()), 2, 2);
  const bool shared = qs.size() == 3;
  const auto run = [&](auto tag) -> py::object {
    using C = decltype(tag);
    const Array qc = contiguous<C>(qa, where, "q"), kc = contiguous<C>(ka, where, "k"),
                vc = contiguous<C>(va, where, "v");
    std::vector<attnkit::PruneProtocolResult<C>> results;
    {
      py::gil_scoped_release nogil;
      if (shared)
        results =
            attnkit::run_prune_protocol_shared(qc.matrix<C>(), qs[0], kc.matrix<C>(), vc.matrix<C>(), o);
      else
        results.push_back(attnkit::run_prune_protocol(qc.matrix<C>(), kc.matrix<C>(), vc.matrix<C>(), o));
    }
    py::list out;
    for (const auto& r : results) {
      if constexpr (std::is_same_v<C, double>)
        out.append(protocol_dict(nullptr, &r));
      else
        out.append(protocol_dict(&r, nullptr));
    }
    if (!shared) return out[0];
    return std::move(out);
  };
  return compute_dtype({&qa, &ka, &va}) == DType::f64 ? run(double{}) : run(float{});
}

constexpr const char* prune_doc = R"doc(
Key-dimension pruning decided once after a prompt (attnkit::prune_prompt):
chooses D' = floor((1 - ratio) D) key dimensions from the last prompt queries
window_queries (w, D) over prompt_keys (n0, D), fits the compensation, and
returns (kept, cache): kept the kept dimensions (int64, ascending) and cache a
PrunedKeyCache holding the prompt keys (the last `recent` at full width).
weights: gram|centered|attention; select: topk|greedy-remove|greedy-remain|
greedy-remove-literal|greedy-remain-literal|swap|residual|optimal;
compensation: none|mean|regression; rope_pairs: None|interleaved|half (keep
rotary pairs together). The defaults are ThinK. float64 if either input is
float64, float32 otherwise.
)doc";

constexpr const char* prune_shared_doc = R"doc(
prune() for all the query heads that share one key/value head
(grouped-query attention): window_queries (heads, w, D), one selection for
the group (the heads' weights summed), one cache: (kept, cache).
)doc";

constexpr const char* protocol_doc = R"doc(
The pruning evaluation protocol (attnkit::run_prune_protocol): prune after a
prompt of `prompt` tokens (default n) from its last `window` queries, then
judge the later queries over the pruned cache against exact causal attention.
q, k (n, D), v (n, d_v); q (heads, n, D) runs the shared (GQA) protocol and
returns one dict per head. Dict: kept, prompt, first_judged, output, exact,
output_error (relative Frobenius), logit_rmse, objective, objective_total,
memory.
)doc";

}  // namespace

void register_prune(py::module_& m) {
  using namespace pybind11::literals;
  py::class_<PyPrunedKeyCache>(m, "PrunedKeyCache", R"doc(
A key cache whose older tokens keep only the kept dimensions
(attnkit::PrunedKeyCache), made by prune() / prune_shared(). Tokens are in
sequence order: the compressed part [0, compressed_size) and the full-width
window [compressed_size, len). Attention runs through the fused kernel (two
partials merged exactly). compressed_keys() / window_keys() return copies.
)doc")
      .def(
          "append", &PyPrunedKeyCache::append, "keys"_a,
          "Appends tokens keys (n, D) or (D,) at full width; with compress_overflow the oldest window tokens "
          "beyond `recent` are compressed (and the compensation refitted on schedule).")
      .def("attention", &PyPrunedKeyCache::attention, "q"_a, "v"_a, py::kw_only(), "mask"_a = "none",
           "offset"_a = py::none(), "window"_a = py::none(), "sinks"_a = 0, "scale"_a = py::none(),
           "threads"_a = 0, "return_lse"_a = false,
           "Attention of q (n_q, D), (D,) or (heads, n_q, D) over the cached tokens with values v (len, "
           "d_v): out "
           "q.shape[:-1] + (d_v,) [, lse q.shape[:-1]]. Masks as attnkit.attention (query i is token offset "
           "+ i).")
      .def(
          "logits", &PyPrunedKeyCache::logits, "q"_a, "scale"_a = py::none(),
          "The scaled logits (n_q, len) of q (n_q, D) against every cached token, in the wide type, no mask.")
      .def("refit", &PyPrunedKeyCache::refit, "Refits the compensation on all compressed tokens now.")
      .def(
          "memory",
          [](const PyPrunedKeyCache& c) {
            return c.read([](const auto& x) { return memory_dict(x.memory()); });
          },
          "Exact byte counts: unpruned_bytes (the same tokens at full width), compressed_key_bytes, "
          "window_key_bytes, compensation_bytes, selection_bytes, statistics_bytes, allocated_key_bytes and "
          "total_bytes (everything stored).")
      .def(
          "compressed_keys",
          [](const PyPrunedKeyCache& c) {
            return c.read([](const auto& x) -> py::array {
              const auto v = x.compressed_keys();
              using S = typename std::decay_t<decltype(v)>::Scalar;
              return adopt(RowMatrix<S>(v), Shape{v.rows(), v.cols()});
            });
          },
          "(compressed_size, kept_dim) copy of the stored kept columns.")
      .def(
          "window_keys",
          [](const PyPrunedKeyCache& c) {
            return c.read([](const auto& x) -> py::array {
              const auto v = x.window_keys();
              using S = typename std::decay_t<decltype(v)>::Scalar;
              return adopt(RowMatrix<S>(v), Shape{v.rows(), v.cols()});
            });
          },
          "(window_size, D) copy of the full-width window tokens.")
      .def("__len__",
           [](const PyPrunedKeyCache& c) { return c.read([](const auto& x) { return x.size(); }); })
      .def_property_readonly(
          "compressed_size",
          [](const PyPrunedKeyCache& c) { return c.read([](const auto& x) { return x.compressed_size(); }); })
      .def_property_readonly(
          "window_size",
          [](const PyPrunedKeyCache& c) { return c.read([](const auto& x) { return x.window_size(); }); })
      .def_property_readonly(
          "dim", [](const PyPrunedKeyCache& c) { return c.read([](const auto& x) { return x.dim(); }); })
      .def_property_readonly(
          "kept_dim",
          [](const PyPrunedKeyCache& c) { return c.read([](const auto& x) { return x.kept_dim(); }); })
      .def_property_readonly("kept",
                             [](const PyPrunedKeyCache& c) {
                               return c.read([](const auto& x) { return index_array(x.selection().kept()); });
                             })
      .def_property_readonly(
          "dropped",
          [](const PyPrunedKeyCache& c) {
            return c.read([](const auto& x) { return index_array(x.selection().dropped()); });
          })
      .def_property_readonly(
          "fitted_count",
          [](const PyPrunedKeyCache& c) { return c.read([](const auto& x) { return x.fitted_count(); }); })
      .def_property_readonly("dtype", [](const PyPrunedKeyCache& c) {
        return std::string(c.is_double() ? "float64" : "float32");
      });

  const auto def_prune = [&](const char* name, bool shared, const char* doc) {
    m.def(
        name,
        [shared, name](py::handle q, py::handle k, double ratio, const std::string& weights,
                       const std::string& select, const std::string& compensation, Index recent,
                       const std::string& weight_keys, double ridge, std::optional<double> scale,
                       std::optional<std::string> rope_pairs, bool scale_correction, bool compress_overflow,
                       std::optional<double> refit_growth) {
          return prune_heads(name, q, k, shared,
                             {ratio, weights, select, compensation, recent, weight_keys, ridge, scale,
                              std::move(rope_pairs), scale_correction, compress_overflow, refit_growth});
        },
        doc, "window_queries"_a, "prompt_keys"_a, py::kw_only(), "ratio"_a = 0.5, "weights"_a = "gram",
        "select"_a = "topk", "compensation"_a = "none", "recent"_a = 32, "weight_keys"_a = "prompt",
        "ridge"_a = 1e-6, "scale"_a = py::none(), "rope_pairs"_a = py::none(), "scale_correction"_a = false,
        "compress_overflow"_a = true, "refit_growth"_a = 2.0);
  };
  def_prune("prune", false, prune_doc);
  def_prune("prune_shared", true, prune_shared_doc);

  m.def(
      "prune_protocol",
      [](py::handle q, py::handle k, py::handle v, std::optional<Index> prompt, Index window,
         bool compress_new_keys, double ratio, const std::string& weights, const std::string& select,
         const std::string& compensation, Index recent, const std::string& weight_keys, double ridge,
         std::optional<double> scale, std::optional<std::string> rope_pairs, bool scale_correction,
         std::optional<double> refit_growth) {
        return prune_protocol(q, k, v, prompt, window, compress_new_keys,
                              {ratio, weights, select, compensation, recent, weight_keys, ridge, scale,
                               std::move(rope_pairs), scale_correction, true, refit_growth});
      },
      protocol_doc, "q"_a, "k"_a, "v"_a, py::kw_only(), "prompt"_a = py::none(), "window"_a = 32,
      "compress_new_keys"_a = false, "ratio"_a = 0.5, "weights"_a = "gram", "select"_a = "topk",
      "compensation"_a = "none", "recent"_a = 32, "weight_keys"_a = "prompt", "ridge"_a = 1e-6,
      "scale"_a = py::none(), "rope_pairs"_a = py::none(), "scale_correction"_a = false,
      "refit_growth"_a = 2.0);
}

}  // namespace attnkit_python
