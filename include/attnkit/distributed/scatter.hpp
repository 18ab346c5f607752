#pragma once

/// \file attnkit/distributed/scatter.hpp
/// Moving stacked (heads, n, d) arrays between one rank and the shards of
/// every rank (attnkit/distributed/sharding.hpp): what a program that reads
/// its tensors on one rank needs around ring_attention.
///
///   auto q = attnkit::scatter_shards(comm, 0, q_all, heads.q_heads, Sharding::zigzag);  // every rank its
///   shard auto r = attnkit::ring_attention_heads(comm, q, k, v, heads, options, {Sharding::zigzag});
///   RowMatrix<float> o = attnkit::gather_shards(comm, 0, r.output, heads.q_heads, Sharding::zigzag);  //
///   rank 0
///
/// Both are collective and run the agreement check of
/// attnkit/distributed/detail/collective.hpp first: bad shapes, more ranks
/// than tokens or ranks that disagree on the root, the head count, the
/// sharding, the width or the scalar type throw the same
/// std::invalid_argument on every rank. One MPI_Scatterv / MPI_Gatherv of
/// whole rows (a contiguous datatype of d scalars), packed and unpacked in
/// rank order on the root: O(heads n d) memory and copies on the root.

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "attnkit/distributed/detail/collective.hpp"
#include "attnkit/distributed/sharding.hpp"

namespace attnkit {

namespace detail {

/// A committed contiguous datatype of `width` scalars, freed on scope exit.
class RowType {
 public:
  RowType(MPI_Datatype scalar, Index width) {
    MPI_Type_contiguous(static_cast<int>(width), scalar, &type_);
    MPI_Type_commit(&type_);
  }
  RowType(const RowType&) = delete;
  RowType& operator=(const RowType&) = delete;
  ~RowType() { MPI_Type_free(&type_); }
  MPI_Datatype get() const { return type_; }

 private:
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
};

/// Rows per rank of a sharding of n tokens x heads, and their displacements.
inline void shard_counts(Sharding sharding, Index n, Index heads, int ranks, std::vector<int>& counts,
                         std::vector<int>& displs) {
  counts.assign(static_cast<std::size_t>(ranks), 0);
  displs.assign(static_cast<std::size_t>(ranks), 0);
  int at = 0;
  for (int r = 0; r < ranks; ++r) {
    counts[std::size_t(r)] = static_cast<int>(heads * shard_size(sharding, n, ranks, r));
    displs[std::size_t(r)] = at;
    at += counts[std::size_t(r)];
  }
}

}  // namespace detail

/// Sends every rank its shard of a stacked array held by `root`. Collective.
/// \param full (heads n x d) on the root, head h in rows [h n, (h + 1) n);
///        ignored on the other ranks (pass an empty matrix).
/// \returns this rank's shard (heads n_r x d), as extract_shard makes it.
/// \throws std::invalid_argument (on every rank) if root is not a rank, the
///         root's array is empty or does not split into `heads` heads, n is
///         smaller than the number of ranks, heads n exceeds MPI's counts, or
///         the ranks disagree on root, heads, sharding or the scalar type.
template <typename Derived>
RowMatrix<typename Derived::Scalar> scatter_shards(MPI_Comm comm, int root,
                                                   const Eigen::MatrixBase<Derived>& full, Index heads,
                                                   Sharding sharding) {
  using Scalar = typename Derived::Scalar;
  const char* where = "scatter_shards";
  detail::require_mpi(where, comm);
  detail::CollectiveCheck check(comm, where);
  check.agree("the scalar size", static_cast<std::int64_t>(sizeof(Scalar)));
  check.agree("the root", root);
  check.agree("heads", heads);
  check.agree("the sharding (0 = contiguous, 1 = zigzag)", static_cast<std::int64_t>(sharding));
  const int rows = check.local(full.rows()), cols = check.local(full.cols());
  const int P = check.ranks(), rank = check.rank();
  check.local_checks([&] {
    if (root < 0 || root >= P) detail::fail(where, ": root = ", root, " is not a rank of the ", P, " ranks");
    if (heads < 1) detail::fail(where, ": heads = ", heads, " must be >= 1");
    if (rank == root) {
      detail::require_non_empty(where, "the root's array", full);
      if (full.rows() % heads != 0)
        detail::fail(where, ": the root's array ", detail::shape(full),
                     " does not split into heads = ", heads, " heads of equal rows");
      detail::mpi_count(where, "the rows (heads x n)", full.rows());
      detail::mpi_count(where, "the columns d", full.cols());
    }
  });
  check.run();
  const Index n = check.gathered(rows, root) / heads, d = check.gathered(cols, root);
  if (n < P)
    detail::fail(where, ": n = ", n, " tokens cannot be sharded over ", P,
                 " ranks (every rank needs at least one token)");
  std::vector<int> counts, displs;
  detail::shard_counts(sharding, n, heads, P, counts, displs);
  RowMatrix<Scalar> packed;
  if (rank == root) {
    packed.resize(heads * n, d);
    for (int r = 0; r < P; ++r)
      packed.middleRows(displs[std::size_t(r)], counts[std::size_t(r)]) =
          extract_shard(full, heads, sharding, P, r);
  }
  RowMatrix<Scalar> shard(counts[std::size_t(rank)], d);
  const detail::RowType row(detail::mpi_datatype<Scalar>(), d);
  MPI_Scatterv(packed.data(), counts.data(), displs.data(), row.get(), shard.data(),
               counts[std::size_t(rank)], row.get(), root, comm);
  return shard;
}

/// Collects every rank's shard into the stacked array on `root`: the inverse
/// of scatter_shards. Collective.
/// \param shard this rank's (heads n_r x d) rows (an output of ring_attention,
///        or an lse vector: a column vector is a (heads n_r x 1) array).
/// \returns on the root the (heads n x d) array, n the sum of the shards'
///          tokens; elsewhere an empty (0 x d) matrix.
/// \throws std::invalid_argument (on every rank) if root is not a rank, a
///         shard does not split into `heads` heads, the shards do not fit the
///         sharding together, or the ranks disagree on root, heads, sharding,
///         d or the scalar type.
template <typename Derived>
RowMatrix<typename Derived::Scalar> gather_shards(MPI_Comm comm, int root,
                                                  const Eigen::MatrixBase<Derived>& shard, Index heads,
                                                  Sharding sharding) {
  using Scalar = typename Derived::Scalar;
  const char* where = "gather_shards";
  detail::require_mpi(where, comm);
  detail::CollectiveCheck check(comm, where);
  check.agree("the scalar size", static_cast<std::int64_t>(sizeof(Scalar)));
  check.agree("the root", root);
  check.agree("heads", heads);
  check.agree("the sharding (0 = contiguous, 1 = zigzag)", static_cast<std::int64_t>(sharding));
  check.agree("d (columns)", shard.cols());
  const int rows = check.local(shard.rows());
  const int P = check.ranks(), rank = check.rank();
  check.local_checks([&] {
    if (root < 0 || root >= P) detail::fail(where, ": root = ", root, " is not a rank of the ", P, " ranks");
    if (heads < 1 || shard.rows() % heads != 0)
      detail::fail(where, ": the shard ", detail::shape(shard), " does not split into heads = ", heads,
                   " heads of equal rows");
    detail::mpi_count(where, "the columns d", shard.cols());
  });
  check.run();
  Index total = 0;
  for (int r = 0; r < P; ++r)
    total += check.gathered(rows, r);
  const Index n = total / heads, d = shard.cols();
  if (n < P)
    detail::fail(where, ": n = ", n, " tokens cannot be sharded over ", P,
                 " ranks (every rank needs at least one token)");
  detail::mpi_count(where, "the rows (heads x n)", total);
  std::vector<int> counts, displs;
  detail::shard_counts(sharding, n, heads, P, counts, displs);
  for (int r = 0; r < P; ++r)
    if (check.gathered(rows, r) != counts[std::size_t(r)])
      detail::fail(where, ": the shards do not fit together: the ranks hold ", check.gathered_list(rows),
                   " rows, but the ", to_string(sharding), " sharding of ", n, " tokens (x ", heads,
                   " heads) over ", P, " ranks gives rank ", r, " ", counts[std::size_t(r)]);
  const Eigen::Ref<const RowMatrix<Scalar>> mine(shard);
  RowMatrix<Scalar> packed(rank == root ? total : 0, d);
  const detail::RowType row(detail::mpi_datatype<Scalar>(), d);
  MPI_Gatherv(mine.data(), counts[std::size_t(rank)], row.get(), packed.data(), counts.data(), displs.data(),
              row.get(), root, comm);
  RowMatrix<Scalar> full(rank == root ? total : 0, d);
  if (rank == root)
    for (int r = 0; r < P; ++r)
      insert_shard(packed.middleRows(displs[std::size_t(r)], counts[std::size_t(r)]), full, heads, sharding,
                   P, r);
  return full;
}

}  // namespace attnkit
