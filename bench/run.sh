#!/usr/bin/env bash
# Builds attnkit-eval (Release, -march=native; bench/attnkit-eval/) and runs
# `attnkit-eval compare` on the built-in workload (LLM-like, 8 heads,
# n = 4096, d = 128): the reference once, untimed, as the oracle, then every
# other method timed and measured against it, as a table (docs/eval.md). On a
# fresh Debian machine it first installs the packages it needs (when run as
# root) or prints the apt-get line to run (otherwise).
#
#   bash bench/run.sh [compare flags...]     e.g. --json r.json --plot r.png,
#                                            --mask causal --window 1024, --kv-heads 2,
#                                            --repeats 3 (default here: 1)
#
# The Google Benchmark binaries (bench/*_bench.cpp) are built with
# `cmake --build build/release --target flash_bench` etc.; docs/benchmarks.md
# gives each one's command and results.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../cmake/debian_deps.sh
source "$root/cmake/debian_deps.sh"

attnkit_require_packages cmake make ninja-build g++ libeigen3-dev libgtest-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev
attnkit_optional_packages python3-matplotlib  # only for --plot

build="$root/build/release"
# shellcheck disable=SC2046  # attnkit_generator's words: -G Ninja, or none
cmake -S "$root" -B "$build" $(attnkit_generator "$build") -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$(attnkit_jobs)" --target attnkit-eval
# The quick look: one timed call per setting after the untimed one, unless
# --repeats says otherwise (compare's own default is 3).
repeats=(--repeats 1)
for arg in "$@"; do
  case "$arg" in --repeats | --repeats=*) repeats=() ;; esac
done
"$build/bench/attnkit-eval" compare "${repeats[@]}" "$@"
