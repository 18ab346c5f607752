#!/usr/bin/env bash
# Builds attnkit's test suite and runs it with ctest. On a fresh Debian machine
# it first installs the packages it needs (when run as root) or prints the
# apt-get line to run (otherwise).
#
#   bash tests/run.sh              Release build in build/release, whole suite
#   bash tests/run.sh --sanitize   the same under AddressSanitizer + UBSan, in build/sanitize
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../cmake/debian_deps.sh
source "$root/cmake/debian_deps.sh"

mode=release
case "${1:-}" in
  "") ;;
  --sanitize) mode=sanitize ;;
  *) echo "usage: bash tests/run.sh [--sanitize]" >&2; exit 2 ;;
esac

attnkit_require_packages cmake make g++ libeigen3-dev libgtest-dev libbenchmark-dev
# attnkit-eval and .npy support (issue 6): CLI, JSON, numpy interop test,
# plots, and clang's libFuzzer for the .npy reader's fuzz target.
attnkit_require_packages libcli11-dev nlohmann-json3-dev python3-numpy python3-matplotlib clang libclang-rt-14-dev

build="$root/build/$mode"
options=(-DCMAKE_BUILD_TYPE=Release)
if [ "$mode" = sanitize ]; then
  options=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTNKIT_SANITIZE=ON)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
jobs=$(attnkit_jobs)
cmake -S "$root" -B "$build" "${options[@]}"
cmake --build "$build" -j"$jobs"
ctest --test-dir "$build" --output-on-failure -j"$jobs"
