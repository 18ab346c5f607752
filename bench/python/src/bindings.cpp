// Shared pieces of the Python bindings (see bindings.hpp).

#include "bindings.hpp"

#include <Eigen/Core>

namespace attnkit_python {

namespace {

constexpr int npy_aligned = py::detail::npy_api::NPY_ARRAY_ALIGNED_;

bool usable_in_place(const py::array& a) {
  return (a.flags() & py::array::c_style) != 0 && (a.flags() & npy_aligned) != 0;
}

Shape shape_of(const py::array& a) {
  Shape s(static_cast<std::size_t>(a.ndim()));
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = a.shape(static_cast<py::ssize_t>(i));
  return s;
}

thread_local KernelPointers last_pointers;

std::string dtype_name(const py::dtype& t) {
  return py::str(t.attr("name")).cast<std::string>();
}

}  // namespace

const char* to_string(DType t) {
  switch (t) {
    case DType::f32:
      return "float32";
    case DType::f64:
      return "float64";
    case DType::f16:
      return "f16";
    case DType::bf16:
      return "bf16";
  }
  return "?";
}

std::string shape_string(const Shape& s) {
  std::ostringstream os;
  os << '(';
  for (std::size_t i = 0; i < s.size(); ++i)
    os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

Index Array::rows() const {
  Index r = 1;
  for (std::size_t i = 0; i + 1 < shape.size(); ++i)
    r *= shape[i];
  return r;
}

py::array as_numpy(py::handle obj, const char* where, const char* name) {
  py::array a;
  if (py::isinstance<py::array>(obj)) {
    a = py::reinterpret_borrow<py::array>(obj);
  } else {
    try {
      a = py::module_::import("numpy").attr("asarray")(obj);
    } catch (py::error_already_set& e) {
      value_error(where, ": ", name, " (", py::str(py::type::of(obj).attr("__name__")).cast<std::string>(),
                  ") cannot be viewed as a numpy array: ", e.what());
    }
  }
  const char kind = a.dtype().kind();
  if (kind == 'c')
    value_error(where, ": ", name, " is complex (dtype ", dtype_name(a.dtype()),
                "); attnkit computes with real values");
  if (kind != 'f' && kind != 'i' && kind != 'u')
    value_error(where, ": ", name, " has dtype ", dtype_name(a.dtype()), ", which is not a real number type");
  return a;
}

bool is_float64(const py::array& a) {
  return a.dtype().kind() == 'f' && a.dtype().itemsize() == 8;
}

bool is_float32(const py::array& a) {
  return a.dtype().kind() == 'f' && a.dtype().itemsize() == 4;
}

bool is_float16(const py::array& a) {
  return a.dtype().kind() == 'f' && a.dtype().itemsize() == 2;
}

DType compute_dtype(std::initializer_list<const py::array*> arrays) {
  for (const py::array* a : arrays)
    if (is_float64(*a)) return DType::f64;
  return DType::f32;
}

template <typename T>
Array contiguous(const py::array& a, const char* where, const char* name) {
  using Target = py::array_t<T, py::array::c_style | py::array::forcecast | npy_aligned>;
  if (Target::check_(a) && usable_in_place(a)) return Array{a, shape_of(a), false};
  Target t = Target::ensure(a);
  if (!t) value_error(where, ": ", name, " cannot be converted to ", dtype_name(py::dtype::of<T>()));
  return Array{std::move(t), shape_of(a), true};
}

template Array contiguous<float>(const py::array&, const char*, const char*);
template Array contiguous<double>(const py::array&, const char*, const char*);

namespace {

template <typename S, typename From>
void round_into(const Array& from, py::array& to) {
  MutableMap<S>(static_cast<S*>(to.mutable_data()), from.rows(), from.cols()) =
      from.matrix<From>().template cast<S>();
}

}  // namespace

Array to_16bit(const py::array& a, DType storage, const char* where, const char* name) {
  if (storage == DType::f16 && is_float16(a) && usable_in_place(a)) return Array{a, shape_of(a), false};
  // Rounded from float32 or float64 (the source's own precision).
  const bool wide = is_float64(a);
  const Array from = wide ? contiguous<double>(a, where, name) : contiguous<float>(a, where, name);
  py::array to = storage == DType::f16 ? py::array(py::dtype("float16"), from.shape)
                                       : py::array(py::dtype::of<std::uint16_t>(), from.shape);
  {
    py::gil_scoped_release nogil;
    if (storage == DType::f16)
      wide ? round_into<Eigen::half, double>(from, to) : round_into<Eigen::half, float>(from, to);
    else
      wide ? round_into<Eigen::bfloat16, double>(from, to) : round_into<Eigen::bfloat16, float>(from, to);
  }
  return Array{std::move(to), from.shape, true};
}

template <typename T>
py::array_t<T> empty(const Shape& shape) {
  return py::array_t<T>(shape);
}

template py::array_t<float> empty<float>(const Shape&);
template py::array_t<double> empty<double>(const Shape&);
template py::array_t<std::int64_t> empty<std::int64_t>(const Shape&);

Shape HeadShape::output_shape() const {
  Shape s = lead;
  s.push_back(d_v);
  return s;
}

void check_shape(const char* where, const char* name, const Shape& shape, Index min_rank, Index max_rank) {
  const auto rank = static_cast<Index>(shape.size());
  if (rank < min_rank || rank > max_rank) {
    if (min_rank == max_rank)
      value_error(where, ": ", name, " has shape ", shape_string(shape), "; expected ", min_rank, " axes");
    value_error(where, ": ", name, " has shape ", shape_string(shape), "; expected at least ", min_rank,
                " axes", max_rank < 64 ? concat(" and at most ", max_rank) : "");
  }
  for (const Index n : shape)
    if (n < 1)
      value_error(where, ": ", name, " has shape ", shape_string(shape), "; every axis must be >= 1");
}

HeadShape head_shape(const char* where, const Shape& q, const Shape& k, const Shape& v) {
  check_shape(where, "q", q, 2);
  check_shape(where, "k", k, 2);
  check_shape(where, "v", v, 2);
  const auto shapes = [&] {
    return concat("q ", shape_string(q), ", k ", shape_string(k), " and v ", shape_string(v));
  };
  if (q.size() != k.size() || k.size() != v.size())
    value_error(where, ": ", shapes(),
                " must have the same number of axes: (n, d), (heads, n, d) or (batch, heads, n, d)");
  const std::size_t r = q.size();
  if (q[r - 1] != k[r - 1]) value_error(where, ": ", shapes(), ": q and k must have the same last axis d");
  for (std::size_t i = 0; i + 1 < r; ++i)
    if (k[i] != v[i]) value_error(where, ": ", shapes(), ": k and v must agree on every axis but the last");
  for (std::size_t i = 0; i + 3 < r; ++i)
    if (q[i] != k[i])
      value_error(where, ": ", shapes(), ": q and k must agree on the batch axes (all but the last three)");
  HeadShape h;
  h.lead.assign(q.begin(), q.end() - 1);
  h.n_q = q[r - 2];
  h.n_k = k[r - 2];
  h.d = q[r - 1];
  h.d_v = v[r - 1];
  if (r >= 3) {
    if (q[r - 3] % k[r - 3] != 0)
      value_error(where, ": ", shapes(), ": the query heads (", q[r - 3],
                  ") must be a multiple of the key/value heads (", k[r - 3], ")");
    h.item_heads = q[r - 3];
  }
  for (std::size_t i = 0; i + 2 < r; ++i) {
    h.q_heads *= q[i];
    h.kv_heads *= k[i];
  }
  return h;
}

attnkit::Mask parse_mask(const char* where, const std::string& mask, std::optional<Index> offset,
                         std::optional<Index> window, Index sinks) {
  const std::optional<attnkit::MaskKind> kind = attnkit::parse_mask_kind(mask);
  if (!kind) value_error(where, ": mask='", mask, "' is not one of ", attnkit::mask_kind_names());
  return attnkit::Mask(*kind, offset, window, sinks);
}

void record_kernel_pointers(const void* q, const void* k, const void* v, const void* out, const void* lse) {
  last_pointers = KernelPointers{reinterpret_cast<std::uintptr_t>(q), reinterpret_cast<std::uintptr_t>(k),
                                 reinterpret_cast<std::uintptr_t>(v), reinterpret_cast<std::uintptr_t>(out),
                                 reinterpret_cast<std::uintptr_t>(lse)};
}

KernelPointers last_kernel_pointers() {
  return last_pointers;
}

}  // namespace attnkit_python
