// attnkit.topk_attention, attnkit.lsh_attention, attnkit.linear_attention,
// attnkit.approx_attention and their helpers. These library entry points are single-head: the
// bindings run them head by head over the stacked layout of bindings.hpp
// (HeadShape), query head h with key/value head HeadLayout::kv_head(h), with
// the GIL released for the whole loop.

#include <string>
#include <variant>

#include "attnkit/approx/approx_attention.hpp"
#include "attnkit/linear/feature_maps.hpp"
#include "attnkit/linear/linear_attention.hpp"
#include "attnkit/linear/positive_random_features.hpp"
#include "attnkit/sparse/lsh_attention.hpp"
#include "attnkit/sparse/topk.hpp"
#include "bindings.hpp"

namespace attnkit_python {

namespace {

/// Inputs of a head-by-head call in compute type C, outputs allocated.
template <typename C>
struct HeadCall {
  Array q, k, v;
  HeadShape shape;
  py::array_t<C> out, lse;

  ConstMap<C> q_head(Index h) const {
    return ConstMap<C>(q.data<C>() + h * shape.n_q * shape.d, shape.n_q, shape.d);
  }
  ConstMap<C> k_head(Index g) const {
    return ConstMap<C>(k.data<C>() + g * shape.n_k * shape.d, shape.n_k, shape.d);
  }
  ConstMap<C> v_head(Index g) const {
    return ConstMap<C>(v.data<C>() + g * shape.n_k * shape.d_v, shape.n_k, shape.d_v);
  }
  MutableMap<C> out_head(Index h) {
    return MutableMap<C>(out.mutable_data() + h * shape.n_q * shape.d_v, shape.n_q, shape.d_v);
  }
  Eigen::Map<Vector<C>> lse_head(Index h) {
    return Eigen::Map<Vector<C>>(lse.mutable_data() + h * shape.n_q, shape.n_q);
  }
};

/// Converts the inputs and calls f(HeadCall<C>&) with C = float or double.
template <typename F>
py::object with_heads(const char* where, py::handle q, py::handle k, py::handle v, F&& f) {
  const py::array qa = as_numpy(q, where, "q"), ka = as_numpy(k, where, "k"), va = as_numpy(v, where, "v");
  const HeadShape shape =
      head_shape(where, Shape(qa.shape(), qa.shape() + qa.ndim()), Shape(ka.shape(), ka.shape() + ka.ndim()),
                 Shape(va.shape(), va.shape() + va.ndim()));
  const auto run = [&](auto tag) -> py::object {
    using C = decltype(tag);
    HeadCall<C> c{contiguous<C>(qa, where, "q"),  contiguous<C>(ka, where, "k"),
                  contiguous<C>(va, where, "v"),  shape,
                  empty<C>(shape.output_shape()), empty<C>(shape.lead)};
    return f(c);
  };
  return compute_dtype({&qa, &ka, &va}) == DType::f64 ? run(double{}) : run(float{});
}

py::object result(py::array out, py::array lse, bool return_lse) {
  if (return_lse) return py::make_tuple(out, lse);
  return std::move(out);
}

py::object topk_attention(py::handle q, py::handle k, py::handle v, Index top_k, const std::string& mask,
                          std::optional<Index> offset, std::optional<Index> window, Index sinks,
                          std::optional<double> scale, int threads, bool return_lse, bool return_indices) {
  const char* where = "topk_attention";
  if (top_k < 1) value_error(where, ": top_k=", top_k, " must be >= 1");
  const attnkit::AttentionOptions options{parse_mask(where, mask, offset, window, sinks), scale};
  attnkit::FlashConfig config;
  config.threads = threads;
  return with_heads(where, q, k, v, [&](auto& c) -> py::object {
    using C = typename std::decay_t<decltype(c.out)>::value_type;
    const attnkit::HeadLayout layout = c.shape.layout();
    const attnkit::TopkOptions topk{top_k};
    if (!return_indices) {
      py::gil_scoped_release nogil;
      for (Index h = 0; h < layout.q_heads; ++h)
        attnkit::topk_attention_into<C>(c.q_head(h), c.k_head(layout.kv_head(h)), c.v_head(layout.kv_head(h)),
                                        topk, c.out_head(h), c.lse_head(h), options, config);
      return result(c.out, c.lse, return_lse);
    }
    const Index kept = std::max<Index>(1, std::min(top_k, c.shape.n_k));
    Shape index_shape = c.shape.lead;
    index_shape.push_back(kept);
    py::array_t<std::int64_t> indices = empty<std::int64_t>(index_shape);
    {
      py::gil_scoped_release nogil;
      for (Index h = 0; h < layout.q_heads; ++h) {
        const auto s = attnkit::topk_attention_selection<C>(
            c.q_head(h), c.k_head(layout.kv_head(h)), c.v_head(layout.kv_head(h)), topk, options, config);
        c.out_head(h) = s.result.output;
        c.lse_head(h) = s.result.lse;
        MutableMap<std::int64_t>(indices.mutable_data() + h * c.shape.n_q * kept, c.shape.n_q, kept) =
            s.keys.template cast<std::int64_t>();
      }
    }
    if (return_lse) return py::make_tuple(c.out, c.lse, indices);
    return py::make_tuple(c.out, indices);
  });
}

py::object approx_attention(py::handle q, py::handle k, py::handle v, double eps, std::optional<Index> budget,
                            const std::string& mask, std::optional<Index> offset, std::optional<double> scale,
                            int threads, bool return_lse, bool return_stats) {
  const char* where = "approx_attention";
  attnkit::ApproxOptions o;
  o.mask = parse_mask(where, mask, offset, std::nullopt, 0);
  o.scale = scale;
  o.eps = eps;
  o.budget = budget;
  o.threads = threads;
  return with_heads(where, q, k, v, [&](auto& c) -> py::object {
    using C = typename std::decay_t<decltype(c.out)>::value_type;
    const attnkit::HeadLayout layout = c.shape.layout();
    py::array_t<double> bound = empty<double>(c.shape.output_shape());
    double exact = 0, summarised = 0, skipped = 0, worst = 0;
    bool within = true;
    {
      py::gil_scoped_release nogil;
      for (Index h = 0; h < layout.q_heads; ++h) {
        const Index g = layout.kv_head(h);
        const attnkit::ApproxResult<C> r =
            attnkit::approx_attention(c.q_head(h), c.k_head(g), c.v_head(g), o);
        c.out_head(h) = r.output;
        c.lse_head(h) = r.lse;
        MutableMap<double>(bound.mutable_data() + h * c.shape.n_q * c.shape.d_v, c.shape.n_q, c.shape.d_v) =
            r.bound;
        exact += r.stats.exact_keys;
        summarised += r.stats.summarised_keys;
        skipped += r.stats.skipped_keys;
        worst = std::max(worst, r.stats.max_bound_ratio);
        within = within && r.stats.within_eps;
      }
    }
    py::list parts;
    parts.append(c.out);
    if (return_lse) parts.append(c.lse);
    parts.append(bound);
    if (!return_stats) return py::tuple(parts);
    py::dict stats;
    stats["exact_keys"] = exact;
    stats["summarised_keys"] = summarised;
    stats["skipped_keys"] = skipped;
    stats["max_bound_ratio"] = worst;
    stats["within_eps"] = within;
    parts.append(stats);
    return py::tuple(parts);
  });
}

attnkit::LshHashOptions hash_options(const char* where, const std::string& hash, Index buckets, Index rounds,
                                     std::uint64_t seed) {
  attnkit::LshHashOptions o;
  if (hash == attnkit::to_string(attnkit::LshHashKind::angular))
    o.kind = attnkit::LshHashKind::angular;
  else if (hash == attnkit::to_string(attnkit::LshHashKind::simhash))
    o.kind = attnkit::LshHashKind::simhash;
  else
    value_error(where, ": hash='", hash, "' is not one of angular|simhash");
  o.buckets = buckets;
  o.rounds = rounds;
  o.seed = seed;
  return o;
}

py::object lsh_attention(py::handle q, py::handle k, py::handle v, Index buckets, Index rounds,
                         const std::string& hash, std::uint64_t seed, const std::string& fallback,
                         const std::string& mask, std::optional<Index> offset, std::optional<double> scale,
                         bool return_lse) {
  const char* where = "lsh_attention";
  attnkit::LshQueryOptions query;
  query.mask = parse_mask(where, mask, offset, std::nullopt, 0);
  query.scale = scale;
  if (fallback == "last_visible_key")
    query.fallback = attnkit::LshFallback::last_visible_key;
  else if (fallback == "zero_row")
    query.fallback = attnkit::LshFallback::zero_row;
  else
    value_error(where, ": fallback='", fallback, "' is not one of last_visible_key|zero_row");
  const attnkit::LshHashOptions options = hash_options(where, hash, buckets, rounds, seed);
  return with_heads(where, q, k, v, [&](auto& c) -> py::object {
    using C = typename std::decay_t<decltype(c.out)>::value_type;
    const attnkit::HeadLayout layout = c.shape.layout();
    const Index group = layout.q_heads / layout.kv_heads;
    {
      py::gil_scoped_release nogil;
      for (Index g = 0; g < layout.kv_heads; ++g) {
        // Shapes and mask first, so a bad call builds no index (as attnkit::lsh_attention).
        attnkit::make_attention_problem(where, c.q_head(g * group), c.k_head(g), c.v_head(g),
                                        {query.mask, query.scale});
        const attnkit::LshIndex<C> index(c.k_head(g), c.v_head(g), options);
        for (Index h = g * group; h < (g + 1) * group; ++h) {
          const attnkit::AttentionResult<C> r = index.attend(c.q_head(h), query);
          c.out_head(h) = r.output;
          c.lse_head(h) = r.lse;
        }
      }
    }
    return result(c.out, c.lse, return_lse);
  });
}

py::array lsh_buckets(py::handle x, Index buckets, Index rounds, const std::string& hash,
                      std::uint64_t seed) {
  const char* where = "lsh_buckets";
  const attnkit::LshHashOptions options = hash_options(where, hash, buckets, rounds, seed);
  const py::array a = as_numpy(x, where, "x");
  const Shape shape(a.shape(), a.shape() + a.ndim());
  check_shape(where, "x", shape, 1);
  Shape out_shape(shape.begin(), shape.end() - 1);
  out_shape.push_back(rounds);
  const auto run = [&](auto tag) -> py::array {
    using C = decltype(tag);
    const Array xc = contiguous<C>(a, where, "x");
    attnkit::LshCodes codes;
    {
      py::gil_scoped_release nogil;
      codes = attnkit::LshHasher<C>(xc.cols(), options).codes(xc.matrix<C>());
    }
    return adopt(RowMatrix<std::int64_t>(codes.template cast<std::int64_t>()), out_shape);
  };
  return is_float64(a) ? run(double{}) : run(float{});
}

py::object linear_attention(py::handle q, py::handle k, py::handle v, const std::string& feature_map,
                            std::optional<Index> features, std::optional<std::uint64_t> seed,
                            std::optional<bool> orthogonal, std::optional<double> scale,
                            const std::string& mask, std::optional<Index> offset, Index chunk,
                            std::optional<double> denominator_floor, int threads, bool return_lse) {
  const char* where = "linear_attention";
  attnkit::LinearAttentionOptions options;
  options.mask = parse_mask(where, mask, offset, std::nullopt, 0);
  options.chunk = chunk;
  options.denominator_floor = denominator_floor;
  options.threads = threads;
  const bool favor = feature_map == "favor";
  if (!favor && feature_map != "elu" && feature_map != "relu")
    value_error(where, ": feature_map='", feature_map, "' is not one of elu|relu|favor");
  if (!favor) {
    const auto refuse = [&](const char* name, bool given) {
      if (given)
        value_error(where, ": ", name, " is a parameter of feature_map='favor', not of feature_map='",
                    feature_map, "'");
    };
    refuse("features", features.has_value());
    refuse("seed", seed.has_value());
    refuse("orthogonal", orthogonal.has_value());
    refuse("scale", scale.has_value());
  }
  return with_heads(where, q, k, v, [&](auto& c) -> py::object {
    using C = typename std::decay_t<decltype(c.out)>::value_type;
    const attnkit::HeadLayout layout = c.shape.layout();
    const auto heads = [&](const auto& map) {
      py::gil_scoped_release nogil;
      for (Index h = 0; h < layout.q_heads; ++h)
        attnkit::linear_attention_into(c.q_head(h), c.k_head(layout.kv_head(h)), c.v_head(layout.kv_head(h)),
                                       map, c.out_head(h), c.lse_head(h), options);
    };
    if (feature_map == "elu") {
      heads(attnkit::EluFeatureMap{});
    } else if (feature_map == "relu") {
      heads(attnkit::ReluFeatureMap{});
    } else {
      attnkit::PositiveRandomFeatureOptions o;
      o.features = features.value_or(256);
      o.seed = seed.value_or(0);
      o.orthogonal = orthogonal.value_or(true);
      o.scale = scale;
      heads(attnkit::PositiveRandomFeatures<C>(c.shape.d, o));
    }
    return result(c.out, c.lse, return_lse);
  });
}

py::array favor_projection(Index d, Index features, std::uint64_t seed, bool orthogonal) {
  attnkit::PositiveRandomFeatureOptions o;
  o.features = features;
  o.seed = seed;
  o.orthogonal = orthogonal;
  RowMatrix<double> w;
  {
    py::gil_scoped_release nogil;
    w = attnkit::PositiveRandomFeatures<double>(d, o).projection();
  }
  return adopt(std::move(w), Shape{features, d});
}

}  // namespace

void register_sparse(py::module_& m) {
  using namespace pybind11::literals;
  m.def("topk_attention", &topk_attention, R"doc(
Top-k attention: each query attends only to the top_k visible keys with the
largest logits scale q . k (ties: the earlier key), exactly softmax-weighted
over that set; lse is the log-sum-exp over it (so the result merges with
attention over the other keys). Shapes, dtypes and masks (with window and
sinks) as attention(). return_indices=True also returns the kept key
positions (..., n_q, min(top_k, n_k)), int64, ascending, -1 where a row sees
fewer keys: (out, indices) or (out, lse, indices).
)doc",
        "q"_a, "k"_a, "v"_a, "top_k"_a = 64, py::kw_only(), "mask"_a = "none", "offset"_a = py::none(),
        "window"_a = py::none(), "sinks"_a = 0, "scale"_a = py::none(), "threads"_a = 0,
        "return_lse"_a = false, "return_indices"_a = false);
  m.def("approx_attention", &approx_attention, R"doc(
Approximate attention with a proven error bound for every output entry:
returns (out, bound) with |out - exact| <= bound elementwise (float64,
rounding included), or (out, lse, bound) with return_lse=True; with
return_stats=True also a dict (exact_keys, summarised_keys, skipped_keys
summed over rows and heads, max_bound_ratio = max bound / max visible |v|,
within_eps). Certified mode (budget=None): every bound <= eps * max over the
row's keys of |v_c|, eps in (0, 1). Budgeted mode (budget=B): at most B keys
opened exactly per query; the bound is still proven but may exceed eps.
Masks none, causal, strict (no window or sinks); shapes as attention().
)doc",
        "q"_a, "k"_a, "v"_a, py::kw_only(), "eps"_a = 0.01, "budget"_a = py::none(), "mask"_a = "none",
        "offset"_a = py::none(), "scale"_a = py::none(), "threads"_a = 0, "return_lse"_a = false,
        "return_stats"_a = false);
  m.def("lsh_attention", &lsh_attention, R"doc(
LSH bucketed attention: per key/value head, keys hashed into `buckets`
buckets in each of `rounds` rounds (hash="angular" random rotations or
"simhash"; seeded); query i attends exactly to the union of the visible keys
sharing one of its buckets (attnkit.lsh_buckets gives the codes). A query
with no such key: fallback="last_visible_key" (its last visible key alone)
or "zero_row" (zero row, lse -inf). Masks: none, causal, strict with offset
(no window or sinks). buckets=1 is exact attention. Shapes and dtypes as
attention(); the index copies K and V.
)doc",
        "q"_a, "k"_a, "v"_a, py::kw_only(), "buckets"_a = 16, "rounds"_a = 4, "hash"_a = "angular",
        "seed"_a = 0, "fallback"_a = "last_visible_key", "mask"_a = "none", "offset"_a = py::none(),
        "scale"_a = py::none(), "return_lse"_a = false);
  m.def(
      "lsh_buckets", &lsh_buckets,
      "lsh_buckets(x, *, buckets=16, rounds=4, hash='angular', seed=0) -> (..., rounds) int64: the bucket of "
      "every row of x (..., d) in each round, as lsh_attention hashes queries and keys with the same "
      "arguments.",
      "x"_a, py::kw_only(), "buckets"_a = 16, "rounds"_a = 4, "hash"_a = "angular", "seed"_a = 0);
  m.def("linear_attention", &linear_attention, R"doc(
Kernelized linear attention: exp(scale q . k) replaced by phi(q) . phi(k),
O_i = phi(q_i)^T S_i / phi(q_i)^T z_i over the visible keys, in
O(n m (d + d_v)). feature_map="elu" (elu + 1, m = d), "relu" (m = d) or
"favor" (FAVOR+ positive orthogonal random features estimating softmax
attention: features m, seed, orthogonal, scale of the estimated kernel,
default 1/sqrt(d); attnkit.favor_projection gives W). lse = log of the
normaliser. Masks: none, causal, strict with offset (no window or sinks), the
causal ones in chunks of `chunk` rows. A row whose normaliser vanishes gets a
zero row and lse -inf. threads: 0 = every core (chunk-aligned split; results
then differ from one thread within rounding). Shapes and dtypes as
attention().
)doc",
        "q"_a, "k"_a, "v"_a, py::kw_only(), "feature_map"_a = "elu", "features"_a = py::none(),
        "seed"_a = py::none(), "orthogonal"_a = py::none(), "scale"_a = py::none(), "mask"_a = "none",
        "offset"_a = py::none(), "chunk"_a = 64, "denominator_floor"_a = py::none(), "threads"_a = 0,
        "return_lse"_a = false);
  m.def("favor_projection", &favor_projection,
        "favor_projection(d, *, features=256, seed=0, orthogonal=True) -> (features, d) float64: the FAVOR+ "
        "projection W that linear_attention(feature_map='favor') draws with the same arguments "
        "(phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m), x' = sqrt(scale) x).",
        "d"_a, py::kw_only(), "features"_a = 256, "seed"_a = 0, "orthogonal"_a = true);
}

}  // namespace attnkit_python
