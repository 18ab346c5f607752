#pragma once

// attnkit-eval: the inputs. Q, K, V come from .npy files (2-D (n, d) or 3-D
// (heads, n, d)) or from the built-in workload; they are validated together
// (regular files, shapes, head grouping, dtype) from the file headers before
// any data is read, then loaded as stacked heads in the compute type
// (attnkit/attention/heads.hpp's layout).

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit-eval/scoring.hpp"
#include "attnkit/attention/heads.hpp"
#include "attnkit/core/types.hpp"
#include "attnkit/io/npy.hpp"
#include "attnkit/workload/synthetic.hpp"

namespace attnkit_eval {

using attnkit::Index;

/// Where the inputs come from, as typed.
struct InputSpec {
  /// Files (all three or none).
  std::string q_path, k_path, v_path;
  /// The built-in workload, used when no file is given (numbers as text,
  /// parsed by plan_inputs; kv_heads "" = heads).
  std::string workload = "llm";
  std::string n = "4096";
  std::string d = "128";
  std::string heads = "8";
  std::string kv_heads;
  std::string seed = "1";
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
  bool three_d = false;  ///< outputs written as (heads, ...), else 2-D
  attnkit::NpyDtype dtype = attnkit::NpyDtype::float32;

  attnkit::HeadLayout heads() const { return {q_heads, kv_heads}; }
};

/// The validated inputs: the spec, the shapes and, for the built-in
/// workload, its kind and seed.
struct InputPlan {
  InputSpec spec;
  ProblemShape shape;
  attnkit::WorkloadKind kind = attnkit::WorkloadKind::llm_like;
  std::uint64_t seed = 1;
};

/// Validates `spec` — for files, that each is a regular file with a .npy
/// header and that the three fit together; for the built-in workload, its
/// flags — without reading any data.
/// \throws UsageError naming the flags, files and shapes.
InputPlan plan_inputs(const InputSpec& spec);

/// A stack of `heads` row-major (rows x cols) matrices stored as one
/// (heads rows x cols) matrix: the C-order layout of a 3-D .npy array.
template <typename Scalar>
struct Tensor {
  Index heads = 1;
  Index rows = 0;
  Index cols = 0;
  bool three_d = false;  ///< written back as (heads, rows, cols), else (rows, cols)
  attnkit::RowMatrix<Scalar> data;

  auto head(Index h) const { return data.middleRows(h * rows, rows); }
  std::vector<Index> shape() const {
    return three_d ? std::vector<Index>{heads, rows, cols} : std::vector<Index>{rows, cols};
  }
};

/// Q (q_heads n_q x d), K (kv_heads n_k x d), V (kv_heads n_k x d_v).
template <typename Scalar>
struct Inputs {
  Tensor<Scalar> q, k, v;
};

/// Loads the files or generates the built-in workload in Scalar. Built-in:
/// attnkit::make_grouped_workload(kind, {n, n, d, d}, heads, kv_heads, seed)
/// (key/value head g from seed + g; with kv_heads = heads, head h is
/// make_workload(kind, {n, n, d, d}, seed + h)).
/// \throws UsageError when a file changed since plan_inputs read its header.
template <typename Scalar>
Inputs<Scalar> load_inputs(const InputPlan& plan);

/// For `prune` and `compare`, which need finite inputs: the first NaN or
/// infinite entry of Q, K or V (C order) is refused, naming the flag, the
/// file and the entry as (head, row, col).
/// \throws UsageError.
template <typename Scalar>
void check_finite(const Inputs<Scalar>& in, const InputPlan& plan, const std::string& command);

/// --kv-dtype: rounds K and V of `in` once, in place, to `t` (to nearest,
/// ties to even; rounding to a type at least as wide as Scalar changes
/// nothing). For bf16 and f16 (Scalar float only) also returns K and V in
/// 16 bits for the methods that read 16-bit storage; otherwise kv16 is left
/// untouched and false is returned.
template <typename Scalar>
bool round_kv(Inputs<Scalar>& in, KvDtype t, HalfKv& kv16);

}  // namespace attnkit_eval
