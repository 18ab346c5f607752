#pragma once

// Helpers of the MPI tests (tests/distributed/): the fixture that makes a
// failure on one rank a failure on every rank, same-on-every-rank checks,
// and the bound of merged partial results.
//
// Rule for these tests: every rank must reach every collective call, so no
// ASSERT_* (which returns early) may precede one; the tests use EXPECT_*.

#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attention/flash_bounds.hpp"
#include "attnkit/core/types.hpp"
#include "test_util.hpp"

namespace attnkit::test {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

inline int world_size() {
  int p = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  return p;
}

/// A test fixture whose result is agreed on: a failure on any rank fails
/// the test on every rank.
class MpiTest : public ::testing::Test {
 protected:
  void TearDown() override {
    const int mine = HasFailure() ? 1 : 0;
    int any = 0;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any && !mine) ADD_FAILURE() << "failed on another rank";
  }
};

/// True on every rank when `bytes` are the same on every rank (a 64-bit
/// hash compared with MPI_MIN and MPI_MAX). Collective.
inline bool same_on_every_rank(const void* data, std::size_t bytes) {
  const std::string s(static_cast<const char*>(data), bytes);
  const auto h = static_cast<std::uint64_t>(std::hash<std::string>{}(s));
  std::uint64_t lo = 0, hi = 0;
  MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  return lo == hi;
}

template <typename Derived>
bool same_on_every_rank(const Eigen::MatrixBase<Derived>& m) {
  const RowMatrix<typename Derived::Scalar> copy = m;
  return same_on_every_rank(copy.data(),
                            static_cast<std::size_t>(copy.size()) * sizeof(typename Derived::Scalar));
}

/// Runs the collective call f on every rank: passes when it throws
/// std::invalid_argument containing every needle on this rank AND the
/// message is the same on every rank. Collective.
template <typename F>
::testing::AssertionResult throws_everywhere(F&& f, std::initializer_list<const char*> needles) {
  std::string message = "(did not throw std::invalid_argument)";
  bool threw = false;
  try {
    f();
  } catch (const std::invalid_argument& e) {
    message = e.what();
    threw = true;
  }
  const bool same = same_on_every_rank(message.data(), message.size());
  if (!threw) return ::testing::AssertionFailure() << "did not throw";
  for (const char* n : needles)
    if (message.find(n) == std::string::npos)
      return ::testing::AssertionFailure() << "message \"" << message << "\" lacks \"" << n << "\"";
  if (!same)
    return ::testing::AssertionFailure() << "the ranks threw different messages; this one: " << message;
  return ::testing::AssertionSuccess() << message;
}

/// The bound of a merge of partial results (attnkit/distributed/reduce.hpp,
/// docs/distributed.md): each leaf partial within `leaf` of its exact value
/// (output; lse within leaf.lse + 4 u Λ, the lse's own rounding included),
/// merged along a path of at most `depth` merges. Per merge the arithmetic
/// adds 6 u max|v| to O and u (Λ + 4) to lse, and the inputs' lse errors
/// e_a, e_b move O by (e_a + e_b) max|v| / 2:
///   |ΔO|   <= leaf.output + D max|v| (6 u + e_leaf + (D - 1) u (Λ + 4)),
///   |Δlse| <= leaf.lse + D u (Λ + 4),
/// with Λ_i = a_i + log n_k (>= |lse| of every partial of row i: a_i bounds
/// its logits, n_k its keys).
template <typename Scalar>
flash_bounds::Bound merged_bound(const flash_bounds::Bound& leaf, const Eigen::VectorXd& lambda, double max_v,
                                 Index depth) {
  const double u = flash_bounds::unit_roundoff<Scalar>(), D = as_double(depth);
  flash_bounds::Bound b = leaf;
  for (Index i = 0; i < leaf.output.size(); ++i) {
    const double step = u * (lambda(i) + 4);
    const double e_leaf = leaf.lse(i) + 4 * u * lambda(i);
    b.output(i) = leaf.output(i) + D * max_v * (6 * u + e_leaf + (D - 1) * step);
    b.lse(i) = leaf.lse(i) + D * step;
  }
  return b;
}

}  // namespace attnkit::test
