#pragma once

// attnkit-eval: `attention --method ring`, exact sequence-parallel attention
// over the MPI ranks of mpiexec (attnkit/distributed/ring_attention.hpp).
//
// Only rank 0 runs the command line (run_cli): it parses the flags, reads the
// .npy headers (or plans the built-in workload), checks the outputs and every
// shape; the other ranks wait. The ring method's kernel, called by
// `attention` on rank 0 with the whole Q, K, V, tells the other ranks to join
// (the scalar type, heads, options and sharding), scatters the shards
// (scatter_shards), runs ring_attention_heads on every rank and gathers the
// output and log-sum-exp on rank 0 (gather_shards), which writes them exactly
// as `--method flash` does (attention.cpp's staged outputs). When rank 0
// stops before that (bad arguments or input: exit 2), it sends the exit code
// instead, so every rank exits with it and none waits for a collective.
// Rank 0 prints the one-line message. Errors of the collective calls (the
// library's agreement checks) are thrown on every rank alike.
//
// MPI is optional: without ATTNKIT_EVAL_HAVE_MPI (no attnkit::mpi target at
// build time) the method exists but refuses to run ("attnkit-eval was built
// without MPI", exit 2). MPI_Init runs only when the command line asks for
// `attention --method ring` (ring_requested), MPI_Finalize on every exit path.

#include <ostream>

namespace attnkit_eval {

class Registry;
class PeakMemoryProbe;

/// True when `argv` asks for `attention --method ring` (or --method=ring).
bool ring_requested(int argc, const char* const* argv);

/// Adds the `ring` method (options --sharding and --threads) to `registry`.
/// main() adds it for the `attention` subcommand only: compare and prune
/// never run it.
void add_ring_method(Registry& registry);

/// main() of `attention --method ring`: MPI_Init, the argument agreement
/// check over the ranks, run_cli on rank 0 and the ring's part on the others,
/// MPI_Finalize; returns the exit code (the same on every rank). Built without
/// MPI: run_cli, which refuses --method ring.
int run_ring_cli(int argc, char** argv, const Registry& registry, PeakMemoryProbe* probe, std::ostream& out,
                 std::ostream& err);

}  // namespace attnkit_eval
