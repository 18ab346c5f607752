// attnkit-eval: the binary users run on their own tensors. Subcommands:
//   attention  one method's output (and log-sum-exp) written as .npy
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

#include "eval/cli.hpp"
#include "eval/malloc_probe.hpp"  // defines malloc & co. (glibc): this translation unit only
#include "eval/methods.hpp"

int main(int argc, char** argv) {
  try {
    const attnkit::eval::Registry registry = attnkit::eval::builtin_methods();
    return attnkit::eval::run_cli(argc, argv, registry, attnkit::eval::malloc_probe(), std::cout, std::cerr);
  } catch (const std::exception& e) {
    std::cerr << "attnkit-eval: internal error: " << e.what() << '\n';
    return 1;
  }
}
