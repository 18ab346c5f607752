#!/usr/bin/env bash
# Builds attnkit (Release, -march=native) and runs its main benchmark. On a
# fresh Debian machine it first installs the packages it needs (when run as
# root) or prints the apt-get line to run (otherwise).
#
#   bash bench/run.sh [benchmark flags...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../cmake/debian_deps.sh
source "$root/cmake/debian_deps.sh"

attnkit_require_packages cmake make g++ libeigen3-dev libgtest-dev libbenchmark-dev

build="$root/build/release"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$(attnkit_jobs)" --target reference_bench
"$build/bench/reference_bench" "$@"
