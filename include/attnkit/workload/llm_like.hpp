#pragma once

/// \file attnkit/workload/llm_like.hpp
/// The LLM-like workload: seeded (Q, K, V) with the measured traits of
/// trained decoder heads -- low-rank keys with a large shared mean, energy in
/// the low-frequency rotary pairs, a few low-frequency "massive" channels
/// with 10-50x the norm of the median channel, an attention sink at token 0
/// with a small value, rotary position encoding. The generator is cut into
/// its steps (detail::llm_like_*), each a function, called in order by
/// make_llm_like_workload. Conventions (seeds, layout, rounding to Scalar) as
/// in attnkit/workload/synthetic.hpp; docs/workloads.md describes the traits
/// and the attention they produce.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/detail/random.hpp"
#include "attnkit/position/rotary.hpp"
#include "attnkit/workload/workload.hpp"

namespace attnkit {

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
  /// Rotary encoding applied to Q and K (positions as in synthetic.hpp).
  RotaryOptions rotary{};
};

namespace detail {

/// Sizes the options resolve to for a shape.
struct LlmLikeSizes {
  Index pairs = 0;     ///< rotary pairs, d / 2
  Index outliers = 0;  ///< outlier pairs
  Index rank = 0;      ///< rank of the token-dependent part
};

/// The massive channels: which rotary pairs, and each pair's norm ratio.
struct LlmLikeOutliers {
  std::vector<Index> pairs;
  std::vector<double> ratios;
};

/// Queries and keys while they are built, in double.
struct LlmLikeQK {
  RowMatrix<double> q;
  RowMatrix<double> k;
};

/// Validates the shape and the options and resolves the defaults.
inline LlmLikeSizes llm_like_sizes(const char* where, const WorkloadShape& shape,
                                   const LlmLikeOptions& options) {
  check_shape(where, shape);
  const Index d = shape.d;
  if (d % 2 != 0) fail(where, ": d = ", d, " must be even for rotary pairs");
  LlmLikeSizes s;
  s.pairs = d / 2;
  s.outliers = options.outlier_pairs.value_or(d / 64);
  if (s.outliers < 0 || s.outliers > d / 8)
    fail(where, ": outlier_pairs = ", s.outliers, " must be in [0, d/8] = [0, ", d / 8, "] for d = ", d);
  s.rank = options.rank.value_or(std::max<Index>(1, d / 4));
  if (s.rank < 1 || s.rank > d) fail(where, ": rank = ", s.rank, " must be in [1, d] for d = ", d);
  if (!(options.outlier_min_ratio >= 1 && options.outlier_max_ratio >= options.outlier_min_ratio &&
        std::isfinite(options.outlier_max_ratio)))
    fail(where, ": outlier ratios [", options.outlier_min_ratio, ", ", options.outlier_max_ratio,
         "] must satisfy 1 <= min <= max < inf");
  if (!(options.outlier_mean_fraction >= 0 && options.outlier_mean_fraction <= 1))
    fail(where, ": outlier_mean_fraction = ", options.outlier_mean_fraction, " must be in [0, 1]");
  if (!(options.high_frequency_amplitude > 0 && options.high_frequency_amplitude <= 1))
    fail(where, ": high_frequency_amplitude = ", options.high_frequency_amplitude, " must be in (0, 1]");
  check_non_negative(where, "noise", options.noise);
  check_non_negative(where, "key_mean", options.key_mean);
  check_non_negative(where, "query_mean", options.query_mean);
  check_positive(where, "logit_std", options.logit_std);
  if (!(options.sink_mass >= 0 && options.sink_mass < 1))
    fail(where, ": sink_mass = ", options.sink_mass, " must be in [0, 1)");
  check_non_negative(where, "sink_value_scale", options.sink_value_scale);
  return s;
}

/// Step 0: the outlier pairs, drawn without replacement among the
/// lowest-frequency quarter of the pairs (at least `outliers` of them), each
/// with a ratio drawn log-uniformly in [outlier_min_ratio, outlier_max_ratio].
/// Draws, per pair: one index, one uniform.
inline LlmLikeOutliers llm_like_outliers(Random& rng, const LlmLikeSizes& sizes,
                                         const LlmLikeOptions& options) {
  std::vector<Index> candidates;
  for (Index p = sizes.pairs - std::max<Index>(sizes.pairs / 4, sizes.outliers); p < sizes.pairs; ++p)
    candidates.push_back(p);
  LlmLikeOutliers out;
  for (Index t = 0; t < sizes.outliers; ++t) {
    const Index pick = rng.index(static_cast<Index>(candidates.size()));
    out.pairs.push_back(candidates[static_cast<std::size_t>(pick)]);
    candidates.erase(candidates.begin() + pick);
    const double lo = std::log(options.outlier_min_ratio), hi = std::log(options.outlier_max_ratio);
    out.ratios.push_back(std::exp(lo + (hi - lo) * rng.uniform()));
  }
  return out;
}

/// Step 1a: keys k_j = mu + A z_j + noise and queries q_i = nu + A y_i +
/// noise, z, y ~ N(0, I_rank), A (d x rank) with unit-variance rows. Draws, in
/// this order: A, mu, nu, the key noise, the key factors z, the query noise,
/// the query factors y. (Written out: the generator used to draw both in one
/// expression, whose operand order C++ leaves unspecified -- GCC drew the
/// noise first, clang the factors -- so the same seed gave other workloads
/// with clang. This is GCC's order, so GCC-built workloads are unchanged.)
inline LlmLikeQK llm_like_low_rank(Random& rng, const WorkloadShape& shape, Index rank,
                                   const LlmLikeOptions& options) {
  const Index d = shape.d;
  const RowMatrix<double> a = rng.normal_matrix(d, rank, 1.0 / std::sqrt(static_cast<double>(rank)));
  const Eigen::RowVectorXd mu = rng.normal_matrix(1, d, options.key_mean);
  const Eigen::RowVectorXd nu = rng.normal_matrix(1, d, options.query_mean);
  const RowMatrix<double> key_noise = rng.normal_matrix(shape.n_k, d, options.noise);
  const RowMatrix<double> key_factors = rng.normal_matrix(shape.n_k, rank);
  RowMatrix<double> k = key_factors * a.transpose() + key_noise;
  k.rowwise() += mu;
  const RowMatrix<double> query_noise = rng.normal_matrix(shape.n_q, d, options.noise);
  const RowMatrix<double> query_factors = rng.normal_matrix(shape.n_q, rank);
  RowMatrix<double> q = query_factors * a.transpose() + query_noise;
  q.rowwise() += nu;
  return {std::move(q), std::move(k)};
}

/// Step 1b: the energy profile over the rotary frequencies: both dimensions
/// of pair p (frequency rank p of P = d / 2, 0 fastest) of Q and K scaled by
/// high_frequency_amplitude^(1 - p / (P - 1)), so the slow pairs carry the
/// content. No draws.
inline void llm_like_energy_profile(Index pairs, const LlmLikeOptions& options, RowMatrix<double>& q,
                                    RowMatrix<double>& k) {
  const Index d = 2 * pairs;
  for (Index p = 0; p < pairs && pairs > 1; ++p) {
    const double amplitude = std::pow(options.high_frequency_amplitude,
                                      1.0 - static_cast<double>(p) / static_cast<double>(pairs - 1));
    const auto [c1, c2] = rotary_pair_dims(p, d, options.rotary.layout);
    for (const Index c : {c1, c2}) {
      k.col(c) *= amplitude;
      q.col(c) *= amplitude;
    }
  }
}

/// Step 2: in each outlier channel c, the key column becomes a constant of
/// sign +-1 carrying `outlier_mean_fraction` of its energy plus the
/// standardised token-dependent part carrying the rest. Draws one uniform
/// (the sign) per channel.
inline void llm_like_massive_channels(Random& rng, const LlmLikeOutliers& outliers,
                                      const LlmLikeOptions& options, RowMatrix<double>& k) {
  const Index n_k = k.rows(), d = k.cols();
  for (const Index p : outliers.pairs) {
    const auto [c1, c2] = rotary_pair_dims(p, d, options.rotary.layout);
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
}

/// Step 3b (and the end of step 5): scales each outlier pair of `keys` so its
/// two channels' RMS column norm is exactly ratio x the median channel norm
/// (pair scaling commutes with the rotation, so positions stay relative).
inline void llm_like_set_outlier_ratios(const LlmLikeOutliers& outliers, RotaryLayout layout,
                                        RowMatrix<double>& keys) {
  if (outliers.pairs.empty()) return;
  const Index d = keys.cols();
  const Eigen::VectorXd norms = column_norms(keys);
  const double med = median(norms);
  for (std::size_t t = 0; t < outliers.pairs.size(); ++t) {
    const auto [c1, c2] = rotary_pair_dims(outliers.pairs[t], d, layout);
    const double pair_rms = std::sqrt(0.5 * (norms(c1) * norms(c1) + norms(c2) * norms(c2)));
    if (pair_rms > 0) {
      keys.col(c1) *= outliers.ratios[t] * med / pair_rms;
      keys.col(c2) *= outliers.ratios[t] * med / pair_rms;
    }
  }
}

/// Steps 4 and 5 measure on up to 256 queries spread evenly over Q: rows
/// t * n_q / probe, t < probe = min(n_q, 256).
inline RowMatrix<double> llm_like_probe_queries(const RowMatrix<double>& q) {
  const Index n_q = q.rows();
  const Index probe = std::min<Index>(n_q, 256);
  RowMatrix<double> probe_q(probe, q.cols());
  for (Index t = 0; t < probe; ++t)
    probe_q.row(t) = q.row(t * n_q / probe);
  return probe_q;
}

/// Step 4: Q (and the probe queries) rescaled so the probe queries' logits
/// over the non-sink keys (scale 1 / sqrt(d)) have standard deviation
/// logit_std on average. Needs n_k >= 3 (two non-sink keys); otherwise Q is
/// left as it is. No draws.
inline void llm_like_logit_scale(const RowMatrix<double>& k, const LlmLikeOptions& options,
                                 RowMatrix<double>& q, RowMatrix<double>& probe_q) {
  const Index n_k = k.rows(), probe = probe_q.rows();
  if (n_k < 3) return;
  const double scale = 1.0 / std::sqrt(static_cast<double>(k.cols()));
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

/// Step 5: the attention sink at token 0: k_0 = mean key + alpha u, u the
/// mean query direction, alpha found by bisection so that the sink takes
/// `sink_mass` of the probe queries' attention on average (k_0 = mean key
/// when sink_mass = 0 or the mean query vanishes); v_0 scaled by
/// sink_value_scale; step 3's exact outlier ratios re-applied. Needs n_k >= 2;
/// otherwise nothing changes. No draws.
inline void llm_like_attention_sink(const RowMatrix<double>& q, const RowMatrix<double>& probe_q,
                                    const LlmLikeOutliers& outliers, const LlmLikeOptions& options,
                                    RowMatrix<double>& k, RowMatrix<double>& v) {
  const Index n_k = k.rows(), probe = probe_q.rows();
  if (n_k < 2) return;
  const double scale = 1.0 / std::sqrt(static_cast<double>(k.cols()));
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
  llm_like_set_outlier_ratios(outliers, options.rotary.layout, k);
}

}  // namespace detail

/// LLM-like heads: low-rank keys and queries in a shared subspace, a mean key,
/// massive low-frequency channels, an attention sink at token 0, RoPE.
/// Construction (all in double; each step is a detail::llm_like_* function):
///  0. the outlier pairs and their ratios;
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
/// V ~ N(0, 1) is drawn after step 2. Steps 4 and 5 measure on up to 256
/// queries spread evenly over Q.
/// O((n_q + n_k) d rank + min(n_q, 256) n_k d).
/// \throws std::invalid_argument for a size < 1, an odd d, outlier_pairs
///         above d / 8, or another out-of-range option.
template <typename Scalar>
Workload<Scalar> make_llm_like_workload(const WorkloadShape& shape, std::uint64_t seed,
                                        const LlmLikeOptions& options = {}) {
  const detail::LlmLikeSizes sizes = detail::llm_like_sizes("make_llm_like_workload", shape, options);
  detail::Random rng(seed);
  const detail::LlmLikeOutliers outliers = detail::llm_like_outliers(rng, sizes, options);  // 0
  auto [q, k] = detail::llm_like_low_rank(rng, shape, sizes.rank, options);                 // 1
  detail::llm_like_energy_profile(sizes.pairs, options, q, k);
  detail::llm_like_massive_channels(rng, outliers, options, k);  // 2
  k = apply_rotary(k, 0, options.rotary);                        // 3
  q = apply_rotary(q, shape.n_k - shape.n_q, options.rotary);
  detail::llm_like_set_outlier_ratios(outliers, options.rotary.layout, k);
  RowMatrix<double> probe_q = detail::llm_like_probe_queries(q);
  RowMatrix<double> v = rng.normal_matrix(shape.n_k, shape.d_v);         // the last draws
  detail::llm_like_logit_scale(k, options, q, probe_q);                  // 4
  detail::llm_like_attention_sink(q, probe_q, outliers, options, k, v);  // 5
  return detail::cast_workload<Scalar>(q, k, v);
}

}  // namespace attnkit
