#!/usr/bin/env bash
# Runs one benchmark command and records its output in docs/results/NAME.txt,
# headed by what a reader needs to compare figures across machines: the date,
# the commit, the CPU (lscpu model name, the vector ISA flags), and the float
# FMA peak measured just before, in the same session, by flash_bench.
#
#   bash bench/record.sh NAME COMMAND [ARGS...]
#   e.g. bash bench/record.sh flash build/release/bench/flash_bench --benchmark_repetitions=3
#
# Run it on an otherwise idle machine: timings of a shared 2-core VM drift, so
# compare figures within one file (one run), never across files.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 2 ] || { echo "usage: bash bench/record.sh NAME COMMAND [ARGS...]" >&2; exit 2; }
name=$1
shift
out="$root/docs/results/$name.txt"
mkdir -p "$root/docs/results"
flash_bench="$root/build/release/bench/flash_bench"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
  echo "# $name: $*"
  echo "# date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "# commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "# cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores"
  echo "# isa: $(grep -o -w -E 'avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_bf16|avx512_fp16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  if [ -x "$flash_bench" ]; then
    peak=$("$flash_bench" --benchmark_filter='^fma_peak' --benchmark_repetitions=3 \
      --benchmark_report_aggregates_only=true 2>/dev/null | sed -n 's/^FMA peak, \(.*\)$/\1/p' | tr '\n' ';')
    echo "# float FMA peak (flash_bench fma_peak, medians of 3): ${peak:-n/a}"
  fi
  echo
} >"$tmp"
"$@" 2>&1 | tee -a "$tmp"
# Google Benchmark colours its console output on a terminal; the record keeps
# the text only.
sed -i 's/\x1b\[[0-9;]*m//g' "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "recorded: $out" >&2
