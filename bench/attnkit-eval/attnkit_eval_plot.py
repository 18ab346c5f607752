#!/usr/bin/env python3
"""Plots the JSON written by `attnkit-eval compare --json` (attnkit-eval runs
this itself for `--plot`): error against speedup, log-log, one marker per
method and parameter setting.

  python3 attnkit_eval_plot.py RESULTS.json OUT.png

Needs matplotlib (Debian/Ubuntu: sudo apt-get install python3-matplotlib;
otherwise: pip install matplotlib). Exit codes: 0 written, 2 bad arguments or
input, 3 matplotlib missing.
"""

import json
import math
import sys


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "attnkit_eval_plot.py: matplotlib is not installed for "
            + sys.executable
            + "; install it with 'sudo apt-get install python3-matplotlib' (Debian/Ubuntu) "
            "or 'pip install matplotlib'",
            file=sys.stderr,
        )
        return 3
    json_path, png_path = sys.argv[1], sys.argv[2]
    try:
        with open(json_path, encoding="utf-8") as f:
            doc = json.load(f)
        results = doc["results"]
        workload = doc["workload"]
    except (OSError, ValueError, KeyError) as e:
        print(f"attnkit_eval_plot.py: cannot read '{json_path}': {e}", file=sys.stderr)
        return 2

    # Only timed rows have a speedup: the oracle (the reference, computed once,
    # untimed) and failed rows are not drawn.
    results = [
        r
        for r in results
        if r.get("status", "ok") == "ok"
        and r.get("speedup") is not None
        and r.get("rel_fro_error") is not None
        and math.isfinite(r["speedup"])
        and r["speedup"] > 0
    ]
    errors = [r["rel_fro_error"] for r in results]
    positive = [e for e in errors if e > 0 and math.isfinite(e)]
    # log axes cannot show 0: exact agreement is drawn on a floor line below
    # the smallest nonzero error (or at 1e-12) and labelled.
    floor = min(positive) / 10 if positive else 1e-12

    # The legend (outside the axes, right) names every marker; the figure is
    # saved with a tight bounding box so nothing is clipped.
    fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=120)
    markers = "osD^v<>Pp*hX"
    for i, r in enumerate(results):
        err = r["rel_fro_error"]
        if not math.isfinite(err):
            continue
        y = err if err > 0 else floor
        label = r["method"] if r["params"] in ("", "-") else f"{r['method']} ({r['params']})"
        if err == 0:
            label += ": error 0"
        ax.scatter(
            [r["speedup"]],
            [y],
            marker=markers[i % len(markers)],
            s=70,
            label=label,
        )
    if any(r["rel_fro_error"] == 0 for r in results):
        ax.axhline(floor, color="0.8", linewidth=0.8, linestyle="--", zorder=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    speedups = [r["speedup"] for r in results]
    if speedups:
        ax.set_xlim(min(speedups) / 2, max(speedups) * 2)
    else:
        ax.set_xlim(0.1, 10)
    top = max(positive) if positive else floor
    ax.set_ylim(floor / 4, top * 10)
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    # Label the minor ticks 2 and 5 of every decade (0.2, 0.5, 2, 5, 20, ...).
    def leading_digit(x):
        return f"{x:g}".replace("0.", "").lstrip("0")[:1]

    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if leading_digit(x) in ("2", "5") else ""))
    ax.set_xlabel(f"speedup (higher is faster)\nvs {workload.get('speedup_baseline', 'the reference')}")
    ax.set_ylabel("relative Frobenius error vs the reference")
    source = (
        f"built-in {workload.get('kind')} workload"
        if workload.get("source") == "built-in"
        else "user tensors"
    )
    ax.set_title(
        f"attnkit-eval compare: {source}, {workload['heads']} heads,\n"
        f"n={workload['n_k']}, d={workload['d']}, {workload['dtype']}, mask {workload['mask']}",
        fontsize=9,
    )
    ax.grid(True, which="both", linewidth=0.3)
    if results:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    try:
        fig.savefig(png_path, bbox_inches="tight")
    except OSError as e:
        print(f"attnkit_eval_plot.py: cannot write '{png_path}': {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
