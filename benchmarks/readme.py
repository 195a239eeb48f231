"""Writes benchmarks/README.md from the recorded results in benchmarks/results/*.json.

    python benchmarks/readme.py           # rewrite the README from the JSON files
    python benchmarks/readme.py --check   # exit 1 if the README differs from what the JSON says

The tables are never typed by hand: each benchmark script records its figures (with date, machine
and commit) as JSON, and this script renders them. `tests/test_benchmark_readme.py` runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"

INTRO = """\
# Benchmarks

Every figure below is read from `benchmarks/results/*.json`, which the benchmark scripts write
together with the date, the machine and the git commit they ran on. `python benchmarks/readme.py`
regenerates this page; the test suite checks that it matches the JSON. Speed and memory targets
live here, never in timed tests.

The CPU machine is a VM with 2 vCPUs and 24 GiB. During this project's first session, several
engineers ran benchmarks on it at the same time, so the load average was high (it is recorded with
each result), and CPU timings are pessimistic and noisy. No GPU was lent to that session, so the GPU
rows of the issues are not measured yet.
"""


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for title, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(row.get(key)) for _, key in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.1f}"
    return str(value)


def _meta(result: dict[str, Any]) -> str:
    machine = result.get("machine", "")
    if isinstance(machine, dict):
        machine = ", ".join(f"{k} {v}" for k, v in machine.items())
    load = result.get("load_average_1min", result.get("load_average", ""))
    if isinstance(load, dict):
        load = ", ".join(f"{k} {v:.1f}" for k, v in load.items())
    elif isinstance(load, list):
        load = ", ".join(f"{v:.1f}" for v in load)
    commit = str(result.get("git_commit", ""))[:10]
    return f"_{result.get('date', '')} · {machine} · commit `{commit}` · load average {load}_"


def checkpoint_section(result: dict[str, Any]) -> str:
    rows = result["results"]
    return "\n\n".join([
        "## Checkpoints (`benchmarks/checkpoint.py`)",
        _meta(result),
        f"Save and restore of a {rows[0]['bytes'] / 2**30:.0f} GiB pytree with `mistral_cl.checkpoint`, "
        f"median of {result['runs']} runs (MB = 10^6 bytes). Saving fsyncs every chunk file; restoring "
        f"reads from the {result['restore_from']}. The 8-device case restores onto a 2x4 mesh with "
        "other partition specs, each device reading only its own block.",
        _table(rows, [("case", "case"), ("save MB/s", "save_MB_per_s"),
                      ("restore MB/s", "restore_MB_per_s")]),
    ])


def memory_section(result: dict[str, Any]) -> str:
    gib = 2**30
    rows = [dict(r, args=r["arguments"] / gib, temps=r["temporaries"] / gib,
                 peak=r["peak_estimate"] / gib, fits=r["peak_estimate"] / gib <= result["budget_gib"],
                 shape=f"{r['batch']}x{r['seq']}") for r in result["rows"]]
    targets = [dict(name=name, **t) for name, t in result["targets"].items()]
    default = [dict(name=name, **t) for name, t in result["cpu_default_passes"]["targets"].items()]
    target_columns = [("target", "name"), ("met", "met"), ("best setting", "best"),
                      ("peak GiB", "peak_gib"), ("margin GiB", "margin_gib")]
    return "\n\n".join([
        "## Memory plan for Mistral-7B (`benchmarks/memory.py`)",
        _meta(result),
        "The full-fine-tuning and LoRA train steps of the real Mistral-7B shapes are compiled (not run) "
        "with abstract sharded inputs on simulated CPU devices, and XLA's memory analysis is read per "
        "device: arguments, temporaries and the estimated peak (arguments + temporaries + outputs - "
        f"aliased), in GiB against a {result['budget_gib']:.0f} GiB budget. Note: {result['note']}. "
        "The estimate switches off XLA:CPU's while-loop-invariant code motion, which hoists a float32 "
        "copy of every frozen bfloat16 weight out of the layer loop (on CPU bf16 dots run in f32); "
        "GPUs and TPUs do not make that copy. With CPU's default passes the targets read:",
        _table(default, target_columns),
        "Targets, as estimated:",
        _table(targets, target_columns),
        _table(rows, [("mode", "mode"), ("mesh", "mesh"), ("batch", "shape"), ("remat", "remat"),
                      ("args", "args"), ("temps", "temps"), ("peak", "peak"), ("fits", "fits")]),
        "Not measured: the real 7B LoRA step on a GPU (no GPU was lent to this session).",
    ])


SECTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "accuracy": lambda r: _generic("Accuracy (`benchmarks/accuracy.py`)", r),
    "continual": lambda r: _generic("Continual learning (`benchmarks/continual.py`)", r),
    "throughput": lambda r: _generic("Throughput (`benchmarks/throughput.py`)", r),
    "memory": memory_section,
    "checkpoint": checkpoint_section,
}


def _generic(title: str, result: dict[str, Any]) -> str:
    rows = result.get("rows") or result.get("results") or []
    flat = [{k: v for k, v in row.items() if not isinstance(v, dict | list)} for row in rows]
    columns = [(k, k) for k in (flat[0] if flat else {})]
    return "\n\n".join([f"## {title}", _meta(result), _table(flat, columns) if flat else "(no rows)"])


def render() -> str:
    parts = [INTRO]
    for name, section in SECTIONS.items():
        path = RESULTS / f"{name}.json"
        if path.exists():
            parts.append(section(json.loads(path.read_text())))
        else:
            parts.append(f"## {name}\n\nNot run yet: no `benchmarks/results/{name}.json`.")
    return "\n\n".join(p.strip() for p in parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not README.exists() or README.read_text() != text:
            print("benchmarks/README.md differs from benchmarks/results/*.json; run "
                  "`python benchmarks/readme.py`", file=sys.stderr)
            return 1
        return 0
    README.write_text(text)
    print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
