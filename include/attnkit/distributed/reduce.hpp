#pragma once

/// \file attnkit/distributed/reduce.hpp
/// The exact merge of attention partials across processes: flash-decoding's
/// reduction as an MPI reduction. Each rank holds the partial result
/// (O_r, lse_r) of the SAME queries over its own, disjoint, set of keys; the
/// merge over ranks,
///
///   lse = log sum_r e^lse_r,   O = sum_r e^(lse_r - lse) O_r,
///
/// is the attention over the union of the keys. allreduce_attention packs
/// each query row as (lse, O_row) — one element of an MPI contiguous datatype
/// of 1 + d_v scalars — and runs MPI_Allreduce with a user operation
/// (MPI_Op_create) that merges two packed rows exactly:
///
///   x = the operand with the larger lse, y the other (ties: the operand
///       whose bytes compare smaller), w = e^(lse_y - lse_x) in [0, 1],
///   lse = lse_x + log1p(w),   O = (1 / (1 + w)) O_x + (w / (1 + w)) O_y.
///
/// A row with lse = -inf (it saw no key) contributes nothing; a NaN in either
/// row makes the merged row NaN.
///
/// Commutativity. The operation is created commutative (commute = 1). The
/// merge is commutative in exact arithmetic, and the canonical order above
/// makes it commutative bit for bit: op(a, b) and op(b, a) evaluate the same
/// expression on the same operands. It is not associative in floating point
/// (no merge is), but MPI may bracket a reduction as it likes whether or not
/// the operation commutes, so declaring it non-commutative would only force
/// a rank-ordered algorithm without making the result reproducible across
/// process counts or algorithms. With a bit-for-bit commutative operation,
/// every rank of one MPI_Allreduce receives the same bits (the pairwise
/// exchanges compute a ∘ b on one side and b ∘ a on the other: equal).
///
/// Accuracy: against the exact merge of the P partials, for any order and
/// any bracketing of depth D <= P - 1 (unit roundoff u, Λ >= max |lse_r| +
/// log P, |O_r| <= max|v|):
///
///   |ΔO| <= D u max|v| (6 + (D - 1) (Λ + 4)),   |Δlse| <= D u (Λ + 4).
///
/// Per merge: the two quotients (with the rounding of their denominator),
/// the two products and their sum move O by at most 4 u max|v|; the
/// exponential's 2 u (relative, of which a quarter reaches the weights) by
/// u max|v|; the rounding of t = lse_y - lse_x (u |t| in the exponent, and
/// |t| e^t <= 1/e) by 0.74 u max|v|: 6 u max|v| in all. The merged lse adds
/// u (Λ + 4) (the sum, log1p and the weight's error). An error e in an input
/// lse moves the weights by at most e / 4, so O by e max|v| / 2 per operand;
/// along the deepest path the D merges add up to the bound. docs/distributed.md
/// has the derivation; tests/distributed/reduce_test.cpp checks it.

#include <mpi.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "attnkit/attention/problem.hpp"
#include "attnkit/distributed/detail/collective.hpp"

namespace attnkit {

namespace detail {

/// Merges `rows` packed rows (lse, O_0 .. O_{d_v - 1}) of `in` into `inout`
/// (see the file comment): symmetric in its two operands bit for bit.
template <typename Scalar>
void merge_packed_rows(const Scalar* in, Scalar* inout, Index rows, Index d_v) {
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  const Index width = d_v + 1;
  const std::size_t bytes = static_cast<std::size_t>(width) * sizeof(Scalar);
  for (Index i = 0; i < rows; ++i) {
    const Scalar* a = in + i * width;
    Scalar* out = inout + i * width;
    const Scalar* b = out;
    const bool a_first = a[0] > b[0] || (!(b[0] > a[0]) && std::memcmp(a, b, bytes) < 0);
    const Scalar* x = a_first ? a : b;
    const Scalar* y = a_first ? b : a;
    if (y[0] == minus_inf) {  // y saw no key (and so x, if both did not)
      if (x != out) std::memcpy(out, x, bytes);
      continue;
    }
    const Scalar lx = x[0], ly = y[0];
    const Scalar w = std::exp(ly - lx);  // in [0, 1] unless NaN
    const Scalar total = Scalar(1) + w;
    const Scalar fx = Scalar(1) / total, fy = w / total;
    // Column c reads x[c] and y[c] before writing out[c]; out is x or y.
    for (Index c = 1; c < width; ++c)
      out[c] = fx * x[c] + fy * y[c];
    out[0] = lx + std::log1p(w);
  }
}

template <typename Scalar>
void merge_packed_op(void* in, void* inout, int* len, MPI_Datatype* type) {
  int size = 0;
  MPI_Type_size(*type, &size);
  const Index d_v = static_cast<Index>(size) / static_cast<Index>(sizeof(Scalar)) - 1;
  merge_packed_rows(static_cast<const Scalar*>(in), static_cast<Scalar*>(inout), static_cast<Index>(*len),
                    d_v);
}

/// The reduction operation for Scalar, created once per process and freed
/// when MPI is finalised (an attribute on MPI_COMM_SELF, whose delete
/// callback MPI_Finalize runs first).
template <typename Scalar>
MPI_Op merge_op() {
  static MPI_Op op = MPI_OP_NULL;
  if (op == MPI_OP_NULL) {
    MPI_Op_create(&merge_packed_op<Scalar>, /*commute=*/1, &op);
    int keyval = MPI_KEYVAL_INVALID;
    MPI_Comm_create_keyval(
        MPI_COMM_NULL_COPY_FN,
        [](MPI_Comm, int, void*, void*) -> int {
          MPI_Op_free(&op);
          op = MPI_OP_NULL;
          return MPI_SUCCESS;
        },
        &keyval, nullptr);
    MPI_Comm_set_attr(MPI_COMM_SELF, keyval, nullptr);
    MPI_Comm_free_keyval(&keyval);
  }
  return op;
}

/// MPI_Allreduce of packed rows with merge_op; `packed` is rows x (1 + d_v).
template <typename Scalar>
void allreduce_packed(MPI_Comm comm, Scalar* packed, int rows, Index d_v) {
  MPI_Datatype row = MPI_DATATYPE_NULL;
  MPI_Type_contiguous(static_cast<int>(d_v + 1), mpi_datatype<Scalar>(), &row);
  MPI_Type_commit(&row);
  MPI_Allreduce(MPI_IN_PLACE, packed, rows, row, merge_op<Scalar>(), comm);
  MPI_Type_free(&row);
}

/// Packs a result as rows (lse, O_row), merges them over `comm` and unpacks
/// them (no agreement check: the caller has run one).
template <typename Scalar>
void allreduce_packed_result(MPI_Comm comm, AttentionResult<Scalar>& r) {
  const Index rows = r.output.rows(), d_v = r.output.cols();
  if (rows == 0) return;
  RowMatrix<Scalar> packed(rows, d_v + 1);
  packed.col(0) = r.lse;
  packed.rightCols(d_v) = r.output;
  allreduce_packed(comm, packed.data(), static_cast<int>(rows), d_v);
  r.lse = packed.col(0);
  r.output = packed.rightCols(d_v);
}

}  // namespace detail

/// Merges every rank's partial result of the same queries over disjoint key
/// sets into the attention over all of them, in place, on every rank (see
/// the file comment). Collective over `comm`.
/// \param partial output (n_q x d_v) and lse (n_q): this rank's partial on
///        entry, the merged result (the same bits on every rank) on return.
///        A rank without keys passes zero rows with lse = -inf.
/// \throws std::invalid_argument, on every rank, when the ranks disagree on
///         n_q, d_v or the scalar type, a partial's lse and output rows
///         differ, or n_q x (1 + d_v) exceeds MPI's counts; nothing is
///         changed then.
/// O(n_q d_v log P) time per rank for the usual algorithms.
template <typename Scalar>
void allreduce_attention(MPI_Comm comm, AttentionResult<Scalar>& partial) {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "allreduce_attention merges float or double results");
  const char* where = "allreduce_attention";
  detail::require_mpi(where, comm);
  detail::CollectiveCheck check(comm, where);
  check.agree("the scalar size", static_cast<std::int64_t>(sizeof(Scalar)));
  check.agree("the query rows (rows of the output)", partial.output.rows());
  check.agree("d_v (columns of the output)", partial.output.cols());
  check.local_checks([&] {
    if (partial.lse.size() != partial.output.rows())
      detail::fail(where, ": lse has ", partial.lse.size(), " entries for an output of ",
                   partial.output.rows(), " rows");
    detail::mpi_count(where, "query rows", partial.output.rows());
    detail::mpi_count(where, "1 + d_v", partial.output.cols() + 1);
  });
  check.run();
  detail::allreduce_packed_result(comm, partial);
}

}  // namespace attnkit
