#pragma once

// Shared pieces of attnkit's Python bindings (the extension attnkit._core):
// numpy arrays in and out, stacked head layouts, and the parsing of the
// string options every entry point shares.
//
// Arrays. An input is read IN PLACE when it is a C-contiguous, aligned numpy
// array of the dtype the call computes in (float32 or float64): the kernels
// get a row-major Eigen::Map over its buffer. Anything else (non-contiguous
// views, float16 where float32 is wanted, integers, lists, torch tensors that
// numpy views as such arrays) is converted ONCE by numpy into a C-contiguous
// array of that dtype, which lives for the call. Outputs are numpy arrays
// allocated by the binding and written in place by the library's *_into entry
// points; a result the library returns by value is handed to numpy without a
// copy (the array owns the Eigen matrix through a capsule).

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "attnkit/attention/heads.hpp"
#include "attnkit/core/mask.hpp"
#include "attnkit/core/types.hpp"

namespace attnkit_python {

namespace py = pybind11;
using attnkit::Index;
template <typename T>
using RowMatrix = attnkit::RowMatrix<T>;
template <typename T>
using Vector = attnkit::Vector<T>;
template <typename T>
using ConstMap = Eigen::Map<const RowMatrix<T>>;
template <typename T>
using MutableMap = Eigen::Map<RowMatrix<T>>;
using Shape = std::vector<Index>;

/// Element types: the two the kernels compute in, and the two 16-bit K/V
/// storage types (f16 = IEEE binary16, numpy's float16; bf16 = bfloat16, held
/// in numpy as uint16 bit patterns because numpy has no bfloat16).
enum class DType { f32, f64, f16, bf16 };

const char* to_string(DType t);

template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

/// Raises ValueError with the concatenated message.
template <typename... Parts>
[[noreturn]] void value_error(Parts&&... parts) {
  throw py::value_error(concat(std::forward<Parts>(parts)...));
}

/// "(2, 8, 128, 64)", as Python prints a shape.
std::string shape_string(const Shape& s);

/// An array a call reads: the caller's array itself when it could be used in
/// place, otherwise its one conversion. `shape` is the array's shape; the
/// kernels see it as a (rows x cols) row-major matrix, cols the last axis.
struct Array {
  py::array array;
  Shape shape;
  /// True when `array` is a conversion of the caller's object.
  bool converted = false;

  Index ndim() const { return static_cast<Index>(shape.size()); }
  Index cols() const { return shape.empty() ? 1 : shape.back(); }
  Index rows() const;
  template <typename T>
  const T* data() const {
    return static_cast<const T*>(array.data());
  }
  template <typename T>
  ConstMap<T> matrix() const {
    return ConstMap<T>(data<T>(), rows(), cols());
  }
};

/// The object as a numpy array (np.asarray: arrays pass through, anything
/// with __array__ or the buffer protocol is viewed, lists are converted).
/// \throws ValueError naming `where` and `name` for objects numpy cannot turn
///         into a real numeric array (complex, object, strings).
py::array as_numpy(py::handle obj, const char* where, const char* name);

/// True when the array's dtype is float64.
bool is_float64(const py::array& a);
/// True when the array's dtype is float32.
bool is_float32(const py::array& a);
/// True when the array's dtype is float16.
bool is_float16(const py::array& a);

/// float64 if any of the arrays is float64, float32 otherwise.
DType compute_dtype(std::initializer_list<const py::array*> arrays);

/// `a` as a C-contiguous, aligned array of T (float, double or
/// Eigen::half), converted once by numpy when it is not one already.
template <typename T>
Array contiguous(const py::array& a, const char* where, const char* name);

/// `a` rounded once to bfloat16 or binary16 (to nearest, ties to even, as
/// the library's KVCache rounds): a new array of uint16 bit patterns
/// (bfloat16) or float16. A C-contiguous float16 array is used in place.
Array to_16bit(const py::array& a, DType storage, const char* where, const char* name);

/// An uninitialised C-contiguous array of T with the given shape.
template <typename T>
py::array_t<T> empty(const Shape& shape);

/// A numpy array that takes ownership of an Eigen matrix or vector (no copy):
/// `shape` must hold exactly m.size() elements.
template <typename M>
py::array adopt(M&& m, const Shape& shape) {
  using Plain = std::decay_t<M>;
  auto* owned = new Plain(std::forward<M>(m));
  py::capsule base(owned, [](void* p) { delete static_cast<Plain*>(p); });
  return py::array_t<typename Plain::Scalar>(shape, owned->data(), base);
}

/// The shape of a stacked-heads call: q (..., n_q, d), k (..., n_k, d),
/// v (..., n_k, d_v) with equal ranks >= 2. The axes before the last two are
/// flattened into heads: (n, d) is one head, (h, n, d) h heads, (b, h, n, d)
/// b * h heads, and so on. K and V may have fewer heads on axis -3 than Q
/// (grouped-query attention: q.shape[-3] a multiple of k.shape[-3]); the
/// axes before it (batch) must agree. Query head g * (Hq / Hkv) + r of a
/// batch item uses its key/value head g, which is the library's mapping
/// h / (q_heads / kv_heads) over the flattened heads.
struct HeadShape {
  /// q.shape[:-1]: the output is lead + (d_v,), the lse is lead.
  Shape lead;
  Index q_heads = 1, kv_heads = 1, n_q = 0, n_k = 0, d = 0, d_v = 0;
  /// q.shape[-3] for rank >= 3, else 1: the heads of one batch item.
  Index item_heads = 1;

  /// The library's layout: per-head policies (ALiBi's slopes) count heads
  /// within a batch item (HeadLayout::batch).
  attnkit::HeadLayout layout() const { return {q_heads, kv_heads, q_heads / item_heads}; }
  Shape output_shape() const;
};

/// Validates and describes the shapes (see HeadShape).
/// \throws ValueError naming `where`, the argument and the shapes.
HeadShape head_shape(const char* where, const Shape& q, const Shape& k, const Shape& v);

/// Every axis of `shape` must be >= 1 and its rank in [min_rank, max_rank].
void check_shape(const char* where, const char* name, const Shape& shape, Index min_rank,
                 Index max_rank = 64);

/// The library's mask from the Python arguments: mask = "none" | "causal" |
/// "strict" (attnkit::parse_mask_kind), with offset, window and sinks.
/// \throws ValueError naming `mask` and the accepted names.
attnkit::Mask parse_mask(const char* where, const std::string& mask, std::optional<Index> offset,
                         std::optional<Index> window, Index sinks);

/// Test hook: the data pointers the last kernel call of this thread received
/// (inputs and outputs), so the tests can check that nothing was copied.
struct KernelPointers {
  std::uintptr_t q = 0, k = 0, v = 0, out = 0, lse = 0;
};
void record_kernel_pointers(const void* q, const void* k, const void* v, const void* out, const void* lse);
KernelPointers last_kernel_pointers();

// Registration of each part of the module (one translation unit each).
void register_attention(py::module_& m);
void register_caches(py::module_& m);
void register_sparse(py::module_& m);
void register_softmax(py::module_& m);
void register_prune(py::module_& m);

}  // namespace attnkit_python
