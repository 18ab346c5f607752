// attnkit-eval: the binary users run on their own tensors. Subcommands:
//   attention  one method's output (and log-sum-exp) written as .npy; with
//              --method ring under mpiexec, over the MPI ranks (ring.hpp)
//   prune      key-dimension pruning under the protocol of docs/pruning.md:
//              kept dimensions (int64 .npy) and the judged outputs
//   compare    every method timed and measured against the reference: table,
//              --json, --csv, --plot
// Inputs are .npy files (2-D (n, d) or 3-D (heads, n, d)) or, without files,
// the built-in LLM-like workload (8 heads, n = 4096, d = 128, seed 1).
// Exit codes: 0 success, 2 bad arguments or input, 1 internal error.
// Full documentation: docs/eval.md.

#include <exception>
#include <iostream>
#include <string_view>

#include "attnkit-eval/cli.hpp"
#include "attnkit-eval/memory.hpp"
#include "attnkit-eval/methods.hpp"
#include "attnkit-eval/ring.hpp"

int main(int argc, char** argv) {
  try {
    attnkit_eval::Registry registry = attnkit_eval::builtin_methods();
    // The ring method is an `attention` method only (compare and prune never
    // run it); MPI is initialised only when it is asked for.
    if (argc >= 2 && std::string_view(argv[1]) == "attention") attnkit_eval::add_ring_method(registry);
    if (attnkit_eval::ring_requested(argc, argv))
      return attnkit_eval::run_ring_cli(argc, argv, registry, attnkit_eval::malloc_probe(), std::cout,
                                        std::cerr);
    return attnkit_eval::run_cli(argc, argv, registry, attnkit_eval::malloc_probe(), std::cout, std::cerr);
  } catch (const std::exception& e) {
    std::cerr << "attnkit-eval: internal error: " << e.what() << '\n';
    return 1;
  }
}
