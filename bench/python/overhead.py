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
  ... --threads 1 --clock thread_cpu   CPU time of the calling thread: robust to other jobs
  ... --smoke                          a tiny run that only checks the script works (ctest)

Prefill: the median ratio of adjacent (C++, Python) call pairs, which cancels
the load drifting between calls; decode: minima and medians of alternating
blocks. On a shared machine the figures are indicative.
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


CLOCKS = {"wall": time.perf_counter, "thread_cpu": time.thread_time}
clock = "wall"


def python_seconds(call, repeats):
    now = CLOCKS[clock]
    times = []
    for _ in range(repeats):
        start = now()
        call()
        times.append(now() - start)
    return times


def cpp_seconds(q, k, v, mask, threads, repeats):
    return attnkit._core._time_cpp(q, k, v, mask=mask, threads=threads, repeats=repeats, clock=clock)


def blocks(q, k, v, mask, threads, repeats, rounds):
    """Alternating blocks of `repeats` calls from C++ and from Python:
    (python, cpp) minima (the least disturbed calls: timeit's choice) and
    medians, in seconds. For short calls (decode)."""
    py, cpp = [], []

    def call():
        return attnkit.attention(q, k, v, mask=mask, threads=threads)

    call()  # warm-up: first touch of the allocator, the OpenMP team
    for _ in range(rounds):
        cpp += cpp_seconds(q, k, v, mask, threads, repeats)
        py += python_seconds(call, repeats)
    return (min(py), min(cpp)), (statistics.median(py), statistics.median(cpp))


def pairs(q, k, v, mask, threads, count):
    """For long calls (prefill), where the machine's load drifts between
    blocks: `count` adjacent (C++, Python) pairs, their order alternating;
    returns the ratios python / C++ of each pair, and both sides' minima."""
    ratios, py_min, cpp_min = [], float("inf"), float("inf")

    def call():
        return attnkit.attention(q, k, v, mask=mask, threads=threads)

    call()
    for i in range(count):
        if i % 2 == 0:
            c = cpp_seconds(q, k, v, mask, threads, 1)[0]
            p = python_seconds(call, 1)[0]
        else:
            p = python_seconds(call, 1)[0]
            c = cpp_seconds(q, k, v, mask, threads, 1)[0]
        ratios.append(p / c)
        py_min, cpp_min = min(py_min, p), min(cpp_min, c)
    return ratios, py_min, cpp_min


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4096, help="tokens (prefill n_q = n_k; decode n_k)")
    parser.add_argument("--d", type=int, default=64, help="head width")
    parser.add_argument("--threads", type=int, default=0, help="kernel threads (0: every core)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; thread_cpu: CPU time of the calling thread, which time spent "
                             "descheduled by other jobs does not inflate (needs --threads 1)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, few repeats (checks the script only)")
    args = parser.parse_args()
    if args.clock == "thread_cpu" and args.threads != 1:
        parser.error("--clock thread_cpu measures the calling thread only: use --threads 1")
    global clock
    clock = args.clock
    n, d = (256, 16) if args.smoke else (args.n, args.d)
    prefill_pairs = 2 if args.smoke else 15
    decode_repeats, decode_rounds = (20, 2) if args.smoke else (1000, 5)

    rng = np.random.default_rng(1)
    print(f"attnkit {attnkit.__version__}: SIMD {attnkit.simd}; OpenMP {attnkit.openmp}, "
          f"threads {args.threads or attnkit.max_threads()}; clock {clock}")
    q, k, v = (rng.standard_normal((n, d), dtype=np.float32) for _ in range(3))
    ratios, py, cpp = pairs(q, k, v, "none", args.threads, prefill_pairs)
    print(f"prefill n = {n}, d = {d}, float32: overhead {100 * (statistics.median(ratios) - 1):+.3f} % "
          f"(median over {len(ratios)} adjacent pairs; quartiles {100 * (np.percentile(ratios, 25) - 1):+.2f} % .. "
          f"{100 * (np.percentile(ratios, 75) - 1):+.2f} %); fastest call: python {py * 1e3:.3f} ms, "
          f"C++ {cpp * 1e3:.3f} ms")
    q1 = rng.standard_normal((1, d), dtype=np.float32)
    for what, (py, cpp) in zip(("min", "median"), blocks(q1, k, v, "causal", args.threads, decode_repeats,
                                                         decode_rounds)):
        print(f"decode  1 query over {n} keys, d = {d} ({what}): python {py * 1e6:.1f} us, C++ {cpp * 1e6:.1f} us, "
              f"overhead {(py - cpp) * 1e6:+.1f} us per call")
    print("indicative only on a shared machine")


if __name__ == "__main__":
    main()
