// Tests of attnkit/distributed/scatter.hpp, run on P = 1 .. 4 ranks:
// scatter_shards gives every rank exactly extract_shard's rows, gather_shards
// puts them back on the root (bit for bit), for both shardings, one and
// several heads, n not divisible by P, any root, matrices and lse vectors;
// bad input throws the same error on every rank.

#include "attnkit/distributed/scatter.hpp"

#include <gtest/gtest.h>

#include "distributed/mpi_test_util.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using test::matrices_near;
using test::MpiTest;
using test::throws_everywhere;

template <typename Scalar>
class ScatterTest : public MpiTest {};
TYPED_TEST_SUITE(ScatterTest, test::Scalars);

TYPED_TEST(ScatterTest, ScatterThenGatherIsTheIdentity) {
  using Scalar = TypeParam;
  const int P = test::world_size(), rank = test::world_rank();
  int cases = 0;
  for (const Sharding sharding : {Sharding::contiguous, Sharding::zigzag})
    for (const Index heads : {1, 3})
      for (const Index n : {Index(P), Index(7), Index(53)}) {
        if (n < P) continue;
        for (const int root : {0, P - 1}) {
          const RowMatrix<Scalar> full = test::random_matrix<Scalar>(heads * n, 5, 61000 + std::uint64_t(n));
          const RowMatrix<Scalar> empty;
          const RowMatrix<Scalar> shard =
              scatter_shards(MPI_COMM_WORLD, root, rank == root ? full : empty, heads, sharding);
          EXPECT_TRUE(matrices_near(shard, extract_shard(full, heads, sharding, P, rank), 0.0));
          const RowMatrix<Scalar> back = gather_shards(MPI_COMM_WORLD, root, shard, heads, sharding);
          if (rank == root) {
            EXPECT_TRUE(matrices_near(back, full, 0.0));
          } else {
            EXPECT_EQ(back.rows(), 0);
          }
          // An lse-like vector: a (heads n_r x 1) column.
          const Vector<Scalar> column = shard.col(0);
          const RowMatrix<Scalar> lse = gather_shards(MPI_COMM_WORLD, root, column, heads, sharding);
          if (rank == root) {
            EXPECT_TRUE(matrices_near(lse, full.col(0), 0.0));
          }
          ++cases;
        }
      }
  EXPECT_GT(cases, 10);
}

TYPED_TEST(ScatterTest, BadInputThrowsTheSameErrorOnEveryRank) {
  using Scalar = TypeParam;
  const int P = test::world_size(), rank = test::world_rank();
  const RowMatrix<Scalar> full = RowMatrix<Scalar>::Ones(12, 3), empty;
  const Sharding z = Sharding::zigzag;
  EXPECT_TRUE(throws_everywhere([&] { scatter_shards(MPI_COMM_WORLD, P, full, 1, z); },
                                {"root = ", "is not a rank"}));
  EXPECT_TRUE(throws_everywhere([&] { scatter_shards(MPI_COMM_WORLD, 0, rank == 0 ? full : empty, 5, z); },
                                {"scatter_shards", "heads = 5"}));
  EXPECT_TRUE(throws_everywhere([&] { gather_shards(MPI_COMM_WORLD, 0, full, 5, z); },
                                {"gather_shards", "heads = 5"}));
  if (P > 1) {
    const RowMatrix<Scalar> few = RowMatrix<Scalar>::Ones(P - 1, 3);
    EXPECT_TRUE(throws_everywhere([&] { scatter_shards(MPI_COMM_WORLD, 0, rank == 0 ? few : empty, 1, z); },
                                  {"cannot be sharded over"}));
    EXPECT_TRUE(throws_everywhere([&] { scatter_shards(MPI_COMM_WORLD, 0, full, rank == P - 1 ? 2 : 1, z); },
                                  {"ranks disagree on heads"}));
    // Shards of 12 rows on every rank but one do not fit the zigzag sharding of 12 P
    // + 2 tokens when one rank holds 14.
    const RowMatrix<Scalar> more = RowMatrix<Scalar>::Ones(rank == P - 1 ? 14 : 12, 3);
    EXPECT_TRUE(throws_everywhere([&] { gather_shards(MPI_COMM_WORLD, 0, more, 1, z); },
                                  {"gather_shards", "do not fit together"}));
  }
}

}  // namespace
}  // namespace attnkit
