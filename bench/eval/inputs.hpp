#pragma once

// attnkit-eval: the inputs. Q, K, V come from .npy files (2-D (n, d) or 3-D
// (heads, n, d)) or from the built-in synthetic workload; they are validated
// together (shapes, head grouping, dtype) from the file headers before any
// data is read, then loaded in the chosen scalar type.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "attnkit/core/types.hpp"
#include "attnkit/io/npy.hpp"
#include "attnkit/workload/synthetic.hpp"

namespace attnkit::eval {

/// Bad arguments or bad input: reported as one line, exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A stack of `heads` row-major (rows x cols) matrices, stored as one
/// (heads * rows x cols) matrix: exactly the C-order layout of a 3-D .npy array.
template <typename Scalar>
struct Tensor {
  Index heads = 1;
  Index rows = 0;
  Index cols = 0;
  bool three_d = false;  ///< written back as (heads, rows, cols), else (rows, cols)
  RowMatrix<Scalar> data;

  auto head(Index h) const { return data.middleRows(h * rows, rows); }
  auto head(Index h) { return data.middleRows(h * rows, rows); }
  std::vector<Index> shape() const {
    return three_d ? std::vector<Index>{heads, rows, cols} : std::vector<Index>{rows, cols};
  }
};

/// Where the inputs come from and how they fit together.
struct InputSpec {
  // Files (all three or none).
  std::string q_path, k_path, v_path;
  // Built-in workload (used when no file is given).
  std::string workload = "llm";
  Index n = 4096;
  Index d = 128;
  Index heads = 8;
  std::uint64_t seed = 1;
  /// "float32", "float64" or "" (the files' dtype; float32 for the built-in workload).
  std::string dtype;

  bool from_files() const { return !q_path.empty() || !k_path.empty() || !v_path.empty(); }
};

/// Shapes of the problem, common to every head.
struct ProblemShape {
  Index q_heads = 1;
  Index kv_heads = 1;
  Index n_q = 0;
  Index n_k = 0;
  Index d = 0;
  Index d_v = 0;
  bool three_d = false;
  NpyDtype dtype = NpyDtype::float32;

  /// The key/value head query head h reads: h / (q_heads / kv_heads), the
  /// usual grouped-query mapping (consecutive query heads share a KV head).
  Index kv_head(Index h) const { return h / (q_heads / kv_heads); }
};

template <typename Scalar>
struct Inputs {
  ProblemShape shape;
  Tensor<Scalar> q, k, v;
};

namespace detail {

struct FileInfo {
  const char* flag;
  const std::string* path;
  NpyHeader header;
};

inline std::string describe(const FileInfo& f) {
  return std::string(f.flag) + " '" + *f.path + "' " + npy_shape_string(f.header.shape);
}

inline std::optional<NpyDtype> parse_dtype(const std::string& s) {
  if (s == "float32") return NpyDtype::float32;
  if (s == "float64") return NpyDtype::float64;
  return std::nullopt;
}

template <typename Scalar>
Tensor<Scalar> load_tensor(const std::string& path, const ProblemShape& shape, Index heads, Index rows,
                           Index cols) {
  NpyArray<Scalar> a = read_npy<Scalar>(path);
  if (static_cast<Index>(a.data.size()) != heads * rows * cols)
    throw UsageError("'" + path + "' changed while it was being read: it now has shape " +
                     npy_shape_string(a.shape));
  Tensor<Scalar> t{heads, rows, cols, shape.three_d, RowMatrix<Scalar>(heads * rows, cols)};
  std::copy(a.data.begin(), a.data.end(), t.data.data());
  return t;
}

}  // namespace detail

/// Validates the three files from their headers and returns the problem
/// shape (dtype resolved against spec.dtype).
/// \throws UsageError naming the flags, files and shapes when they do not fit.
inline ProblemShape inspect_files(const InputSpec& spec) {
  using detail::describe;
  if (spec.q_path.empty() || spec.k_path.empty() || spec.v_path.empty())
    throw UsageError("give all three of --q, --k and --v (or none, for the built-in workload)");
  detail::FileInfo q{"--q", &spec.q_path, read_npy_header(spec.q_path)};
  detail::FileInfo k{"--k", &spec.k_path, read_npy_header(spec.k_path)};
  detail::FileInfo v{"--v", &spec.v_path, read_npy_header(spec.v_path)};
  for (const detail::FileInfo* f : {&q, &k, &v}) {
    const auto& s = f->header.shape;
    if (s.size() != 2 && s.size() != 3)
      throw UsageError(describe(*f) + ": Q, K and V must be 2-D (n, d) or 3-D (heads, n, d)");
    for (const Index x : s)
      if (x < 1) throw UsageError(describe(*f) + ": every dimension must be >= 1");
  }
  if (q.header.shape.size() != k.header.shape.size() || k.header.shape.size() != v.header.shape.size())
    throw UsageError(describe(q) + ", " + describe(k) + " and " + describe(v) +
                     ": give Q, K and V the same number of dimensions (all 2-D or all 3-D)");
  ProblemShape p;
  p.three_d = q.header.shape.size() == 3;
  const auto tail = [&](const detail::FileInfo& f, std::size_t i) {
    return f.header.shape[f.header.shape.size() - 2 + i];
  };
  p.q_heads = p.three_d ? q.header.shape[0] : 1;
  p.kv_heads = p.three_d ? k.header.shape[0] : 1;
  p.n_q = tail(q, 0);
  p.d = tail(q, 1);
  p.n_k = tail(k, 0);
  p.d_v = tail(v, 1);
  if (tail(k, 1) != p.d)
    throw UsageError(describe(q) + " and " + describe(k) + " must have the same width d (last dimension)");
  if (tail(v, 0) != p.n_k)
    throw UsageError(describe(k) + " and " + describe(v) + " must have the same number of tokens n_k");
  if (p.three_d && v.header.shape[0] != p.kv_heads)
    throw UsageError(describe(k) + " and " + describe(v) + " must have the same number of heads");
  if (p.q_heads % p.kv_heads != 0)
    throw UsageError(describe(q) + " has " + std::to_string(p.q_heads) + " heads and " + describe(k) + " " +
                     std::to_string(p.kv_heads) +
                     ": the number of query heads must be a multiple of the number of key/value heads");
  if (!spec.dtype.empty()) {
    p.dtype = *detail::parse_dtype(spec.dtype);
  } else if (q.header.dtype != k.header.dtype || k.header.dtype != v.header.dtype) {
    throw UsageError(std::string("--q '") + spec.q_path + "' is " + to_string(q.header.dtype) + ", --k '" +
                     spec.k_path + "' is " + to_string(k.header.dtype) + " and --v '" + spec.v_path +
                     "' is " + to_string(v.header.dtype) + ": pass --dtype float32 or --dtype float64");
  } else {
    p.dtype = q.header.dtype;
  }
  return p;
}

/// The shape of the built-in workload described by `spec`.
/// \throws UsageError for a bad workload flag.
inline ProblemShape builtin_shape(const InputSpec& spec) {
  if (!parse_workload_kind(spec.workload))
    throw UsageError("--workload " + spec.workload + ": expected iid, clustered or llm");
  if (spec.n < 1) throw UsageError("--n " + std::to_string(spec.n) + ": must be >= 1");
  if (spec.d < 1) throw UsageError("--d " + std::to_string(spec.d) + ": must be >= 1");
  if (spec.heads < 1) throw UsageError("--heads " + std::to_string(spec.heads) + ": must be >= 1");
  if (*parse_workload_kind(spec.workload) == WorkloadKind::llm_like && spec.d % 2 != 0)
    throw UsageError("--d " + std::to_string(spec.d) + ": the llm workload needs an even d (rotary pairs)");
  // Q, K and V of all heads, in double while they are generated: refuse what
  // cannot be held (2^40 bytes) before the products could overflow.
  constexpr double max_bytes = 1099511627776.0;
  const double bytes =
      3.0 * 8.0 * static_cast<double>(spec.heads) * static_cast<double>(spec.n) * static_cast<double>(spec.d);
  if (bytes > max_bytes)
    throw UsageError("--n " + std::to_string(spec.n) + " --d " + std::to_string(spec.d) + " --heads " +
                     std::to_string(spec.heads) + ": the built-in workload would need more than 1 TiB");
  ProblemShape p;
  p.q_heads = p.kv_heads = spec.heads;
  p.n_q = p.n_k = spec.n;
  p.d = p.d_v = spec.d;
  p.three_d = true;
  p.dtype = spec.dtype.empty() ? NpyDtype::float32 : *detail::parse_dtype(spec.dtype);
  return p;
}

/// Loads (or generates) the inputs described by `spec` with the validated
/// `shape`, in Scalar. Built-in head h is make_workload(kind, {n, n, d, d},
/// seed + h).
template <typename Scalar>
Inputs<Scalar> load_inputs(const InputSpec& spec, const ProblemShape& shape) {
  Inputs<Scalar> in;
  in.shape = shape;
  if (spec.from_files()) {
    in.q = detail::load_tensor<Scalar>(spec.q_path, shape, shape.q_heads, shape.n_q, shape.d);
    in.k = detail::load_tensor<Scalar>(spec.k_path, shape, shape.kv_heads, shape.n_k, shape.d);
    in.v = detail::load_tensor<Scalar>(spec.v_path, shape, shape.kv_heads, shape.n_k, shape.d_v);
    return in;
  }
  const WorkloadKind kind = *parse_workload_kind(spec.workload);
  const Index h_count = shape.q_heads;
  in.q = {h_count, shape.n_q, shape.d, true, RowMatrix<Scalar>(h_count * shape.n_q, shape.d)};
  in.k = {h_count, shape.n_k, shape.d, true, RowMatrix<Scalar>(h_count * shape.n_k, shape.d)};
  in.v = {h_count, shape.n_k, shape.d_v, true, RowMatrix<Scalar>(h_count * shape.n_k, shape.d_v)};
  for (Index h = 0; h < h_count; ++h) {
    const Workload<Scalar> w = make_workload<Scalar>(kind, {shape.n_q, shape.n_k, shape.d, shape.d_v},
                                                     spec.seed + static_cast<std::uint64_t>(h));
    in.q.head(h) = w.q;
    in.k.head(h) = w.k;
    in.v.head(h) = w.v;
  }
  return in;
}

}  // namespace attnkit::eval
