// A downstream program of the mpi component: includes attnkit/distributed.hpp
// from the installed package and runs a causal ring attention over the ranks
// of MPI_COMM_WORLD against the single-process kernel (run under mpiexec).
#include <attnkit/attnkit.hpp>
#include <attnkit/distributed.hpp>

#include <mpi.h>

#include <cstdio>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const auto w = attnkit::make_iid_workload<float>({96, 96, 16, 16}, 1);
  const attnkit::AttentionOptions causal{attnkit::Mask::causal()};
  const auto z = attnkit::Sharding::zigzag;
  const auto mine = attnkit::ring_attention(MPI_COMM_WORLD, attnkit::extract_shard(w.q, 1, z, ranks, rank),
                                            attnkit::extract_shard(w.k, 1, z, ranks, rank),
                                            attnkit::extract_shard(w.v, 1, z, ranks, rank), causal);
  const auto one = attnkit::flash_attention(w.q, w.k, w.v, causal);
  int ok = attnkit::max_abs_error(mine.output, attnkit::extract_shard(one.output, 1, z, ranks, rank)) < 1e-5
               ? 1
               : 0;
  int all = 0;
  MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (rank == 0)
    std::printf("attnkit %s mpi consumer on %d ranks: %s\n", attnkit::version_string, ranks,
                all ? "ok" : "FAILED");
  MPI_Finalize();
  return all ? 0 : 1;
}
