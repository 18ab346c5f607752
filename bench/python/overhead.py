#!/usr/bin/env python3
"""The cost of calling attnkit's kernel from Python.

Times attnkit.attention(q, k, v) from Python against the same kernel call
timed inside C++ (attnkit._core._time_cpp: flash_attention_heads_into on the
same buffers, into a preallocated output, clocked around the library call
alone). The difference is everything the binding adds: argument parsing,
the dtype and layout checks, the output's allocation, releasing and taking
back the GIL.

  prefill  q, k, v (n, d) float32, no mask: the overhead in percent
  decode   one query (1, d) against n cached keys, causal: per call, in us

Usage (from a build: the package is in build/release/bench/python):
  PYTHONPATH=build/release/bench/python /usr/bin/python3 bench/python/overhead.py [--n 4096] [--d 64]
  ... --smoke    a tiny run that only checks the script works (ctest)

Minima and medians of interleaved runs; on a shared machine the figures are
indicative (the minimum is the least disturbed).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

# This script sits next to the source package attnkit/, which lacks the
# compiled extension: import the built package (PYTHONPATH) instead.
_here = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _here]
import attnkit  # noqa: E402


def python_seconds(call, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def measure(q, k, v, mask, threads, repeats, rounds):
    """(python, cpp) seconds over `rounds` interleaved blocks: each side's
    minimum (what the call costs when nothing else interferes: timeit's
    choice) and its median."""
    py, cpp = [], []

    def call():
        return attnkit.attention(q, k, v, mask=mask, threads=threads)

    call()  # warm-up: first-touch of the allocator, the OpenMP team
    for _ in range(rounds):
        cpp += attnkit._core._time_cpp(q, k, v, mask=mask, threads=threads, repeats=repeats)
        py += python_seconds(call, repeats)
    return (min(py), min(cpp)), (statistics.median(py), statistics.median(cpp))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4096, help="tokens (prefill n_q = n_k; decode n_k)")
    parser.add_argument("--d", type=int, default=64, help="head width")
    parser.add_argument("--threads", type=int, default=0, help="kernel threads (0: every core)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, few repeats (checks the script only)")
    args = parser.parse_args()
    n, d = (256, 16) if args.smoke else (args.n, args.d)
    prefill_repeats, prefill_rounds = (1, 2) if args.smoke else (5, 3)
    decode_repeats, decode_rounds = (20, 2) if args.smoke else (1000, 5)

    rng = np.random.default_rng(1)
    print(f"attnkit {attnkit.__version__}: SIMD {attnkit.simd}; OpenMP {attnkit.openmp}, "
          f"threads {args.threads or attnkit.max_threads()}")
    q, k, v = (rng.standard_normal((n, d), dtype=np.float32) for _ in range(3))
    for what, (py, cpp) in zip(("min", "median"), measure(q, k, v, "none", args.threads, prefill_repeats,
                                                          prefill_rounds)):
        print(f"prefill n = {n}, d = {d}, float32 ({what}): python {py * 1e3:.3f} ms, C++ {cpp * 1e3:.3f} ms, "
              f"overhead {100 * (py - cpp) / cpp:+.3f} %")
    q1 = rng.standard_normal((1, d), dtype=np.float32)
    for what, (py, cpp) in zip(("min", "median"), measure(q1, k, v, "causal", args.threads, decode_repeats,
                                                          decode_rounds)):
        print(f"decode  1 query over {n} keys, d = {d} ({what}): python {py * 1e6:.1f} us, C++ {cpp * 1e6:.1f} us, "
              f"overhead {(py - cpp) * 1e6:+.1f} us per call")
    print("interleaved runs; indicative only on a shared machine")


if __name__ == "__main__":
    main()
