#!/usr/bin/env python3
"""Draws the error-versus-speedup frontier of approximate attention from
approx_bench's Google Benchmark JSON (--benchmark_out=F --benchmark_out_format=json).

For one workload and n, every row of the families
  budgeted_B<B>   approx_attention, budgeted mode (second-order estimator)
  monopole_B<B>   the same budgets, centroid-only far field
  topk_k<k>       exact top-k attention with k keys per query
  certified_eps<E> the certified mode
is a point: x = flash's time / the row's time (same run), y = the measured
error max |O' - O| / max|V| (the counter err_contract times the row's eps:
its own for certified rows, approx_bench's nominal 1e-2 for the others), and
for the approximate rows also the bound they reported (bound_contract times
eps, hollow markers; bounds above 10 max|V| are drawn on the frame's top
edge). Medians are used when the run was repeated.

  python3 bench/plot_approx_frontier.py approx.json --workload llm --n 65536 -o frontier.png

Exits 2 with one line when the JSON lacks the flash row or any family.
"""
import argparse
import json
import re
import sys

NOMINAL_EPS = 1e-2  # approx_bench's kNominalEps (and ApproxOptions' default eps)
TOP = 10.0  # the frame's top: reported bounds above it are drawn on the edge


def rows(path, workload, n):
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        if b.get("error_occurred") or not b.get("real_time"):
            continue  # a row that failed or did not run
        name = b.get("run_name", b["name"])
        name = re.sub(r"/(iterations|real_time|manual_time).*$", "", name)
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != workload or parts[1] != str(n):
            continue
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b.get("time_unit", "ns")]
        # A repeated run: keep the median; a single run: the only one.
        if parts[2] in out and b.get("run_type") != "aggregate":
            continue
        out[parts[2]] = dict(b, seconds=b["real_time"] * unit)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json")
    ap.add_argument("--workload", default="llm")
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    try:
        r = rows(a.json, a.workload, a.n)
    except (OSError, ValueError, KeyError) as e:
        print(f"plot_approx_frontier: {a.json}: {e}", file=sys.stderr)
        return 2
    if "flash" not in r:
        print(f"plot_approx_frontier: {a.json} has no {a.workload}/{a.n}/flash row", file=sys.stderr)
        return 2
    flash = r["flash"]["seconds"]
    families = [
        ("budgeted_B", "budgeted (second-order)", "tab:blue", "o"),
        ("monopole_B", "budgeted, centroid only", "tab:orange", "s"),
        ("topk_k", "exact top-k", "tab:green", "^"),
        ("certified_eps", "certified", "tab:red", "D"),
    ]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    missing = []
    for prefix, label, colour, marker in families:
        pts = []
        for name, b in r.items():
            if not name.startswith(prefix):
                continue
            if "err_contract" not in b:
                continue
            eps = float(name[len(prefix):]) if prefix == "certified_eps" else NOMINAL_EPS
            bound = b.get("bound_contract")
            pts.append((flash / b["seconds"], b["err_contract"] * eps, None if bound is None else bound * eps,
                        name[len(prefix):]))
        if not pts:
            missing.append(prefix)
            continue
        pts.sort(key=lambda p: p[0])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour, label=label + ": error")
        for x, y, _, tag in pts:
            ax.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour)
        # Bounds beyond the frame (a budgeted bound may be astronomically
        # loose) are drawn on its top edge.
        bounds = [(p[0], min(p[2], TOP)) for p in pts if p[2] is not None and p[2] == p[2]]
        if bounds:
            ax.plot([p[0] for p in bounds], [p[1] for p in bounds], marker=marker, color=colour,
                    linestyle=":", markerfacecolor="none", label=label + ": reported bound")
    if len(missing) == len(families):
        print(f"plot_approx_frontier: {a.json} has no approximate rows for {a.workload}/{a.n}", file=sys.stderr)
        return 2
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.axhline(NOMINAL_EPS, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(top=TOP * 1.5)
    ax.set_xlabel("speedup over exact flash attention (same run)")
    ax.set_ylabel("max |O' - O| / max|V|  (dashed: 1e-2)")
    ax.set_title(f"{a.workload} workload, n = {a.n}, d = 64, causal")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.output, dpi=110)
    print(f"wrote {a.output}" + (f" (no rows of {', '.join(missing)})" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
