// attnkit.attention, attnkit.attention_partial and the overhead helper
// _time_cpp: Python arguments to one FlashCall (flash_call.hpp).

#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "attnkit/attention/merge.hpp"
#include "bindings.hpp"
#include "flash_call.hpp"

namespace attnkit_python {

namespace {

using Policy = std::variant<attnkit::DotProductScore, attnkit::RbfScore, attnkit::CosineScore,
                            attnkit::HyperbolicScore, attnkit::SoftcapScore, attnkit::AlibiScore>;

struct SimilarityArgs {
  std::string name = "dot";
  std::optional<double> tau, curvature, cap, alibi_slope;
};

/// The score policy named by `similarity`, with its parameters; a parameter
/// of another similarity is refused rather than ignored.
Policy parse_similarity(const char* where, const SimilarityArgs& a, DType compute) {
  const std::string& s = a.name;
  const auto only = [&](const char* param, const std::optional<double>& value, bool allowed,
                        const char* owners) {
    if (value && !allowed)
      value_error(where, ": ", param, "=", *value, " is a parameter of similarity=", owners,
                  ", not of similarity='", s, "'");
  };
  only("tau", a.tau, s == "rbf" || s == "cosine" || s == "hyperbolic", "'rbf', 'cosine' or 'hyperbolic'");
  only("curvature", a.curvature, s == "hyperbolic", "'hyperbolic'");
  only("cap", a.cap, s == "softcap", "'softcap'");
  only("alibi_slope", a.alibi_slope, s == "alibi", "'alibi'");
  const double tau = a.tau.value_or(1.0);
  if (s == "dot") return attnkit::DotProductScore{};
  if (s == "rbf") return attnkit::RbfScore{tau};
  if (s == "cosine") return attnkit::CosineScore{tau};
  if (s == "hyperbolic") {
    const double c = a.curvature.value_or(1.0);
    return compute == DType::f64 ? attnkit::hyperbolic_score<double>(c, tau)
                                 : attnkit::hyperbolic_score<float>(c, tau);
  }
  if (s == "softcap") return attnkit::SoftcapScore{a.cap.value_or(attnkit::SoftcapScore{}.cap)};
  if (s == "alibi") {
    // Unset slope: the standard slope of each head within its batch item
    // (HeadShape::layout() gives the library the batch).
    return attnkit::AlibiScore{a.alibi_slope};
  }
  value_error(where, ": similarity='", s, "' is not one of dot|rbf|cosine|hyperbolic|softcap|alibi");
}

/// kv_dtype: None (K and V in the compute type), "bf16" or "f16".
std::optional<DType> parse_kv_dtype(const char* where, const std::optional<std::string>& kv_dtype) {
  if (!kv_dtype) return std::nullopt;
  if (*kv_dtype == "bf16") return DType::bf16;
  if (*kv_dtype == "f16") return DType::f16;
  value_error(where, ": kv_dtype='", *kv_dtype, "' is not one of None|bf16|f16");
}

/// The arrays of a call (kept alive for it) and the call itself, outputs
/// allocated.
struct Prepared {
  Array q, k, v;
  py::array out, lse;
  FlashCall call;
};

template <typename C>
void convert_inputs(const char* where, const py::array& q, const py::array& k, const py::array& v,
                    std::optional<DType> kv, Prepared& p) {
  p.q = contiguous<C>(q, where, "q");
  p.k = kv ? to_16bit(k, *kv, where, "k") : contiguous<C>(k, where, "k");
  p.v = kv ? to_16bit(v, *kv, where, "v") : contiguous<C>(v, where, "v");
  p.out = empty<C>(p.call.shape.output_shape());
  p.lse = empty<C>(p.call.shape.lead);
}

Prepared prepare(const char* where, py::handle q, py::handle k, py::handle v,
                 const std::optional<std::string>& kv_dtype, const attnkit::Mask& mask,
                 std::optional<double> scale, int threads) {
  // The fused kernel checks its thread count; the reference would take a
  // negative one for "all": refused here for both.
  if (threads < 0) value_error(where, ": threads=", threads, " must be >= 0 (0: every core)");
  const py::array qa = as_numpy(q, where, "q"), ka = as_numpy(k, where, "k"), va = as_numpy(v, where, "v");
  const std::optional<DType> kv = parse_kv_dtype(where, kv_dtype);
  Prepared p;
  FlashCall& c = p.call;
  Shape qs(qa.shape(), qa.shape() + qa.ndim()), ks(ka.shape(), ka.shape() + ka.ndim()),
      vs(va.shape(), va.shape() + va.ndim());
  c.shape = head_shape(where, qs, ks, vs);
  // 16-bit K/V storage computes in float32, as the library's KVCache does.
  c.compute = kv ? DType::f32 : compute_dtype({&qa, &ka, &va});
  c.kv = kv.value_or(c.compute);
  if (c.compute == DType::f64)
    convert_inputs<double>(where, qa, ka, va, kv, p);
  else
    convert_inputs<float>(where, qa, ka, va, kv, p);
  c.q = p.q.array.data();
  c.k = p.k.array.data();
  c.v = p.v.array.data();
  c.out = p.out.mutable_data();
  c.lse = p.lse.mutable_data();
  c.options = attnkit::AttentionOptions{mask, scale};
  c.config.threads = threads;
  return p;
}

void run(const Prepared& p, const Policy& policy) {
  std::visit([&](const auto& score) { run_attention(p.call, score); }, policy);
}

py::object attention(py::handle q, py::handle k, py::handle v, const std::string& mask,
                     std::optional<Index> offset, std::optional<Index> window, Index sinks,
                     std::optional<double> scale, const std::string& method, int threads, bool return_lse,
                     const std::string& similarity, std::optional<double> tau,
                     std::optional<double> curvature, std::optional<double> cap,
                     std::optional<double> alibi_slope, const std::optional<std::string>& kv_dtype) {
  const char* where = "attention";
  if (method != "flash" && method != "reference")
    value_error(where, ": method='", method, "' is not one of flash|reference");
  Prepared p =
      prepare(where, q, k, v, kv_dtype, parse_mask(where, mask, offset, window, sinks), scale, threads);
  p.call.reference = method == "reference";
  run(p, parse_similarity(where, {similarity, tau, curvature, cap, alibi_slope}, p.call.compute));
  if (return_lse) return py::make_tuple(p.out, p.lse);
  return p.out;
}

py::tuple attention_partial(py::handle q, py::handle k, py::handle v,
                            const std::optional<std::vector<std::pair<Index, Index>>>& ranges,
                            Index first_position, std::optional<Index> sequence_length,
                            const std::string& mask, std::optional<Index> offset, std::optional<Index> window,
                            Index sinks, std::optional<double> scale, int threads,
                            const std::string& similarity, std::optional<double> tau,
                            std::optional<double> curvature, std::optional<double> cap,
                            std::optional<double> alibi_slope, const std::optional<std::string>& kv_dtype) {
  const char* where = "attention_partial";
  Prepared p =
      prepare(where, q, k, v, kv_dtype, parse_mask(where, mask, offset, window, sinks), scale, threads);
  attnkit::KeySet keys;
  keys.first_position = first_position;
  keys.sequence_length = sequence_length;
  if (ranges)
    for (const auto& [begin, end] : *ranges)
      keys.ranges.push_back(attnkit::KeyRange{begin, end});
  p.call.keys = std::move(keys);
  run(p, parse_similarity(where, {similarity, tau, curvature, cap, alibi_slope}, p.call.compute));
  return py::make_tuple(p.out, p.lse);
}

std::vector<double> time_cpp(py::handle q, py::handle k, py::handle v, const std::string& mask,
                             std::optional<Index> offset, int threads, int repeats,
                             const std::string& clock) {
  const char* where = "_time_cpp";
  if (repeats < 1) value_error(where, ": repeats=", repeats, " must be >= 1");
  if (clock != "wall" && clock != "thread_cpu")
    value_error(where, ": clock='", clock, "' is not one of wall|thread_cpu");
  Prepared p = prepare(where, q, k, v, std::nullopt, parse_mask(where, mask, offset, std::nullopt, 0),
                       std::nullopt, threads);
  run(p, attnkit::DotProductScore{});  // validates and warms up, exactly as attention() would
  return time_attention(p.call, repeats, clock == "thread_cpu");
}

py::tuple merge(py::handle o1, py::handle lse1, py::handle o2, py::handle lse2) {
  const char* where = "merge";
  const py::array a = as_numpy(o1, where, "o1"), la = as_numpy(lse1, where, "lse1"),
                  b = as_numpy(o2, where, "o2"), lb = as_numpy(lse2, where, "lse2");
  const Shape as(a.shape(), a.shape() + a.ndim()), bs(b.shape(), b.shape() + b.ndim()),
      las(la.shape(), la.shape() + la.ndim()), lbs(lb.shape(), lb.shape() + lb.ndim());
  check_shape(where, "o1", as, 1);
  const Shape lead(as.begin(), as.end() - 1);
  if (bs != as)
    value_error(where, ": o1 ", shape_string(as), " and o2 ", shape_string(bs), " must have the same shape");
  if (las != lead || lbs != lead)
    value_error(where, ": lse1 ", shape_string(las), " and lse2 ", shape_string(lbs), " must have the shape ",
                shape_string(lead), " (o1.shape[:-1])");
  const auto run = [&](auto tag) {
    using C = decltype(tag);
    const Array ac = contiguous<C>(a, where, "o1"), lac = contiguous<C>(la, where, "lse1"),
                bc = contiguous<C>(b, where, "o2"), lbc = contiguous<C>(lb, where, "lse2");
    const Index rows = ac.rows();
    // merge_attention_into works on owning results: o1 / lse1 are copied
    // into the result (the inputs are not modified), o2 / lse2 once more.
    attnkit::AttentionResult<C> acc{RowMatrix<C>(ac.matrix<C>()),
                                    Vector<C>(Eigen::Map<const Vector<C>>(lac.data<C>(), rows))};
    {
      py::gil_scoped_release nogil;
      const attnkit::AttentionResult<C> part{RowMatrix<C>(bc.matrix<C>()),
                                             Vector<C>(Eigen::Map<const Vector<C>>(lbc.data<C>(), rows))};
      attnkit::merge_attention_into(acc, part);
    }
    return py::make_tuple(adopt(std::move(acc.output), as), adopt(std::move(acc.lse), lead));
  };
  return compute_dtype({&a, &la, &b, &lb}) == DType::f64 ? run(double{}) : run(float{});
}

constexpr const char* attention_doc = R"doc(
Exact softmax attention, O = softmax(Z + mask) V, over stacked heads.

Shapes: q (..., n_q, d), k (..., n_k, d), v (..., n_k, d_v) with the same
number of axes, >= 2: (n, d) is one head, (heads, n, d) and
(batch, heads, n, d) stack heads (any further leading axes are batch axes).
k and v may have fewer heads than q on axis -3 (grouped-query attention: query
head h of a batch item uses key/value head h // (q_heads // kv_heads), as
PyTorch's enable_gqa and repeat_interleave lay it out). Returns out
(..., n_q, d_v) and, with return_lse=True, also lse (..., n_q), the natural
log-sum-exp of each row's visible logits (-inf for a row that sees no key;
its output row is then zero).

Masks (attnkit's layout, docs/design.md): query row i is token offset + i of
the key sequence, offset defaulting to n_k - n_q (the queries are the LAST
tokens: bottom-right alignment; scaled_dot_product_attention translates
PyTorch's top-left one). mask="none" sees every key; "causal" keys
j <= i + offset; "strict" keys j < i + offset. window=w keeps only each
query's w most recent visible keys, sinks=s keeps the first s keys visible too.

Logits Z: similarity="dot" (scale q . k, scale default 1/sqrt(d)), "rbf"
(-|q - k|^2 / (2 tau)), "cosine" (cos(q, k) / tau), "hyperbolic" (minus the
Poincare-ball distance of curvature -c over tau), "softcap"
(cap tanh(scale q . k / cap)), "alibi" (scale q . k - m |i - j|, m =
alibi_slope, or each head's standard slope when None). rbf, cosine and
hyperbolic take tau instead of scale.

dtype: float64 when any input is float64, float32 otherwise; the output has
that dtype. C-contiguous inputs of that dtype are read in place; others are
converted once. kv_dtype="bf16" / "f16" stores K and V in 16 bits (rounded
once to nearest; a C-contiguous float16 k or v is used in place with "f16")
and computes in float32. method="reference" is the library's oracle (wide
accumulation, one rounding), for checking. threads: 0 = every core. The GIL
is released while the kernel runs. Raises ValueError for bad arguments, with
the library's message.
)doc";

constexpr const char* partial_doc = R"doc(
Attention over a subset of the keys, returning (out, lse) to be merged exactly
with the partials over the other keys (attnkit.merge).

k and v hold the positions [first_position, first_position + n_k) of a key
sequence of sequence_length keys (default first_position + n_k), on which
the mask is resolved; ranges=[(a, b), ...] (sorted, disjoint, inside those
positions) restricts the call to those key positions (default: every row of
k). A row that sees no key of the subset gets a zero row and lse = -inf.
Shapes, dtypes, masks and similarities as attention(); always the fused
kernel.
)doc";

}  // namespace

void register_attention(py::module_& m) {
  using namespace pybind11::literals;
  m.def("attention", &attention, attention_doc, "q"_a, "k"_a, "v"_a, py::kw_only(), "mask"_a = "none",
        "offset"_a = py::none(), "window"_a = py::none(), "sinks"_a = 0, "scale"_a = py::none(),
        "method"_a = "flash", "threads"_a = 0, "return_lse"_a = false, "similarity"_a = "dot",
        "tau"_a = py::none(), "curvature"_a = py::none(), "cap"_a = py::none(), "alibi_slope"_a = py::none(),
        "kv_dtype"_a = py::none());
  m.def("attention_partial", &attention_partial, partial_doc, "q"_a, "k"_a, "v"_a, py::kw_only(),
        "ranges"_a = py::none(), "first_position"_a = 0, "sequence_length"_a = py::none(), "mask"_a = "none",
        "offset"_a = py::none(), "window"_a = py::none(), "sinks"_a = 0, "scale"_a = py::none(),
        "threads"_a = 0, "similarity"_a = "dot", "tau"_a = py::none(), "curvature"_a = py::none(),
        "cap"_a = py::none(), "alibi_slope"_a = py::none(), "kv_dtype"_a = py::none());
  m.def("merge", &merge, R"doc(
Exact merge of two attention results of the same queries over disjoint key
sets: lse = log(e^lse1 + e^lse2), out = e^(lse1 - lse) o1 + e^(lse2 - lse) o2
(the larger lse factored out). o1, o2 (..., d_v), lse1, lse2 (...). A part
with lse = -inf contributes nothing. Returns (out, lse), new arrays.
)doc",
        "o1"_a, "lse1"_a, "o2"_a, "lse2"_a);
  m.def(
      "_time_cpp", &time_cpp,
      "Seconds per call of the fused kernel on these inputs, timed in C++ around the library call alone "
      "(flash_attention_heads_into into a preallocated output; one untimed call first), on the steady clock "
      "(clock='wall') or in CPU time of the calling thread (clock='thread_cpu', time.thread_time's clock): "
      "the "
      "baseline of bench/python/overhead.py.",
      "q"_a, "k"_a, "v"_a, py::kw_only(), "mask"_a = "none", "offset"_a = py::none(), "threads"_a = 0,
      "repeats"_a = 5, "clock"_a = "wall");
  m.def(
      "_kernel_pointers",
      [] {
        const KernelPointers p = last_kernel_pointers();
        return py::dict("q"_a = p.q, "k"_a = p.k, "v"_a = p.v, "out"_a = p.out, "lse"_a = p.lse);
      },
      "Test hook: the data pointers (ints) the last exact-attention kernel call of this thread received.");
}

}  // namespace attnkit_python
