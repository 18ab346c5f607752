// Peak memory of one attention call beyond its inputs and output, measured
// from outside with /usr/bin/time -v ("Maximum resident set size"):
//
//   /usr/bin/time -v build/release/bench/flash_memory inputs 65536 64
//   /usr/bin/time -v build/release/bench/flash_memory flash 65536 64
//
// "inputs" allocates and fills Q, K, V (n x d floats) and O (n x d) and the
// lse and stops; "flash" does the same and then runs the fused causal kernel
// on every core. The difference of the two peaks is what the kernel needs.
// "materialized" would need the n x n score matrix (16 GiB at n = 65536): it
// refuses above n = 16384.

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "attnkit/attention/flash.hpp"
#include "bench_util.hpp"

int main(int argc, char** argv) {
  if (argc != 4 || (std::strcmp(argv[1], "inputs") != 0 && std::strcmp(argv[1], "flash") != 0 &&
                    std::strcmp(argv[1], "materialized") != 0)) {
    std::fprintf(stderr, "usage: flash_memory inputs|flash|materialized N D\n");
    return 2;
  }
  const attnkit::Index n = std::atol(argv[2]), d = std::atol(argv[3]);
  if (n < 1 || d < 1) {
    std::fprintf(stderr, "flash_memory: N and D must be positive\n");
    return 2;
  }
  // Filled directly in float (the workload generators draw in double first,
  // whose temporaries would dominate the peak).
  attnkit::detail::Random rng(1);
  struct {
    attnkit::RowMatrix<float> q, k, v;
  } w{attnkit::RowMatrix<float>(n, d), attnkit::RowMatrix<float>(n, d), attnkit::RowMatrix<float>(n, d)};
  for (auto* m : {&w.q, &w.k, &w.v})
    for (attnkit::Index i = 0; i < m->size(); ++i)
      m->data()[i] = static_cast<float>(rng.normal());
  attnkit::AttentionResult<float> r{attnkit::RowMatrix<float>::Zero(n, d), attnkit::Vector<float>::Zero(n)};
  if (std::strcmp(argv[1], "flash") == 0) {
    attnkit::flash_attention_into(w.q, w.k, w.v, r.output, r.lse, {attnkit::Mask::causal()});
  } else if (std::strcmp(argv[1], "materialized") == 0) {
    if (n > 16384) {
      std::fprintf(stderr, "flash_memory: materialized needs n^2 floats; refusing n > 16384\n");
      return 2;
    }
    r = attnkit::bench::materialized_attention(w.q, w.k, w.v, {attnkit::Mask::causal(), {}});
  }
  std::printf("%s n = %ld d = %ld: output checksum %.6g\n", argv[1], static_cast<long>(n),
              static_cast<long>(d), static_cast<double>(r.output.sum()));
  return 0;
}
