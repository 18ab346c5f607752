#pragma once

/// \file attnkit/approx/detail/setup.hpp
/// Argument checks and the context of an approx_attention call. Internal.

#include <cmath>
#include <limits>
#include <type_traits>

#include "attnkit/approx/detail/context.hpp"
#include "attnkit/approx/options.hpp"
#include "attnkit/approx/result.hpp"
#include "attnkit/attention/problem.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/detail/parallel.hpp"

namespace attnkit::detail {

template <typename Scalar>
constexpr void approx_check_scalar() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "approximate attention is typed over float and double");
}

/// Throws naming `name` and the first non-finite entry of m.
template <typename M>
void require_finite(const char* where, const char* name, const M& m) {
  for (Index i = 0; i < m.rows(); ++i)
    for (Index c = 0; c < m.cols(); ++c)
      if (!std::isfinite(static_cast<double>(m(i, c))))
        fail(where, ": ", name, " ", shape(m), " has a non-finite entry ", static_cast<double>(m(i, c)),
             " at (", i, ", ", c, "); the bounds need finite queries and keys");
}

/// Binds the inputs (row-major views) into a context; rows from `first`
/// of q are row 0 of the problem.
template <typename Scalar>
ApproxContext<Scalar> approx_context(const char* where, const Eigen::Ref<const RowMatrix<Scalar>>& q,
                                     const Eigen::Ref<const RowMatrix<Scalar>>& k,
                                     const Eigen::Ref<const RowMatrix<Scalar>>& v,
                                     const ApproxOptions& options) {
  const AttentionProblem pb =
      make_attention_problem(where, q, k, v, AttentionOptions{options.mask, options.scale});
  check_approx_options(where, options);
  require_finite(where, "Q", q);
  require_finite(where, "K", k);
  // Sizes of what the call allocates: outputs and bounds, the keys of a
  // block in double, its node summaries (at most 2 n_k / leaf nodes per
  // level) and the basis.
  checked_product(where, "n_q x d_v", pb.n_q, pb.d_v);
  checked_product(where, "n_k x d", pb.n_k, pb.d);
  checked_product(where, "2 n_k x (5 d + 3 d_v)", checked_product(where, "2 n_k", 2, pb.n_k),
                  5 * pb.d + 3 * pb.d_v);
  checked_product(where, "d x d", pb.d, pb.d);
  ApproxContext<Scalar> ctx;
  ctx.q = q.data();
  ctx.ldq = q.outerStride();
  ctx.k = k.data();
  ctx.ldk = k.outerStride();
  ctx.v = v.data();
  ctx.ldv = v.outerStride();
  ctx.n_q = pb.n_q;
  ctx.n_k = pb.n_k;
  ctx.d = pb.d;
  ctx.d_v = pb.d_v;
  ctx.scale = pb.scale;
  ctx.mask = pb.mask;
  ctx.options = &options;
  ctx.certified = !options.budget;
  ctx.rule = ctx.certified ? EstimateRule::midpoint
                           : (options.estimator == ApproxEstimator::monopole ? EstimateRule::monopole
                                                                             : EstimateRule::second_order);
  ctx.threads = resolve_threads(options.threads);
  const auto n = static_cast<std::size_t>(pb.n_q);
  ctx.end.resize(n);
  ctx.far.resize(n);
  ctx.qnorm.resize(n);
  ctx.sig.assign(n, 0);
  ctx.ratio.assign(n, 0.0);
  ctx.spent.assign(n, LogSum{});
  ctx.floor_low.assign(n, -std::numeric_limits<double>::infinity());
  ctx.counts.setZero(pb.n_q, 3);
  const Index b0 = options.index.block;
  for (Index r = 0; r < pb.n_q; ++r) {
    const Index e = pb.mask.key_end(r);
    ctx.end[static_cast<std::size_t>(r)] = e;
    ctx.far[static_cast<std::size_t>(r)] = e / b0 * b0;
  }
  ctx.far_left = ctx.far;
  for (Index r = 0; r < pb.n_q; ++r) {
    ctx.qnorm[static_cast<std::size_t>(r)] = pb.scale * q.row(r).template cast<double>().norm();
  }
  return ctx;
}

template <typename Scalar>
ApproxResult<Scalar> approx_allocate(Index n_q, Index d_v) {
  ApproxResult<Scalar> r;
  r.output.resize(n_q, d_v);
  r.lse.resize(n_q);
  r.bound.resize(n_q, d_v);
  r.lse_bound.resize(n_q);
  return r;
}

}  // namespace attnkit::detail
