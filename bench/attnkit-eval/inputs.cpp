// attnkit-eval's inputs (declared in inputs.hpp).

#include "attnkit-eval/inputs.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <sstream>
#include <type_traits>
#include <utility>

#include "attnkit-eval/errors.hpp"
#include "attnkit-eval/flags.hpp"
#include "attnkit-eval/numbers.hpp"
#include "attnkit/workload/grouped.hpp"

namespace attnkit_eval {

namespace {

using attnkit::NpyHeader;

struct FileInfo {
  const char* flag;
  const std::string* path;
  NpyHeader header;
};

std::string describe(const FileInfo& f) {
  return std::string(f.flag) + " '" + *f.path + "' " + attnkit::npy_shape_string(f.header.shape);
}

/// Refuses, before anything opens it, an input that is not a regular file: a
/// FIFO or /dev/stdin would block or be consumed, a directory cannot be read.
void require_regular_file(const char* flag, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw UsageError(std::string(flag) + " '" + path + "': cannot open: " + std::strerror(errno));
  if (S_ISREG(st.st_mode)) return;
  const char* what = S_ISFIFO(st.st_mode)   ? "a named pipe (FIFO)"
                     : S_ISDIR(st.st_mode)  ? "a directory"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                                            : "not a regular file";
  throw UsageError(std::string(flag) + " '" + path + "': is " + what +
                   "; attnkit-eval reads regular .npy files only");
}

FileInfo inspect(const char* flag, const std::string& path) {
  require_regular_file(flag, path);
  return {flag, &path, attnkit::read_npy_header(path)};
}

ProblemShape file_shape(const InputSpec& spec) {
  if (spec.q_path.empty() || spec.k_path.empty() || spec.v_path.empty())
    throw UsageError("give all three of --q, --k and --v (or none, for the built-in workload)");
  const FileInfo q = inspect("--q", spec.q_path);
  const FileInfo k = inspect("--k", spec.k_path);
  const FileInfo v = inspect("--v", spec.v_path);
  for (const FileInfo* f : {&q, &k, &v}) {
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
  const auto tail = [](const FileInfo& f, std::size_t i) {
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
    p.dtype = dtype_flag(spec.dtype);
  } else if (q.header.dtype != k.header.dtype || k.header.dtype != v.header.dtype) {
    throw UsageError("--q '" + spec.q_path + "' is " + attnkit::to_string(q.header.dtype) + ", --k '" +
                     spec.k_path + "' is " + attnkit::to_string(k.header.dtype) + " and --v '" + spec.v_path +
                     "' is " + attnkit::to_string(v.header.dtype) +
                     ": pass --dtype float32 or --dtype float64");
  } else {
    // float16 files compute in float32 (every half is exactly a float).
    p.dtype = q.header.dtype == attnkit::NpyDtype::float16 ? attnkit::NpyDtype::float32 : q.header.dtype;
  }
  return p;
}

template <typename Scalar>
Tensor<Scalar> load_tensor(const std::string& path, bool three_d, Index heads, Index rows, Index cols) {
  const attnkit::NpyArray<Scalar> a = attnkit::read_npy<Scalar>(path);
  if (static_cast<Index>(a.data.size()) != heads * rows * cols)
    throw UsageError("'" + path + "' changed while it was being read: it now has shape " +
                     attnkit::npy_shape_string(a.shape));
  Tensor<Scalar> t{heads, rows, cols, three_d, attnkit::RowMatrix<Scalar>(heads * rows, cols)};
  std::copy(a.data.begin(), a.data.end(), t.data.data());
  return t;
}

template <typename Scalar>
void check_tensor_finite(const Tensor<Scalar>& t, const std::string& what, const std::string& command) {
  const Scalar* p = t.data.data();
  const Index count = t.data.size();
  for (Index i = 0; i < count; ++i) {
    if (std::isfinite(p[i])) continue;
    const Index head = i / (t.rows * t.cols), row = (i / t.cols) % t.rows, col = i % t.cols;
    std::ostringstream os;
    os << what << ": entry (head " << head << ", row " << row << ", col " << col << ") is "
       << static_cast<double>(p[i]) << "; " << command
       << " needs finite Q, K and V (attention accepts non-finite inputs, see docs/eval.md)";
    throw UsageError(os.str());
  }
}

}  // namespace

InputPlan plan_inputs(const InputSpec& spec) {
  InputPlan plan;
  plan.spec = spec;
  if (spec.from_files()) {
    plan.shape = file_shape(spec);
    return plan;
  }
  plan.kind = workload_flag(spec.workload);
  const Index n = parse_integer("--n", spec.n, 1);
  const Index d = parse_integer("--d", spec.d, 1);
  const Index heads = parse_integer("--heads", spec.heads, 1);
  const Index kv_heads = spec.kv_heads.empty() ? heads : parse_integer("--kv-heads", spec.kv_heads, 1);
  plan.seed = parse_unsigned("--seed", spec.seed);
  if (heads % kv_heads != 0)
    throw UsageError("--kv-heads " + spec.kv_heads + ": must divide --heads " + spec.heads +
                     " (each key/value head serves the same number of query heads)");
  if (plan.kind == attnkit::WorkloadKind::llm_like && d % 2 != 0)
    throw UsageError("--d " + spec.d + ": the llm workload needs an even d (rotary pairs)");
  if (kv_heads < heads && d % 2 != 0)
    throw UsageError("--d " + spec.d + ": grouped query heads (--kv-heads " + spec.kv_heads + " < --heads " +
                     spec.heads + ") need an even d (their queries are turned pair by pair)");
  // Q, K and V of all heads, in double while they are generated: refuse what
  // cannot be held (2^40 bytes) before the products could overflow.
  constexpr double max_bytes = 1099511627776.0;
  const double bytes =
      3.0 * 8.0 * static_cast<double>(heads) * static_cast<double>(n) * static_cast<double>(d);
  if (bytes > max_bytes)
    throw UsageError("--n " + spec.n + " --d " + spec.d + " --heads " + spec.heads +
                     ": the built-in workload would need more than 1 TiB");
  ProblemShape& p = plan.shape;
  p.q_heads = heads;
  p.kv_heads = kv_heads;
  p.n_q = p.n_k = n;
  p.d = p.d_v = d;
  p.three_d = true;
  p.dtype = spec.dtype.empty() ? attnkit::NpyDtype::float32 : dtype_flag(spec.dtype);
  return plan;
}

template <typename Scalar>
Inputs<Scalar> load_inputs(const InputPlan& plan) {
  const ProblemShape& s = plan.shape;
  if (plan.spec.from_files())
    return {load_tensor<Scalar>(plan.spec.q_path, s.three_d, s.q_heads, s.n_q, s.d),
            load_tensor<Scalar>(plan.spec.k_path, s.three_d, s.kv_heads, s.n_k, s.d),
            load_tensor<Scalar>(plan.spec.v_path, s.three_d, s.kv_heads, s.n_k, s.d_v)};
  attnkit::GroupedWorkload<Scalar> w = attnkit::make_grouped_workload<Scalar>(
      plan.kind, {s.n_q, s.n_k, s.d, s.d_v}, s.q_heads, s.kv_heads, plan.seed);
  return {{s.q_heads, s.n_q, s.d, true, std::move(w.stacked.q)},
          {s.kv_heads, s.n_k, s.d, true, std::move(w.stacked.k)},
          {s.kv_heads, s.n_k, s.d_v, true, std::move(w.stacked.v)}};
}

template <typename Scalar>
void check_finite(const Inputs<Scalar>& in, const InputPlan& plan, const std::string& command) {
  const InputSpec& s = plan.spec;
  const bool files = s.from_files();
  check_tensor_finite(in.q, files ? "--q '" + s.q_path + "'" : "the built-in workload's Q", command);
  check_tensor_finite(in.k, files ? "--k '" + s.k_path + "'" : "the built-in workload's K", command);
  check_tensor_finite(in.v, files ? "--v '" + s.v_path + "'" : "the built-in workload's V", command);
}

template <typename Scalar>
bool round_kv(Inputs<Scalar>& in, KvDtype t, HalfKv& kv16) {
  switch (t) {
    case KvDtype::as_computed:
    case KvDtype::f64:
      return false;
    case KvDtype::f32:
      if constexpr (!std::is_same_v<Scalar, float>) {
        in.k.data = in.k.data.template cast<float>().template cast<Scalar>();
        in.v.data = in.v.data.template cast<float>().template cast<Scalar>();
      }
      return false;
    case KvDtype::bf16:
    case KvDtype::f16:
      break;
  }
  if constexpr (!std::is_same_v<Scalar, float>) {
    throw UsageError("--kv-dtype " + to_string(t) + " computes in float32 (drop --dtype float64)");
  } else {
    kv16.bf16 = t == KvDtype::bf16;
    if (kv16.bf16) {
      kv16.k_bf16 = in.k.data.template cast<Eigen::bfloat16>();
      kv16.v_bf16 = in.v.data.template cast<Eigen::bfloat16>();
      in.k.data = kv16.k_bf16.template cast<float>();
      in.v.data = kv16.v_bf16.template cast<float>();
    } else {
      kv16.k_f16 = in.k.data.template cast<Eigen::half>();
      kv16.v_f16 = in.v.data.template cast<Eigen::half>();
      in.k.data = kv16.k_f16.template cast<float>();
      in.v.data = kv16.v_f16.template cast<float>();
    }
    return true;
  }
}

template bool round_kv<float>(Inputs<float>&, KvDtype, HalfKv&);
template bool round_kv<double>(Inputs<double>&, KvDtype, HalfKv&);
template Inputs<float> load_inputs<float>(const InputPlan&);
template Inputs<double> load_inputs<double>(const InputPlan&);
template void check_finite<float>(const Inputs<float>&, const InputPlan&, const std::string&);
template void check_finite<double>(const Inputs<double>&, const InputPlan&, const std::string&);

}  // namespace attnkit_eval
