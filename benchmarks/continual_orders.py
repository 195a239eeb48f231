"""The continual benchmark's `naive` and `replay` over four task orders, beside the forests' same orders.

    python benchmarks/continual_orders.py

Reads four results of `benchmarks/continual.py` (seeds 0-2 each): the main table in sorted order
(`results/continual.json`) and one run per other order,

    python benchmarks/continual.py --strategies naive,replay --seeds 0,1,2 \\
        --results continual_order_ORDER -- --task-order ORDER     # ORDER: seed, random:1, random:2

(the file names drop the colon: `continual_order_random1.json`), and writes
`results/continual_orders.json`: for each strategy and each order, the mean and sd over seeds of the
final per-task RMSE, RMSE-BWT and R² ACC; over all orders and seeds, their mean, sd and 95 %
t-interval; and the one-hot and DRFP forests' cumulative rows of the same orders
(`results/classical.json`), retrained from scratch after every task. Nothing is trained here.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classical import interval  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ORDERS = {"sorted": "continual", "seed": "continual_order_seed", "random:1": "continual_order_random1",
          "random:2": "continual_order_random2"}
# `replay:weight=tasks:epochs=40`: replay with every task seen weighing the same and 40-epoch rounds
# (docs/research-notes.md), where its runs were added to the four orders' run directories.
STRATEGIES = ("naive", "replay", "replay:weight=tasks:epochs=40")
# The converged joint learns every task at once; the tasks' 70/30 splits are seeded by their keys, so an
# order changes only its shuffles, and its runs in whichever orders have them are every order's reference.
REFERENCE = "joint:epochs=auto"
SCORES = {"RMSE %": "rmse_acc", "RMSE BWT": "rmse_bwt", "ACC": "r2_acc"}


def runs_of(result: dict[str, Any], strategy: str) -> list[dict[str, Any]]:
    """One row per seed of `strategy` in a continual results file."""
    per_seed = result.get("per_seed") or {"-": result["rows"]}
    return [row for rows in per_seed.values() for row in rows if row["strategy"] == strategy]


def summarise(results: dict[str, dict[str, Any]], classical: dict[str, Any] | None) -> dict[str, Any]:
    """`results`: order -> its continual results file. Per strategy: per order and pooled statistics."""
    out: dict[str, Any] = {"orders": list(results), "strategies": {}, "forests": {}}
    for strategy in STRATEGIES:
        by_order = {order: runs_of(result, strategy) for order, result in results.items()}
        if not all(by_order.values()):
            continue
        out["strategies"][strategy] = {
            "per_order": {order: {score: interval([r[score] for r in runs]) for score in SCORES}
                          for order, runs in by_order.items()},
            "pooled": {score: interval([r[score] for runs in by_order.values() for r in runs])
                       for score in SCORES},
            "runs": sum(len(runs) for runs in by_order.values()),
        }
    by_order = {order: runs_of(result, REFERENCE) for order, result in results.items()}
    runs = [run for order_runs in by_order.values() for run in order_runs]
    if runs:
        out["reference"] = {"strategy": REFERENCE, "orders": [o for o, r in by_order.items() if r],
                            "runs": len(runs),
                            **{score: interval([r[score] for r in runs]) for score in ("RMSE %", "ACC")}}
        for strategy, stats in out["strategies"].items():
            if strategy.split(":")[0] == "replay":
                gap = stats["pooled"]["RMSE %"]["mean"] - out["reference"]["RMSE %"]["mean"]
                stats["minus_converged_joint"] = gap
                stats["within_half_a_point"] = bool(gap <= 0.5)
    for row in (classical or {}).get("rows", []):
        if row["data"] == "suzuki" and row["protocol"] == "cumulative" and row["order"] in results:
            forest = out["forests"].setdefault(row["features"], {})
            forest[row["order"]] = {score: row[key] for score, key in SCORES.items()}
    return out


def main() -> int:
    results = {}
    for order, name in ORDERS.items():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `python benchmarks/continual.py` for the {order} order "
                             "first (see this script's docstring)")
        results[order] = json.loads(path.read_text())
    classical_path = RESULTS / "classical.json"
    classical = json.loads(classical_path.read_text()) if classical_path.exists() else None
    summary = summarise(results, classical)
    summary.update(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        sources={order: {"file": f"{ORDERS[order]}.json", "date": r["date"], "git_commit": r["git_commit"],
                         "load_average_1min": r.get("load_average_1min"),
                         **({"notes": r["notes"]} if r.get("notes") else {})}
                 for order, r in results.items()},
        machine=results["sorted"]["machine"], git_commit=results["seed"]["git_commit"],
        load_average_1min=results["seed"].get("load_average_1min"),
        settings={"model": results["sorted"]["settings"].get("model"),
                  "head": results["sorted"]["settings"].get("head")},
    )
    (RESULTS / "continual_orders.json").write_text(json.dumps(summary, indent=2) + "\n")
    for strategy, stats in summary["strategies"].items():
        pooled = stats["pooled"]["RMSE %"]
        print(f"{strategy}: RMSE {pooled['mean']:.2f} ± {pooled['sd']:.2f} over {stats['runs']} runs "
              f"(95 % interval {pooled['low']:.2f} to {pooled['high']:.2f})")
    print(f"wrote {RESULTS / 'continual_orders.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
