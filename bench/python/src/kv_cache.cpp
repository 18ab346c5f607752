// attnkit.KVCache: attnkit::KVCache<Storage> for Python.
//
// Memory safety. keys and values are read-only numpy views of the cache's
// storage; a view keeps the cache object alive, and while any view (or an
// array derived from one) is alive, operations that could move or overwrite
// the storage (append, reserve, clear) raise BufferError, as bytearray does
// for its exports. Threads: attend runs with the GIL released under a shared
// lock, append / reserve / clear under an exclusive one, so concurrent calls
// from Python threads are safe; no lock holder ever waits for the GIL.

#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <variant>

#include "attnkit/attention/kv_cache.hpp"
#include "bindings.hpp"

namespace attnkit_python {

namespace {

/// Owner of a view's base: the cache object and one export token.
struct ViewOwner {
  py::object cache;
  std::shared_ptr<char> token;
};

DType parse_storage(py::handle dtype) {
  const char* where = "KVCache";
  if (py::isinstance<py::str>(dtype)) {
    const std::string s = dtype.cast<std::string>();
    if (s == "float32") return DType::f32;
    if (s == "float64") return DType::f64;
    if (s == "f16" || s == "float16") return DType::f16;
    if (s == "bf16" || s == "bfloat16") return DType::bf16;
    value_error(where, ": dtype='", s, "' is not one of float32|float64|f16|bf16");
  }
  const py::dtype t = py::dtype::from_args(py::reinterpret_borrow<py::object>(dtype));
  if (t.kind() == 'f' && t.itemsize() == 4) return DType::f32;
  if (t.kind() == 'f' && t.itemsize() == 8) return DType::f64;
  if (t.kind() == 'f' && t.itemsize() == 2) return DType::f16;
  value_error(where, ": dtype=", t.attr("name").cast<std::string>(),
              " is not one of float32|float64|f16|bf16");
}

/// A 1-D token (d,) as the matrix (1 x d); 2-D arrays as they are.
Shape as_rows(const char* where, const char* name, const py::array& a) {
  Shape s(a.shape(), a.shape() + a.ndim());
  check_shape(where, name, s, 1, 2);
  if (s.size() == 1) s.insert(s.begin(), 1);
  return s;
}

class PyKVCache {
 public:
  PyKVCache(Index d, Index d_v, py::handle dtype, Index capacity)
      : storage_(parse_storage(dtype)), cache_(make(storage_, d, d_v, capacity)) {}

  void append(py::handle k, py::handle v) {
    const char* where = "KVCache.append";
    const py::array ka = as_numpy(k, where, "k"), va = as_numpy(v, where, "v");
    const Shape ks = as_rows(where, "k", ka), vs = as_rows(where, "v", va);
    // Read in place when both are float32, float64 or float16 alike;
    // otherwise both are converted once to the cache's compute type.
    DType from = storage_ == DType::f64 ? DType::f64 : DType::f32;
    if (is_float16(ka) && is_float16(va))
      from = DType::f16;
    else if (is_float64(ka) && is_float64(va))
      from = DType::f64;
    else if (is_float32(ka) && is_float32(va))
      from = DType::f32;
    Array kc, vc;
    if (from == DType::f16) {
      kc = to_16bit(ka, DType::f16, where, "k");
      vc = to_16bit(va, DType::f16, where, "v");
    } else if (from == DType::f64) {
      kc = contiguous<double>(ka, where, "k");
      vc = contiguous<double>(va, where, "v");
    } else {
      kc = contiguous<float>(ka, where, "k");
      vc = contiguous<float>(va, where, "v");
    }
    kc.shape = ks;
    vc.shape = vs;
    py::gil_scoped_release nogil;
    std::unique_lock lock(mutex_);
    refuse_if_exported(where);
    std::visit(
        [&](auto& cache) {
          switch (from) {
            case DType::f64:
              cache.append(kc.matrix<double>(), vc.matrix<double>());
              break;
            case DType::f16:
              cache.append(kc.matrix<Eigen::half>(), vc.matrix<Eigen::half>());
              break;
            default:
              cache.append(kc.matrix<float>(), vc.matrix<float>());
          }
        },
        cache_);
  }

  py::object attend(py::handle q, const std::string& mask, std::optional<Index> offset,
                    std::optional<Index> window, Index sinks, std::optional<double> scale, int threads,
                    bool return_lse) const {
    const char* where = "KVCache.attend";
    const attnkit::AttentionOptions options{parse_mask(where, mask, offset, window, sinks), scale};
    attnkit::FlashConfig config;
    config.threads = threads;
    const py::array qa = as_numpy(q, where, "q");
    const bool one = qa.ndim() == 1;
    Shape qs = as_rows(where, "q", qa);
    const Index dv = d_v();
    const auto run = [&](auto compute_tag) -> py::object {
      using C = decltype(compute_tag);
      Array qc = contiguous<C>(qa, where, "q");
      qc.shape = qs;
      py::array_t<C> out = empty<C>(one ? Shape{dv} : Shape{qs[0], dv});
      py::array_t<C> lse = empty<C>(one ? Shape{} : Shape{qs[0]});
      {
        MutableMap<C> o(out.mutable_data(), qs[0], dv);
        Eigen::Map<Vector<C>> l(lse.mutable_data(), qs[0]);
        py::gil_scoped_release nogil;
        std::shared_lock lock(mutex_);
        std::visit(
            [&](const auto& cache) {
              using Cache = std::decay_t<decltype(cache)>;
              if constexpr (std::is_same_v<typename Cache::Compute, C>) {
                record_kernel_pointers(qc.data<C>(), cache.keys().data(), cache.values().data(), o.data(),
                                       l.data());
                cache.attend_into(qc.matrix<C>(), o, l, options, config);
              }
            },
            cache_);
      }
      if (return_lse) return py::make_tuple(out, lse);
      return std::move(out);
    };
    return storage_ == DType::f64 ? run(double{}) : run(float{});
  }

  /// A read-only view of the keys (which = 0) or values (1); bfloat16
  /// storage, which numpy cannot hold, gives a float32 copy.
  py::array view(const py::object& self, int which) const {
    std::shared_lock lock(mutex_);
    return std::visit(
        [&](const auto& cache) -> py::array {
          using S = typename std::decay_t<decltype(cache)>::Scalar;
          const auto m = which == 0 ? cache.keys() : cache.values();
          const Shape shape{m.rows(), m.cols()};
          if constexpr (std::is_same_v<S, Eigen::bfloat16>) {
            return adopt(RowMatrix<float>(m.template cast<float>()), shape);
          } else {
            py::capsule base(new ViewOwner{self, exports_},
                             [](void* p) { delete static_cast<ViewOwner*>(p); });
            py::array a;
            if constexpr (std::is_same_v<S, Eigen::half>)
              a = py::array(py::dtype("float16"), shape, static_cast<const void*>(m.data()), base);
            else
              a = py::array_t<S>(shape, m.data(), base);
            a.attr("setflags")(py::arg("write") = false);
            return a;
          }
        },
        cache_);
  }

  void reserve(Index rows) {
    py::gil_scoped_release nogil;
    std::unique_lock lock(mutex_);
    refuse_if_exported("KVCache.reserve");
    std::visit([&](auto& cache) { cache.reserve(rows); }, cache_);
  }

  void clear() {
    std::unique_lock lock(mutex_);
    refuse_if_exported("KVCache.clear");
    std::visit([](auto& cache) { cache.clear(); }, cache_);
  }

  Index size() const {
    return std::visit([](const auto& cache) { return cache.size(); }, cache_);
  }
  Index d() const {
    return std::visit([](const auto& cache) { return cache.d(); }, cache_);
  }
  Index d_v() const {
    return std::visit([](const auto& cache) { return cache.d_v(); }, cache_);
  }
  Index capacity() const {
    return std::visit([](const auto& cache) { return cache.capacity(); }, cache_);
  }
  Index reallocations() const {
    return std::visit([](const auto& cache) { return cache.reallocations(); }, cache_);
  }
  std::size_t nbytes() const {
    return std::visit([](const auto& cache) { return cache.bytes(); }, cache_);
  }
  std::string dtype() const { return to_string(storage_); }
  long exports() const { return exports_.use_count() - 1; }

 private:
  using Variant = std::variant<attnkit::KVCache<float>, attnkit::KVCache<double>,
                               attnkit::KVCache<Eigen::half>, attnkit::KVCache<Eigen::bfloat16>>;

  static Variant make(DType storage, Index d, Index d_v, Index capacity) {
    switch (storage) {
      case DType::f64:
        return attnkit::KVCache<double>(d, d_v, capacity);
      case DType::f16:
        return attnkit::KVCache<Eigen::half>(d, d_v, capacity);
      case DType::bf16:
        return attnkit::KVCache<Eigen::bfloat16>(d, d_v, capacity);
      default:
        return attnkit::KVCache<float>(d, d_v, capacity);
    }
  }

  void refuse_if_exported(const char* where) const {
    if (const long n = exports(); n > 0)
      throw py::buffer_error(
          concat(where, ": ", n, n == 1 ? " numpy view" : " numpy views",
                 " of keys/values (or arrays derived from them) ", n == 1 ? "is" : "are",
                 " alive; delete them (or keep a .copy()) before the cache's storage can change"));
  }

  DType storage_;
  Variant cache_;
  mutable std::shared_mutex mutex_;
  std::shared_ptr<char> exports_ = std::make_shared<char>();
};

constexpr const char* cache_doc = R"doc(
KVCache(d, d_v, dtype="float32", capacity=256)

A growable key/value cache for decoding (attnkit::KVCache): keys (size, d)
and values (size, d_v) stored row by row in dtype "float32", "float64", "f16"
(IEEE binary16) or "bf16" (bfloat16), appended rows rounded once to it. The
capacity doubles when it runs out. attend() computes in float64 for float64
storage and in float32 otherwise.

keys / values are READ-ONLY VIEWS of the storage (no copy) for float32,
float64 and f16 (a float16 array); for bf16, which numpy cannot hold, a
float32 copy. While a view, or an array derived from it, is alive, append,
reserve and clear raise BufferError (the storage may move); take .copy() to
keep the contents.
)doc";

}  // namespace

void register_caches(py::module_& m) {
  using namespace pybind11::literals;
  py::class_<PyKVCache>(m, "KVCache", cache_doc)
      .def(py::init<Index, Index, py::handle, Index>(), "d"_a, "d_v"_a, "dtype"_a = "float32",
           "capacity"_a = 256)
      .def(
          "append", &PyKVCache::append, "k"_a, "v"_a,
          "Appends tokens: k (n, d) and v (n, d_v), or one token k (d,), v (d_v,). float32, float64 and "
          "float16 "
          "arrays are read in place (others converted once); values are rounded to the cache's dtype. Raises "
          "BufferError while views of keys/values are alive.")
      .def("attend", &PyKVCache::attend,
           "Attention of q (n_q, d) or one query (d,) over every cached token: out (n_q, d_v) or (d_v,) "
           "[, lse (n_q,) or ()]. With mask='causal' and the default offset the queries are the newest n_q "
           "tokens "
           "(append their keys first); with mask='strict' and offset=len(cache) they are the next tokens, "
           "not yet "
           "appended. GIL released.",
           "q"_a, py::kw_only(), "mask"_a = "none", "offset"_a = py::none(), "window"_a = py::none(),
           "sinks"_a = 0, "scale"_a = py::none(), "threads"_a = 0, "return_lse"_a = false)
      .def("reserve", &PyKVCache::reserve, "rows"_a, "Makes room for `rows` tokens without reallocation.")
      .def("clear", &PyKVCache::clear, "Forgets every token; keeps the capacity.")
      .def("__len__", &PyKVCache::size)
      .def_property_readonly("d", &PyKVCache::d)
      .def_property_readonly("d_v", &PyKVCache::d_v)
      .def_property_readonly("dtype", &PyKVCache::dtype, "The storage type: float32, float64, f16 or bf16.")
      .def_property_readonly("capacity", &PyKVCache::capacity)
      .def_property_readonly("reallocations", &PyKVCache::reallocations, "How often the storage has grown.")
      .def_property_readonly("nbytes", &PyKVCache::nbytes, "Bytes of storage held (capacity, not size).")
      .def_property_readonly(
          "keys", [](const py::object& self) { return self.cast<const PyKVCache&>().view(self, 0); },
          "(size, d) read-only view of the keys (bf16: a float32 copy).")
      .def_property_readonly(
          "values", [](const py::object& self) { return self.cast<const PyKVCache&>().view(self, 1); },
          "(size, d_v) read-only view of the values (bf16: a float32 copy).")
      .def_property_readonly("_exports", &PyKVCache::exports, "Test hook: live views of keys/values.");
}

}  // namespace attnkit_python
