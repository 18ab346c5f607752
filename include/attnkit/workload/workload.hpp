#pragma once

/// \file attnkit/workload/workload.hpp
/// What every generator of attnkit/workload/ returns and takes: the problem
/// sizes (WorkloadShape) and the generated inputs (Workload), with the
/// argument checks the generators share. The generators are in
/// attnkit/workload/synthetic.hpp (iid, clustered, and the make_workload
/// dispatch) and attnkit/workload/llm_like.hpp.

#include <algorithm>
#include <cmath>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"

namespace attnkit {

/// Sizes of a generated problem. All must be >= 1.
struct WorkloadShape {
  Index n_q = 1024;
  Index n_k = 1024;
  Index d = 64;
  Index d_v = 64;
};

/// Generated inputs: q (n_q x d), k (n_k x d), v (n_k x d_v).
template <typename Scalar>
struct Workload {
  RowMatrix<Scalar> q;
  RowMatrix<Scalar> k;
  RowMatrix<Scalar> v;
};

namespace detail {

inline void check_shape(const char* where, const WorkloadShape& s) {
  if (s.n_q < 1 || s.n_k < 1 || s.d < 1 || s.d_v < 1)
    fail(where, ": every size must be >= 1, got n_q = ", s.n_q, ", n_k = ", s.n_k, ", d = ", s.d,
         ", d_v = ", s.d_v);
}

inline void check_positive(const char* where, const char* name, double x) {
  if (!(std::isfinite(x) && x > 0)) fail(where, ": ", name, " = ", x, " must be finite and > 0");
}

inline void check_non_negative(const char* where, const char* name, double x) {
  if (!(std::isfinite(x) && x >= 0)) fail(where, ": ", name, " = ", x, " must be finite and >= 0");
}

/// The double-precision workload rounded once to Scalar.
template <typename Scalar>
Workload<Scalar> cast_workload(const RowMatrix<double>& q, const RowMatrix<double>& k,
                               const RowMatrix<double>& v) {
  return {q.cast<Scalar>(), k.cast<Scalar>(), v.cast<Scalar>()};
}

/// Column norms of m.
inline Eigen::VectorXd column_norms(const RowMatrix<double>& m) {
  return m.colwise().norm().transpose();
}

inline double median(Eigen::VectorXd x) {
  std::sort(x.data(), x.data() + x.size());
  const Index n = x.size();
  return n % 2 ? x(n / 2) : 0.5 * (x(n / 2 - 1) + x(n / 2));
}

}  // namespace detail
}  // namespace attnkit
