#pragma once

/// \file attnkit/workload/synthetic.hpp
/// Seeded, deterministic generators of attention inputs (Q, K, V) for tests
/// and benchmarks, each imitating one property of real model attention. A
/// seed fixes the random stream on every platform (attnkit/detail/random.hpp);
/// what is built from it goes through Eigen products and libm (log, sin, pow),
/// so on another compiler, instruction set or libm the same seed gives the
/// same workload up to rounding, not bit for bit. Everything is drawn in
/// double and rounded once to Scalar, so float and double workloads from one
/// seed agree to float rounding.
///
/// Layout: the queries are the LAST n_q tokens of the n_k-token sequence (query
/// row i is token n_k - n_q + i), matching the default mask offset. The logit
/// magnitudes are designed for the default scale 1/sqrt(d).
///
/// | kind        | imitates                                                         |
/// |-------------|------------------------------------------------------------------|
/// | iid         | nothing in particular: diffuse attention, the worst case for     |
/// |             | methods that exploit structure, the plain case for kernels       |
/// | clustered   | peaked, content-based attention: keys form topics, a query       |
/// |             | attends to a handful of keys in its own topic                    |
/// | llm_like    | measured traits of trained decoder heads: low-rank keys with a   |
/// |             | large shared mean, energy concentrated in the low-frequency      |
/// |             | rotary pairs, a few low-frequency "massive" channels with 10-50x |
/// |             | the norm of the median channel, an attention sink at token 0     |
/// |             | with a small value, rotary position encoding                     |
///
/// WorkloadShape and Workload are in attnkit/workload/workload.hpp, the
/// LLM-like generator (make_llm_like_workload, LlmLikeOptions) in
/// attnkit/workload/llm_like.hpp; both are included here, with the iid and
/// clustered generators and make_workload, which dispatches to all three.
/// docs/workloads.md describes each generator in full, with measured
/// statistics of the attention they produce.

#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/detail/random.hpp"
#include "attnkit/workload/llm_like.hpp"
#include "attnkit/workload/workload.hpp"

namespace attnkit {

/// The generators make_workload dispatches to (to_string / parse_workload_kind
/// name them).
enum class WorkloadKind { iid, clustered, llm_like };

/// Name used in messages and on the command line: "iid", "clustered", "llm".
inline const char* to_string(WorkloadKind kind) {
  switch (kind) {
    case WorkloadKind::iid:
      return "iid";
    case WorkloadKind::clustered:
      return "clustered";
    case WorkloadKind::llm_like:
      return "llm";
  }
  return "?";
}

/// Parses "iid", "clustered", "llm" (also "llm-like", "llm_like").
inline std::optional<WorkloadKind> parse_workload_kind(std::string_view name) {
  if (name == "iid") return WorkloadKind::iid;
  if (name == "clustered") return WorkloadKind::clustered;
  if (name == "llm" || name == "llm-like" || name == "llm_like") return WorkloadKind::llm_like;
  return std::nullopt;
}

/// iid Gaussian entries.
struct IidOptions {
  double q_std = 1.0;
  double k_std = 1.0;
  double v_std = 1.0;
};

/// Keys from a mixture of Gaussians; queries near the cluster centres.
/// Parametrised by what it does to the logits (with scale 1/sqrt(d)).
struct ClusteredOptions {
  /// Number of clusters (topics), >= 1.
  Index clusters = 16;
  /// Mean logit margin by which a query prefers the keys of its own cluster:
  /// centres are drawn with squared norm peak_logit * sqrt(d).
  double peak_logit = 8.0;
  /// Standard deviation of a query's logits over the keys of one cluster: how
  /// peaked attention is inside the cluster. With Gaussian logits of std s a
  /// query effectively attends to about (cluster size) * exp(-s^2 / 2) keys.
  double key_logit_std = 2.0;
  /// Standard deviation of a query around its centre, relative to the
  /// centre's per-coordinate scale.
  double query_spread = 0.25;
};

/// iid Gaussian Q, K, V. O((n_q + n_k)(d + d_v)).
/// \throws std::invalid_argument for a size < 1 or a non-positive deviation.
template <typename Scalar>
Workload<Scalar> make_iid_workload(const WorkloadShape& shape, std::uint64_t seed,
                                   const IidOptions& options = {}) {
  const char* where = "make_iid_workload";
  detail::check_shape(where, shape);
  detail::check_positive(where, "q_std", options.q_std);
  detail::check_positive(where, "k_std", options.k_std);
  detail::check_positive(where, "v_std", options.v_std);
  detail::Random rng(seed);
  const RowMatrix<double> q = rng.normal_matrix(shape.n_q, shape.d, options.q_std);
  const RowMatrix<double> k = rng.normal_matrix(shape.n_k, shape.d, options.k_std);
  const RowMatrix<double> v = rng.normal_matrix(shape.n_k, shape.d_v, options.v_std);
  return detail::cast_workload<Scalar>(q, k, v);
}

/// Clustered keys, queries near cluster centres: peaked attention.
/// Centres c have N(0, a^2) coordinates with a^2 = peak_logit / sqrt(d);
/// key j = c_(j mod C) + N(0, b^2) noise (clusters interleave along the
/// sequence), b chosen so that a query's logits over one cluster have std
/// key_logit_std; query i = c_m + N(0, (query_spread a)^2), m uniform.
/// O((n_q + n_k)(d + d_v)).
/// \throws std::invalid_argument for a size < 1 or an out-of-range option.
template <typename Scalar>
Workload<Scalar> make_clustered_workload(const WorkloadShape& shape, std::uint64_t seed,
                                         const ClusteredOptions& options = {}) {
  const char* where = "make_clustered_workload";
  detail::check_shape(where, shape);
  if (options.clusters < 1) detail::fail(where, ": clusters = ", options.clusters, " must be >= 1");
  detail::check_positive(where, "peak_logit", options.peak_logit);
  detail::check_non_negative(where, "key_logit_std", options.key_logit_std);
  detail::check_non_negative(where, "query_spread", options.query_spread);
  detail::Random rng(seed);
  const double d = static_cast<double>(shape.d);
  const double a = std::sqrt(options.peak_logit / std::sqrt(d));
  // A query has squared norm ~ d a^2 (1 + query_spread^2); its logit against
  // c + b e varies by |q| b / sqrt(d) = a b sqrt(1 + spread^2).
  const double b = options.key_logit_std / (a * std::sqrt(1 + options.query_spread * options.query_spread));
  const RowMatrix<double> centres = rng.normal_matrix(options.clusters, shape.d, a);
  RowMatrix<double> k(shape.n_k, shape.d);
  for (Index j = 0; j < shape.n_k; ++j)
    for (Index c = 0; c < shape.d; ++c)
      k(j, c) = centres(j % options.clusters, c) + b * rng.normal();
  RowMatrix<double> q(shape.n_q, shape.d);
  for (Index i = 0; i < shape.n_q; ++i) {
    const Index cluster = rng.index(options.clusters);
    for (Index c = 0; c < shape.d; ++c)
      q(i, c) = centres(cluster, c) + options.query_spread * a * rng.normal();
  }
  const RowMatrix<double> v = rng.normal_matrix(shape.n_k, shape.d_v);
  return detail::cast_workload<Scalar>(q, k, v);
}

/// Dispatches to the generator of `kind` with its default options.
template <typename Scalar>
Workload<Scalar> make_workload(WorkloadKind kind, const WorkloadShape& shape, std::uint64_t seed) {
  switch (kind) {
    case WorkloadKind::iid:
      return make_iid_workload<Scalar>(shape, seed);
    case WorkloadKind::clustered:
      return make_clustered_workload<Scalar>(shape, seed);
    case WorkloadKind::llm_like:
      return make_llm_like_workload<Scalar>(shape, seed);
  }
  detail::fail("make_workload: unknown workload kind");
}

}  // namespace attnkit
