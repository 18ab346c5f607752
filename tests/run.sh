#!/usr/bin/env bash
# Builds attnkit's test suite and runs it with ctest. On a fresh Debian machine
# it first installs the packages it needs (when run as root) or prints the
# apt-get line to run (otherwise).
#
#   bash tests/run.sh              Release build in build/release, whole suite
#   bash tests/run.sh --sanitize   the same under AddressSanitizer + UBSan (assertions on), in build/sanitize
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

# The library needs Eigen; the tests GoogleTest; the benchmarks Google
# Benchmark; attnkit-eval CLI11 and nlohmann-json; the distributed tests,
# example and benchmark Open MPI (libopenmpi-dev, and openmpi-bin for
# mpiexec); the Python bindings (bench/python/) and their tests pybind11,
# Python's headers, numpy and pytest. Without MPI or pybind11 those tests are
# skipped with a message, but this script installs both so they run.
# Optional: matplotlib (plot tests) and clang with its libFuzzer runtime (the
# .npy fuzz target); their tests are skipped with a message without them.
attnkit_require_packages cmake make ninja-build g++ libeigen3-dev libgtest-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev \
  libopenmpi-dev openmpi-bin pybind11-dev python3-pybind11 python3-dev python3-numpy python3-pytest
attnkit_optional_packages python3-matplotlib
# The sanitizer pass compiles with clang: Debian's default LLVM version's
# clang, OpenMP runtime (libomp-dev) and sanitizer runtimes (libclang-rt-dev),
# required together. The release pass compiles with the default c++ (g++ on
# Debian); there clang only builds the .npy fuzz target (libFuzzer), optional.
if [ "$mode" = sanitize ]; then
  attnkit_require_packages clang libomp-dev libclang-rt-dev
else
  attnkit_optional_packages clang
  if command -v clang >/dev/null 2>&1; then
    clang_major=$(clang --version | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -n 1)
    if [ -n "$clang_major" ]; then attnkit_optional_packages "libclang-rt-$clang_major-dev"; fi
  fi
fi

build="$root/build/$mode"
# Explicit, so a build directory configured otherwise before still builds
# (and warns on) everything.
# Each program is compiled once per pass: the examples are not built in-tree
# (ctest's package.examples builds and runs them against the installed
# package).
options=(-DCMAKE_BUILD_TYPE=Release -DATTNKIT_SANITIZE=OFF -DATTNKIT_BUILD_TESTS=ON -DATTNKIT_BUILD_BENCHMARKS=ON
  -DATTNKIT_BUILD_TOOLS=ON -DATTNKIT_BUILD_EXAMPLES=OFF -DATTNKIT_TEST_PACKAGE=ON -DATTNKIT_NATIVE=ON
  -DATTNKIT_INSTALL=ON)
if [ "$mode" = sanitize ]; then
  # Compiled with clang (its AddressSanitizer + UBSan, OpenMP through
  # libomp): on this code it compiles under the sanitizers in about half
  # GCC's time (attnkit-eval's methods.cpp: 27 s against 248 s), and the
  # suite then runs under a second compiler (the release pass uses the
  # default c++, g++ on Debian). Assertions on (no NDEBUG), -O0 -g1: nothing
  # is optimised away from the checks, and the reports have line numbers.
  # The three test programs whose runs dominate the pass (flash_test,
  # approx_test, distributed_mpi_test: 3 to 7 times slower at -O0) are
  # compiled at -O1 (tests/CMakeLists.txt, OPTIMIZE). Not built again here,
  # because the sanitizers change nothing in them: the benchmark binaries (no
  # test runs them) and the install tests (package.* build Release programs
  # against a fresh install; eval.installed and python.installed check the
  # installed layout, which the release pass checks too). The
  # examples are built in-tree instead, so they run under the sanitizers; the
  # tests are built once each, for the native instruction set
  # (tests/CMakeLists.txt).
  options=(-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O0 -g1" -DATTNKIT_SANITIZE=ON
    -DATTNKIT_BUILD_TESTS=ON -DATTNKIT_BUILD_BENCHMARKS=OFF -DATTNKIT_BUILD_TOOLS=ON -DATTNKIT_BUILD_EXAMPLES=ON
    -DATTNKIT_TEST_PACKAGE=OFF -DATTNKIT_NATIVE=ON -DATTNKIT_INSTALL=ON)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
jobs=$(attnkit_jobs)
# shellcheck disable=SC2046  # attnkit_generator's words: -G Ninja, or none
cmake -S "$root" -B "$build" $(attnkit_generator "$build") "${options[@]}"
cmake --build "$build" -j"$jobs"
ctest --test-dir "$build" --output-on-failure -j"$jobs"
