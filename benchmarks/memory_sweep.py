"""How much replay has to remember: `replay` on the Suzuki–Miyaura stream for each memory size.

    python benchmarks/memory_sweep.py [--strategy SPEC] [--memories 100,300,1000,all] [--seeds 0,1,2]
                                      [--out DIR] [--resume] [-- OPTIONS]
    python benchmarks/memory_sweep.py --replot

For each memory (`reservoir:N`, at most N stored reactions, or `all`) and seed, runs the replay
strategy `--strategy` (default `replay`; e.g. `replay:weight=tasks:epochs=40`) with the command's
defaults otherwise (the continual benchmark's machinery, one run directory each under `--out`;
`--resume` continues them). Anything after `--` is passed to `mistral-cl continual` and recorded with
the rows (`options`), which are kept apart from the rows swept without them. Writes
benchmarks/results/continual_memory_sweep.json: per strategy and memory the mean and sample sd over
seeds of the final per-task RMSE, RMSE-BWT, per-task R² ACC and the wall and CPU seconds, each seed's
rows, the task order its options ask for (`order`, as the command reads them), and the date, commit and
load of the sweep that ran it. A sweep replaces the rows of its own
strategy and memories and keeps the others, so strategies swept on different days share one table.
continual_memory_sweep.png plots the final RMSE and RMSE-BWT against the memory size, one line per
strategy, with the cumulative one-hot forest of `results/classical.json` (sorted order) as a line and,
where `benchmarks/classical.py --protocols memory:reservoir:N` recorded it, the one-hot forest that
stores what replay stores (the current task and the same memory policy) at each size: the comparison at
equal storage. `--replot` runs nothing: it takes both forests from `results/classical.json` again and
redraws the plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from continual import (  # noqa: E402
    RESULTS,
    LoadSampler,
    git_commit,
    machine,
    run_seed,
    seed_directory,
    task_order_of,
)

from mistral_cl import hostmem  # noqa: E402
from mistral_cl.report import _pyplot  # noqa: E402

FIGURES = ("RMSE %", "RMSE BWT", "ACC", "wall s", "CPU s")


def memory_spec(memory: str) -> str:
    return "all" if memory == "all" else f"reservoir:{int(memory)}"


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd over seeds of each figure of one memory's `replay` rows."""
    out: dict[str, Any] = {}
    for key in FIGURES:
        values = np.array([r[key] for r in rows], np.float64)
        out[key] = {"mean": float(values.mean()),
                    "sd": float(values.std(ddof=1)) if len(values) > 1 else None}
    return out


def _forest_rows() -> list[dict[str, Any]]:
    """The one-hot forests of the Suzuki stream in sorted order (`results/classical.json`)."""
    path = RESULTS / "classical.json"
    if not path.exists():
        return []
    return [row for row in json.loads(path.read_text())["rows"]
            if (row["data"], row["features"], row["order"]) == ("suzuki", "onehot", "sorted")]


def forest_bar(rows: list[dict[str, Any]] | None = None) -> dict[str, float] | None:
    """The cumulative one-hot forest's final per-task RMSE (sorted order), if recorded; `rows`: the
    forests already read (`_forest_rows`)."""
    rows = _forest_rows() if rows is None else rows
    return next((row["rmse_acc"] for row in rows if row["protocol"] == "cumulative"), None)


def forests_with_memory() -> dict[str, dict[str, float]]:
    """Per memory (`reservoir:N`, `all`), the final per-task RMSE of the one-hot forest fitted after each
    task on that task and that memory (`all`: the cumulative forest), where recorded."""
    rows = _forest_rows()
    forests = {row["protocol"].removeprefix("memory:"): row["rmse_acc"] for row in rows
               if row["protocol"].startswith("memory:")}
    bar = forest_bar(rows)
    if bar is not None:
        forests.setdefault("all", bar)
    return forests


def strategy_of(row: dict[str, Any]) -> str:
    """A row's strategy with the options it was swept with, e.g. `replay-snapshot --head-members 3`
    (rows from before other strategies were swept are `replay`'s)."""
    return " ".join([row.get("strategy", "replay"), *row.get("options", [])])


def merged(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`old` rows with those of the same strategy and memory as a `new` row replaced by it, ordered by
    strategy (as first seen) and then by memory size."""
    fresh = {(strategy_of(r), r["memory"]) for r in new}
    rows = [r for r in old if (strategy_of(r), r["memory"]) not in fresh] + new
    order = list(dict.fromkeys(strategy_of(r) for r in rows))
    return sorted(rows, key=lambda r: (order.index(strategy_of(r)), r["stored at most"]))


def plot(result: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for strategy in dict.fromkeys(strategy_of(r) for r in result["rows"]):
        rows = [r for r in result["rows"] if strategy_of(r) == strategy]
        stored = [r["stored at most"] for r in rows]
        for ax, key, label in ((axes[0], "RMSE %", "final per-task RMSE (yield points)"),
                               (axes[1], "RMSE BWT", "RMSE-BWT (points; > 0: forgetting)")):
            means = [r[key]["mean"] for r in rows]
            sds = [r[key]["sd"] or 0.0 for r in rows]
            ax.errorbar(stored, means, yerr=sds, marker="o", capsize=3,
                        label=f"{strategy} (mean ± sd over seeds)")
            ax.set_xscale("log")
            ax.set(xlabel="reactions stored at most", ylabel=label)
            for x, r in zip(stored, rows, strict=True):
                ax.annotate(r["memory"], (x, r[key]["mean"]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
    bar = result.get("forest")
    if bar:
        axes[0].axhline(bar["mean"], color="grey", linestyle="--", label="cumulative one-hot forest")
    sizes = {r["memory"]: r["stored at most"] for r in result["rows"]}
    same = sorted((sizes[m], f["mean"]) for m, f in result.get("forests", {}).items() if m in sizes)
    if len(same) > 1:
        axes[0].plot(*zip(*same, strict=True), color="grey", marker="s", linestyle=":",
                     label="one-hot forest, same memory")
    axes[1].axhline(0.0, color="grey", linewidth=0.8)
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle("replay on the Suzuki–Miyaura stream: memory against final error", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="replay", help="the replay strategy to sweep (a spec)")
    parser.add_argument("--memories", default="100,300,1000,all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/benchmark-memory-sweep", help="run directories")
    parser.add_argument("--resume", action="store_true", help="continue the run directories under --out")
    parser.add_argument("--replot", action="store_true",
                        help="run nothing: take the forests from results/classical.json again and replot")
    parser.add_argument("options", nargs="*", help="options for `mistral-cl continual` (after --)")
    args = parser.parse_args(argv)
    path = RESULTS / "continual_memory_sweep.json"
    if args.replot:
        result = json.loads(path.read_text())
        result.update({"forest": forest_bar(), "forests": forests_with_memory()})
        path.write_text(json.dumps(result, indent=2) + "\n")
        plot(result, RESULTS / "continual_memory_sweep.png")
        print(f"rewrote the forests of {path} and replotted continual_memory_sweep.png")
        return 0
    hostmem.configure()
    seeds = [int(s) for s in args.seeds.split(",")]
    memories = [m.strip() for m in args.memories.split(",")]
    started, commit = datetime.now(UTC).isoformat(timespec="seconds"), git_commit()
    label = strategy_of({"strategy": args.strategy, "options": args.options})
    rows = []
    with LoadSampler() as load:
        for memory in memories:
            spec = memory_spec(memory)
            run = argparse.Namespace(strategies=args.strategy, resume=args.resume, match_joint=None,
                                     options=[*args.options, "--memory", spec])
            per_seed, stored = {}, None
            # `replay`'s directories keep their first names (memory-N) so that earlier sweeps resume.
            prefix = "" if label == "replay" else "_".join(
                [args.strategy.replace(":", "_"), *(o.lstrip("-") for o in args.options)]) + "-"
            for seed in seeds:
                run_dir = seed_directory(Path(args.out) / f"{prefix}memory-{memory}", seed)
                seed_rows, config = run_seed(run, run_dir, seed)
                per_seed[str(seed)] = seed_rows[0]
                stream = json.loads((run_dir / "stream.json").read_text())
                # `all` ends up holding every task's training reactions.
                stored = int(memory) if memory != "all" else sum(t["train"] for t in stream["tasks"])
            row = {"strategy": args.strategy, **({"options": args.options} if args.options else {}),
                   "order": task_order_of(args.options), "memory": spec, "stored at most": stored,
                   **summarise(list(per_seed.values())), "per_seed": per_seed,
                   "date": started, "git_commit": commit}
            rows.append(row)
            print(f"{spec}: RMSE {row['RMSE %']['mean']:.2f} ± {row['RMSE %']['sd'] or 0:.2f}, "
                  f"RMSE-BWT {row['RMSE BWT']['mean']:+.2f}, ACC {row['ACC']['mean']:.3f}", flush=True)
    load_average = load.summary()
    for row in rows:
        row["load_average_1min"] = load_average
    previous = json.loads(path.read_text()) if path.exists() else {"rows": []}
    for row in previous["rows"]:  # a kept row keeps the date, commit and load it was swept with
        for key in ("date", "git_commit", "load_average_1min"):
            row.setdefault(key, previous.get(key))
    # The settings are those of the rows swept without options; a row's own options change them.
    settings = (previous["settings"] if args.options and "settings" in previous else
                {"seeds": seeds, "head": config.head.__dict__, "train": config.train.__dict__})
    settings["command"] = "mistral-cl continual --strategies S --memory M --seed N O"
    result = {
        "benchmark": "replay's memory size against its final error on the Suzuki-Miyaura stream",
        "date": started, "git_commit": commit, "machine": machine(), "load_average_1min": load_average,
        "settings": settings,
        "rows": merged(previous["rows"], rows),
        "forest": forest_bar(),
        "forests": forests_with_memory(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "continual_memory_sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "continual_memory_sweep.png")
    print(f"wrote {RESULTS / 'continual_memory_sweep.json'} and continual_memory_sweep.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
