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
/// docs/workloads.md describes each generator in full, with measured
/// statistics of the attention they produce.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/detail/random.hpp"
#include "attnkit/similarity/rotary.hpp"

namespace attnkit {

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

/// Traits of trained decoder heads (see the file comment and docs/workloads.md).
struct LlmLikeOptions {
  /// Number of rotary pairs carrying massive values (2 channels each), drawn
  /// among the lowest-frequency quarter of the pairs; std::nullopt = d / 64
  /// (one pair for d = 64, two for d = 128). At most d / 8.
  std::optional<Index> outlier_pairs{};
  /// Column norm of an outlier channel over the median channel's column norm,
  /// drawn log-uniformly in [outlier_min_ratio, outlier_max_ratio] per pair and
  /// met exactly by the generated K.
  double outlier_min_ratio = 10.0;
  double outlier_max_ratio = 50.0;
  /// Share of an outlier channel's energy that is constant across tokens
  /// (massive activations act mostly as a bias), in [0, 1].
  double outlier_mean_fraction = 0.9;
  /// Amplitude of the fastest-turning rotary pair of Q and K relative to the
  /// slowest-turning one; the pairs in between interpolate geometrically
  /// (massive channels are set separately). Trained models put most of the
  /// energy of Q and K in the slowly turning, low-frequency pairs, where
  /// content survives the rotation, and use the fast pairs for positional
  /// patterns (Barbero et al. 2024, "Round and Round We Go!", Gemma 7B and
  /// Llama 3.1 8B). In (0, 1]; 1 gives every pair the same energy.
  double high_frequency_amplitude = 0.1;
  /// Rank of the token-dependent part of the keys and queries (they share one
  /// subspace, so attention is content-based); std::nullopt = max(1, d / 4).
  std::optional<Index> rank{};
  /// Isotropic noise on top of the low-rank part, per coordinate.
  double noise = 0.1;
  /// Norm of the mean key relative to the key fluctuation, per coordinate.
  double key_mean = 1.0;
  /// Same for the shared query direction (it makes the sink consistent).
  double query_mean = 1.0;
  /// Target standard deviation of a query's logits over the non-sink keys
  /// (averaged over queries); Q is rescaled to meet it.
  double logit_std = 2.5;
  /// Share of the attention (without a mask, averaged over the queries) that
  /// goes to the sink key at token 0, in [0, 1).
  double sink_mass = 0.3;
  /// The sink's value row is scaled by this (sinks carry little content).
  double sink_value_scale = 0.1;
  /// Rotary encoding applied to Q and K (positions as in the file comment).
  RotaryOptions rotary{};
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

/// LLM-like heads: low-rank keys and queries in a shared subspace, a mean key,
/// massive low-frequency channels, an attention sink at token 0, RoPE.
/// Construction (all in double):
///  1. keys    k_j = mu + A z_j + noise,  queries q_i = nu + A y_i + noise,
///     z, y ~ N(0, I_rank), A (d x rank) with unit-variance rows; both
///     dimensions of rotary pair p (frequency rank p of P = d/2, 0 fastest)
///     then scaled by high_frequency_amplitude^(1 - p / (P - 1));
///  2. in each outlier channel c, the key column becomes a constant of sign
///     +-1 carrying `outlier_mean_fraction` of its energy plus the
///     standardised token-dependent part carrying the rest;
///  3. RoPE on Q and K; each outlier pair scaled so its channels' column norms
///     are exactly ratio x the median channel norm (pair scaling commutes
///     with the rotation, so positions stay relative);
///  4. Q rescaled so its logits over the non-sink keys have std `logit_std`;
///  5. k_0 = mean key + alpha u, u the mean query direction, alpha found by
///     bisection so the sink takes `sink_mass` of the attention on average;
///     v_0 scaled by `sink_value_scale`; step 3's exact ratios re-applied.
/// Steps 4 and 5 measure on up to 256 queries spread evenly over Q.
/// O((n_q + n_k) d rank + min(n_q, 256) n_k d).
/// \throws std::invalid_argument for a size < 1, an odd d, outlier_pairs
///         above d / 8, or another out-of-range option.
template <typename Scalar>
Workload<Scalar> make_llm_like_workload(const WorkloadShape& shape, std::uint64_t seed,
                                        const LlmLikeOptions& options = {}) {
  const char* where = "make_llm_like_workload";
  detail::check_shape(where, shape);
  const Index d = shape.d;
  if (d % 2 != 0) detail::fail(where, ": d = ", d, " must be even for rotary pairs");
  const Index pairs = d / 2;
  const Index n_outlier = options.outlier_pairs.value_or(d / 64);
  if (n_outlier < 0 || n_outlier > d / 8)
    detail::fail(where, ": outlier_pairs = ", n_outlier, " must be in [0, d/8] = [0, ", d / 8,
                 "] for d = ", d);
  const Index rank = options.rank.value_or(std::max<Index>(1, d / 4));
  if (rank < 1 || rank > d) detail::fail(where, ": rank = ", rank, " must be in [1, d] for d = ", d);
  if (!(options.outlier_min_ratio >= 1 && options.outlier_max_ratio >= options.outlier_min_ratio &&
        std::isfinite(options.outlier_max_ratio)))
    detail::fail(where, ": outlier ratios [", options.outlier_min_ratio, ", ", options.outlier_max_ratio,
                 "] must satisfy 1 <= min <= max < inf");
  if (!(options.outlier_mean_fraction >= 0 && options.outlier_mean_fraction <= 1))
    detail::fail(where, ": outlier_mean_fraction = ", options.outlier_mean_fraction, " must be in [0, 1]");
  if (!(options.high_frequency_amplitude > 0 && options.high_frequency_amplitude <= 1))
    detail::fail(where, ": high_frequency_amplitude = ", options.high_frequency_amplitude,
                 " must be in (0, 1]");
  detail::check_non_negative(where, "noise", options.noise);
  detail::check_non_negative(where, "key_mean", options.key_mean);
  detail::check_non_negative(where, "query_mean", options.query_mean);
  detail::check_positive(where, "logit_std", options.logit_std);
  if (!(options.sink_mass >= 0 && options.sink_mass < 1))
    detail::fail(where, ": sink_mass = ", options.sink_mass, " must be in [0, 1)");
  detail::check_non_negative(where, "sink_value_scale", options.sink_value_scale);

  detail::Random rng(seed);
  const Index n_q = shape.n_q, n_k = shape.n_k;
  const RotaryLayout layout = options.rotary.layout;

  // Outlier pairs among the lowest-frequency quarter of the pairs.
  std::vector<Index> candidates;
  for (Index p = pairs - std::max<Index>(pairs / 4, n_outlier); p < pairs; ++p)
    candidates.push_back(p);
  std::vector<Index> outlier;
  std::vector<double> ratio;
  for (Index t = 0; t < n_outlier; ++t) {
    const Index pick = rng.index(static_cast<Index>(candidates.size()));
    outlier.push_back(candidates[static_cast<std::size_t>(pick)]);
    candidates.erase(candidates.begin() + pick);
    const double lo = std::log(options.outlier_min_ratio), hi = std::log(options.outlier_max_ratio);
    ratio.push_back(std::exp(lo + (hi - lo) * rng.uniform()));
  }

  // 1. Low-rank keys and queries in a shared subspace.
  const RowMatrix<double> a = rng.normal_matrix(d, rank, 1.0 / std::sqrt(static_cast<double>(rank)));
  const Eigen::RowVectorXd mu = rng.normal_matrix(1, d, options.key_mean);
  const Eigen::RowVectorXd nu = rng.normal_matrix(1, d, options.query_mean);
  RowMatrix<double> k =
      rng.normal_matrix(n_k, rank) * a.transpose() + rng.normal_matrix(n_k, d, options.noise);
  k.rowwise() += mu;
  RowMatrix<double> q =
      rng.normal_matrix(n_q, rank) * a.transpose() + rng.normal_matrix(n_q, d, options.noise);
  q.rowwise() += nu;
  // Energy profile over the rotary frequencies: slow pairs carry the content.
  for (Index p = 0; p < pairs && pairs > 1; ++p) {
    const double amplitude = std::pow(options.high_frequency_amplitude,
                                      1.0 - static_cast<double>(p) / static_cast<double>(pairs - 1));
    const auto [c1, c2] = rotary_pair_dims(p, d, layout);
    for (const Index c : {c1, c2}) {
      k.col(c) *= amplitude;
      q.col(c) *= amplitude;
    }
  }

  // 2. Massive channels: mostly a token-constant bias.
  for (const Index p : outlier) {
    const auto [c1, c2] = rotary_pair_dims(p, d, layout);
    for (const Index c : {c1, c2}) {
      Eigen::VectorXd col = k.col(c);
      col.array() -= col.mean();
      const double sd = col.norm() / std::sqrt(static_cast<double>(n_k));
      if (sd > 0) col /= sd;
      const double sign = rng.uniform() < 0.5 ? -1.0 : 1.0;
      k.col(c) = (sign * std::sqrt(options.outlier_mean_fraction) +
                  std::sqrt(1.0 - options.outlier_mean_fraction) * col.array())
                     .matrix();
    }
  }

  // 3. RoPE, then exact outlier ratios.
  k = apply_rotary(k, 0, options.rotary);
  q = apply_rotary(q, n_k - n_q, options.rotary);
  const auto set_outlier_ratios = [&](RowMatrix<double>& keys) {
    if (outlier.empty()) return;
    const Eigen::VectorXd norms = detail::column_norms(keys);
    const double med = detail::median(norms);
    for (std::size_t t = 0; t < outlier.size(); ++t) {
      const auto [c1, c2] = rotary_pair_dims(outlier[t], d, layout);
      const double pair_rms = std::sqrt(0.5 * (norms(c1) * norms(c1) + norms(c2) * norms(c2)));
      if (pair_rms > 0) {
        keys.col(c1) *= ratio[t] * med / pair_rms;
        keys.col(c2) *= ratio[t] * med / pair_rms;
      }
    }
  };
  set_outlier_ratios(k);

  // 4. Logit scale: std over the non-sink keys, averaged over the probe queries.
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const Index probe = std::min<Index>(n_q, 256);
  RowMatrix<double> probe_q(probe, d);
  for (Index t = 0; t < probe; ++t)
    probe_q.row(t) = q.row(t * n_q / probe);
  RowMatrix<double> v = rng.normal_matrix(n_k, shape.d_v);
  if (n_k >= 3) {
    const RowMatrix<double> logits = scale * probe_q * k.bottomRows(n_k - 1).transpose();
    double mean_std = 0;
    for (Index i = 0; i < probe; ++i) {
      const Eigen::ArrayXd row = logits.row(i).transpose().array();
      mean_std += std::sqrt((row - row.mean()).square().mean());
    }
    mean_std /= static_cast<double>(probe);
    if (mean_std > 0) {
      q *= options.logit_std / mean_std;
      probe_q *= options.logit_std / mean_std;
    }
  }

  // 5. Attention sink at token 0: k_0 = mean key + alpha u.
  if (n_k >= 2) {
    const Eigen::RowVectorXd q_mean = q.colwise().mean();
    const double q_mean_norm = q_mean.norm();
    const Eigen::RowVectorXd k_mean = k.bottomRows(n_k - 1).colwise().mean();
    if (q_mean_norm > 0 && options.sink_mass > 0) {
      const Eigen::RowVectorXd u = q_mean / q_mean_norm;
      // Per probe query: log-sum-exp of the other keys, and its logits against
      // the mean key and u; the sink's logit is base + alpha * slope.
      const RowMatrix<double> others = scale * probe_q * k.bottomRows(n_k - 1).transpose();
      Eigen::VectorXd rest(probe);
      for (Index i = 0; i < probe; ++i) {
        const double m = others.row(i).maxCoeff();
        rest(i) = m + std::log((others.row(i).array() - m).exp().sum());
      }
      const Eigen::VectorXd base = scale * probe_q * k_mean.transpose();
      const Eigen::VectorXd slope = scale * probe_q * u.transpose();
      const auto mean_mass = [&](double alpha) {
        const Eigen::ArrayXd z = (base + alpha * slope - rest).array();
        return (1.0 / (1.0 + (-z).exp())).mean();
      };
      double lo = 0, hi = 1;
      while (mean_mass(hi) < options.sink_mass && hi < 1e6)
        hi *= 2;
      for (int it = 0; it < 60; ++it) {
        const double mid = 0.5 * (lo + hi);
        (mean_mass(mid) < options.sink_mass ? lo : hi) = mid;
      }
      k.row(0) = k_mean + hi * u;
    } else {
      k.row(0) = k_mean;
    }
    v.row(0) *= options.sink_value_scale;
    set_outlier_ratios(k);
  }
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
