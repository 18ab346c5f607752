#pragma once

/// \file attnkit/workload/grouped.hpp
/// Grouped-query workloads: q_heads query heads over kv_heads key/value heads
/// (attnkit/attention/heads.hpp's layout), from the generators of
/// attnkit/workload/synthetic.hpp.
///
/// Key/value head g is make_workload(kind, shape, seed + g). Its group's
/// query heads share its key space:
///  - the group's first query head uses that workload's queries;
///  - query head r > 0 of the group turns every pair of dimensions of those
///    queries, (2p, 2p + 1) for iid and clustered, the rotary pair p of the
///    default rotary layout for llm, by its own angle drawn uniformly from
///    [0, 2 pi) (seed + 7919 (g + 1) + r). A turn within a pair keeps each
///    query's norm and its energy per pair (the rotary frequency profile of
///    the llm workload) and its logits' scale, but changes which keys it
///    favours: the heads of a group attend to different keys of the same
///    cache, as the query heads of a GQA layer do. (For iid, whose queries
///    are isotropic, the turned queries have the same distribution.)
/// Deterministic for a given seed, like the generators.

#include <cmath>
#include <cstdint>

#include "attnkit/detail/check.hpp"
#include "attnkit/detail/random.hpp"
#include "attnkit/position/rotary.hpp"
#include "attnkit/workload/synthetic.hpp"

namespace attnkit {

/// Stacked inputs: q (q_heads n_q x d), k (kv_heads n_k x d), v (kv_heads n_k x d_v).
template <typename Scalar>
struct GroupedWorkload {
  Index q_heads = 1;
  Index kv_heads = 1;
  Workload<Scalar> stacked;
};

/// The grouped-query workload described in the file comment.
/// \throws std::invalid_argument when q_heads or kv_heads is < 1 or does not
///         divide, for an odd d (the pairs), and as make_workload.
template <typename Scalar>
GroupedWorkload<Scalar> make_grouped_workload(WorkloadKind kind, const WorkloadShape& shape, Index q_heads,
                                              Index kv_heads, std::uint64_t seed) {
  const char* where = "make_grouped_workload";
  if (q_heads < 1 || kv_heads < 1 || q_heads % kv_heads != 0)
    detail::fail(where, ": q_heads = ", q_heads, " and kv_heads = ", kv_heads,
                 " must be >= 1 with q_heads a multiple of kv_heads");
  if (q_heads > kv_heads && shape.d % 2 != 0)
    detail::fail(where, ": d = ", shape.d, " must be even to turn pairs of dimensions");
  const Index group = q_heads / kv_heads, n_q = shape.n_q, n_k = shape.n_k, d = shape.d;
  GroupedWorkload<Scalar> g{
      q_heads,
      kv_heads,
      {RowMatrix<Scalar>(detail::checked_product(where, "q_heads x n_q", q_heads, n_q), d),
       RowMatrix<Scalar>(detail::checked_product(where, "kv_heads x n_k", kv_heads, n_k), d),
       RowMatrix<Scalar>(kv_heads * n_k, shape.d_v)}};
  const RotaryLayout layout = RotaryOptions{}.layout;
  for (Index kv = 0; kv < kv_heads; ++kv) {
    const Workload<Scalar> w = make_workload<Scalar>(kind, shape, seed + static_cast<std::uint64_t>(kv));
    g.stacked.k.middleRows(kv * n_k, n_k) = w.k;
    g.stacked.v.middleRows(kv * n_k, n_k) = w.v;
    const RowMatrix<double> q0 = w.q.template cast<double>();
    for (Index r = 0; r < group; ++r) {
      RowMatrix<double> qr = q0;
      if (r > 0) {
        detail::Random rng(seed + 7919 * static_cast<std::uint64_t>(kv + 1) + static_cast<std::uint64_t>(r));
        for (Index p = 0; p < d / 2; ++p) {
          const auto [c1, c2] = kind == WorkloadKind::llm_like ? rotary_pair_dims(p, d, layout)
                                                               : std::pair<Index, Index>{2 * p, 2 * p + 1};
          const double angle = 6.283185307179586476925286766559 * rng.uniform();
          const double c = std::cos(angle), s = std::sin(angle);
          const Eigen::VectorXd x = q0.col(c1), y = q0.col(c2);
          qr.col(c1) = c * x - s * y;
          qr.col(c2) = s * x + c * y;
        }
      }
      g.stacked.q.middleRows((kv * group + r) * n_q, n_q) = qr.cast<Scalar>();
    }
  }
  return g;
}

}  // namespace attnkit
