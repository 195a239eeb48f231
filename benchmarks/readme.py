"""Writes benchmarks/README.md from the recorded results in benchmarks/results/*.json.

    python benchmarks/readme.py           # rewrite the README from the JSON files
    python benchmarks/readme.py --check   # exit 1 if the README differs from what the JSON says

The tables are never typed by hand: each benchmark script records its figures (with date, machine
and commit) as JSON, and this script renders them. `tests/test_benchmark_readme.py` runs the check.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
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
engineers ran benchmarks on it at the same time, so the load average was high. Later sessions ran
them one at a time (the latest continual and accuracy runs alone on the machine). The load average is
recorded with each result: CPU timings taken under load are pessimistic and noisy. No GPU has been
lent to any session so far, so the GPU rows of the issues (the Mistral-7B LoRA step, its MFU and its
measured peak memory) are not measured yet; `benchmarks/gpu_check.sh` is ready to measure them.
Records superseded by a change of the model are kept in `benchmarks/results/previous/`.
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
    load = f" · load average {load}" if load != "" else ""
    return f"_{result.get('date', '')} · {machine} · commit `{commit}`{load}_"


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
        *_continual_memory(result),
        "Not measured: the real 7B LoRA step on a GPU (`benchmarks/gpu_check.sh` measures it, below).",
    ])


def _continual_memory(result: dict[str, Any]) -> list[str]:
    """The continual rows of the memory plan: targets, one row per strategy, and why each miss misses."""
    continual = result.get("continual")
    if not continual:
        return []
    gib, budget = 2**30, result["budget_gib"]
    rows = [dict(r, shapes=" + ".join(r["batches"]), fits=r["peak_estimate"] / gib <= budget,
                 **{name: f"{r[key] / gib:.2f}" for name, key in (
                     ("args", "arguments"), ("temps", "temporaries"), ("peak", "peak_estimate"),
                     ("state", "state_bytes"), ("added", "added_peak_estimate"))},
                 largest=f"{r['largest_array']['array']} {r['largest_array']['bytes'] / gib:.2f}")
            for r in continual["rows"]]
    targets = [dict(name=name, **t, over=", ".join(f"{s} {v:+.2f}" for s, v in t["over_budget_gib"].items()))
               for name, t in continual["targets"].items()]
    misses = [_why_over(r, budget) for r in continual["rows"] if r["peak_estimate"] / gib > budget]
    gathered = [r for r in continual["rows"] if r["largest_array"]["whole_copy_of"]]
    return [
        "### One continual round of each strategy",
        f"The step of one continual round of {', '.join(continual['strategies'])} in the best setting "
        "of each target, built as the continual learner builds it (the strategy's objective, gradient "
        "transform and `extra` for abstract model halves), with the strategy's state after a round laid out "
        "by `sharding.strategy_state_specs` (EWC's Fisher diagonal and anchor, and LwF's previous model, "
        "are float32 copies of the trainable half and follow its layout). `naive` is the plain step: "
        "*added* is what a strategy adds to its peak, and *state* the strategy's arrays per device. A "
        "rehearsal memory (replay, agem) is a list of positions on the host, so it holds no device state; "
        "what it costs on the device is the remembered batch of every step (`memory_batch` reactions, the "
        "second of the batches). A-GEM's reference gradient is a temporary of the step. *Largest array* is "
        "the largest one the compiled step holds in memory (GiB).",
        _table(targets, [("target (every strategy)", "name"), ("met", "met"), ("setting", "setting"),
                         ("worst", "worst"), ("peak GiB", "peak_gib"), ("margin GiB", "margin_gib"),
                         ("over budget, GiB", "over")]),
        _table(rows, [("strategy", "strategy"), ("mode", "mode"), ("mesh", "mesh"), ("batches", "shapes"),
                      ("remat", "remat"), ("args", "args"), ("temps", "temps"), ("peak", "peak"),
                      ("state", "state"), ("added", "added"), ("fits", "fits"),
                      ("largest array", "largest")]),
        *(["Why the misses miss:", "\n".join(misses)] if misses else []),
        *([_GATHERED] if any(r["strategy"] == "agem" for r in gathered) else []),
    ]


_GATHERED = (
    "A whole copy of a weight that the layout splits is an operation the partitioner could not split. For "
    "A-GEM it is the dot products of its projection: `optax.tree_utils.tree_vdot` ravels every gradient "
    "leaf before `vdot`, and a raveled leaf cannot stay split, so both float32 gradients are gathered "
    "whole on every device. A sum of elementwise products per leaf keeps them split.")


def _why_over(row: dict[str, Any], budget: float) -> str:
    gib = 2**30
    reasons = []
    state = {k: v / gib for k, v in row["state_parts"].items() if v >= 0.005 * gib}
    if state:
        reasons.append("its state holds " + " + ".join(f"{k} {v:.2f}" for k, v in state.items()) + " GiB")
    if len(row["batches"]) > 1:
        reasons.append(f"every step adds a remembered batch ({' + '.join(row['batches'])})")
    reasons.append(f"the step's temporaries grow by {row['added_temporaries'] / gib:.2f} GiB over naive's")
    largest = row["largest_array"]
    remembered = row["batches"][-1].replace("x", ",")
    if len(row["batches"]) > 1 and remembered in largest["array"]:
        reasons.append(f"its largest array, {largest['array']} ({largest['bytes'] / gib:.2f} GiB), "
                       f"is shaped by the remembered batch's {row['batches'][-1]} positions")
    if largest["whole_copy_of"]:
        reasons.append(f"its largest array, {largest['array']} ({largest['bytes'] / gib:.2f} GiB), has the "
                       f"whole shape of `{largest['whole_copy_of']}`, which the {row['mesh']} layout splits")
    return (f"- `{row['strategy']}`, {row['mode']} on {row['mesh']}: {row['peak_estimate'] / gib:.2f} GiB, "
            f"{row['peak_estimate'] / gib - budget:.2f} GiB over: " + "; ".join(reasons) + ".")


GPU_CHECK_GUIDE = """\
`bash benchmarks/gpu_check.sh` is the check to run when a GPU is lent: under 8 minutes on one H100
(the 7B step's compile included), one JSON (`$OUT/gpu_check.json` when OUT is set, else
`benchmarks/results/gpu_check.json`) and a table. It measures the bfloat16 matmul peak (8192² matmuls);
the Mistral-7B LoRA (rank 16) train step of the memory plan on random bfloat16 weights, batch 8 x 256
with `remat=dots` (`--batch`, `--seq`, `--remat`, `--steps` change it): tokens/s, MFU against that
peak, and the device's peak memory against the plan's row of the same shape; the GPU attention path
(outputs and gradients of this backend's attention, of `jax.nn.dot_product_attention`'s XLA
implementation, and of cuDNN flash attention with causal, padding and sliding-window masks) and the
tiny model's hidden states against the CPU formulation, run in a CPU-only subprocess; and a short
`mistral-cl continual` run (3 Suzuki tasks, 1 epoch, naive and replay) on the GPU. A section that
fails is recorded with its error; the others still run. `bash benchmarks/gpu_check.sh --dry` runs every
section on CPU with every shape shrunk (`tests/test_gpu_check.py` runs it), so the script cannot rot.
The table it prints reads, line by line: device; matmul peak; the LoRA step (ms, tokens/s, MFU, compile
seconds); its memory (measured peak, XLA's estimate on that device, the plan); one line per attention
comparison (largest error of the output and of each gradient, relative to the reference's largest
value, against its tolerance); the tiny model; the continual run's ACC per strategy; each section's
status and time."""


def _size(gib: float | None) -> str:
    return "n/a" if gib is None else f"{gib:.2f} GiB"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def gpu_check_section(result: dict[str, Any] | None) -> str:
    parts = ["## GPU check (`benchmarks/gpu_check.sh`)", GPU_CHECK_GUIDE]
    if result is None or result.get("dry"):
        return "\n\n".join([*parts, "Not run on a GPU yet: no GPU has been lent to any session."])
    sections = result["sections"]
    step, parity = sections["lora_step"], sections["attention_parity"]
    device = result["device"]
    commit = result["git_commit"][:10]
    lines = [f"_{result['date']} · {device['kind']} ({device['backend']}) · commit `{commit}`_"]
    rows = [{"section": name, "ok": s["ok"], "seconds": s["seconds"]} for name, s in sections.items()]
    lines.append(_table(rows, [("section", "section"), ("ok", "ok"), ("seconds", "seconds")]))
    if step["ok"]:
        plan = step["plan"]
        lines.append(
            f"LoRA step, {step['model']}, batch {step['batch']} x {step['seq']}, remat {step['remat']}: "
            f"{step['median_ms']:.1f} ms, {step['tokens_per_s']:,.0f} tokens/s, MFU {_share(step['mfu'])} of "
            f"the measured {sections['matmul_peak']['flops_per_s'] / 1e12:.0f} TFLOP/s; peak memory "
            f"{_size(step['measured_peak_gib'])} measured, {_size(step['xla_peak_gib'])} by XLA on the "
            f"device, {_size(plan and plan['peak_gib'])} planned.")
    if "attention" in parity:
        checks = [dict(c, errors=c.get("skipped")
                       or ", ".join(f"{k} {c[k]:.1e}" for k in ("out", "dq", "dk", "dv")))
                  for c in parity["attention"]]
        lines.append(_table(checks, [("attention", "attention"), ("dtype", "dtype"), ("errors", "errors"),
                                     ("tolerance", "tolerance"), ("ok", "ok")]))
    return "\n\n".join([*parts, *lines])


def _mean_sd(stat: dict[str, float], scale: float = 1.0, digits: int = 3) -> str:
    return f"{stat['mean'] / scale:.{digits}f} ± {stat['sd'] / scale:.{digits}f}"


def _head_words(head: dict[str, Any]) -> str:
    """Which states the MHAR head reads and how it reads its pooled vector, in words (runs from before
    these settings: the final states and one layer)."""
    layers = head.get("mlp_layers", 1)
    mlp = f"a {layers}-layer SiLU MLP" if layers > 1 else "a one-layer SiLU MLP"
    pooled = "the standardised pooled vector" if head.get("standardize", False) else "the raw pooled vector"
    layer = head.get("feature_layer")
    states = ("the backbone's final states" if layer is None else "the backbone's token embeddings"
              if layer == 0 else f"the backbone's states after block {layer}")
    pool = (", pooling each molecule on its own and summing their codes (`--head-pool molecules`)"
            if head.get("pool") == "molecules" else "")
    if head.get("context") == "molecule":
        pool = (", encoding each molecule on its own (no other molecule in its context) and summing "
                "their codes (`--head-pool molecules --head-context molecule`)")
    return f"reading {states}{pool}, with {mlp} on {pooled}"


def accuracy_section(result: dict[str, Any]) -> str:
    rows = [dict(r, minutes=r["seconds"] / 60, cpu_minutes=r.get("cpu_seconds", float("nan")) / 60,
                 load=" / ".join(f"{v:.1f}" for v in r.get("load_average", ())))
            for r in result["rows"]]
    s = result["summary"]
    train = result["settings"]["train"]
    mode = result["settings"]["adaptation"]["mode"]
    members = result["settings"]["head"].get("members", 1)
    heads = "one MHAR head" if members == 1 else f"an ensemble of {members} MHAR heads"
    met = s["r2"]["mean"] >= 0.85 and max(r["minutes"] for r in rows) <= 15
    return "\n\n".join([
        "## Yield prediction accuracy (`benchmarks/accuracy.py`)",
        _meta(result),
        f"Standard protocol: random 70/30 splits of all 5760 Suzuki–Miyaura reactions, one model per split "
        f"trained from scratch (the `tiny` preset from random initialisation: no pretrained weights exist on "
        f"this machine), mode `{mode}`, {heads} ({_head_words(result['settings']['head'])}), "
        f"{train['epochs']} epochs, batch {train['batch_size']}, "
        f"peak lr {train['learning_rate']:g}. Command: `{' '.join(result['command'])}`. Wall time counts "
        "everything from building the model to the last held-out prediction.",
        _table(rows, [("split seed", "seed"), ("R²", "r2"), ("RMSE (%)", "rmse"), ("MAE (%)", "mae"),
                      ("wall min", "minutes"), ("CPU min", "cpu_minutes"), ("load 1/5/15 min", "load")]),
        f"**Mean ± sd over {len(rows)} splits: R² {_mean_sd(s['r2'])}, "
        f"RMSE {_mean_sd(s['rmse'], digits=2)} %, "
        f"MAE {_mean_sd(s['mae'], digits=2)} %, wall {_mean_sd(s['seconds'], 60, 1)} min per split.**",
        "Context on the same protocol: Yield-BERT R² 0.815 ± 0.013; one-hot random forest ≈ 0.83; best "
        "published ≈ 0.89.",
        f"Target (mean R² ≥ 0.85 in at most 15 min per split on 2 cores): **{'met' if met else 'NOT met'}**.",
    ])


def _score(row: dict[str, Any], key: str) -> str | None:
    """A score to 3 decimals, with its sd over seeds when the row is a mean."""
    value, sd = row.get(key), row.get(f"{key} sd")
    if not isinstance(value, float):
        return value
    return f"{value:.3f}" if sd is None else f"{value:.3f} ± {sd:.3f}"


def _points(row: dict[str, Any], key: str) -> str | None:
    """An error in yield points to 2 decimals, with its sd over seeds when the row is a mean."""
    value, sd = row.get(key), row.get(f"{key} sd")
    if not isinstance(value, float):
        return value
    return f"{value:.2f}" if sd is None else f"{value:.2f} ± {sd:.2f}"


def _seed_notes(result: dict[str, Any]) -> list[str]:
    """For a run over several seeds: what the ± means, and each seed's verdict on the targets."""
    seeds = result["settings"].get("seeds") or []
    if len(seeds) < 2:
        return []
    verdicts = "; ".join(
        f"seed {seed}: " + ", ".join(f"{name} {'met' if t['met'] else 'missed'}"
                                     for name, t in targets.items())
        for seed, targets in result["targets_per_seed"].items())
    return [f"Every score is the mean ± sample sd over seeds {', '.join(map(str, seeds))} (the seed draws "
            "the model's initialisation, each task's 70/30 split, the shuffling and the replay draws); the "
            "targets below are judged on the means, and the heatmaps are those of the first seed. "
            f"Per seed: {verdicts}."]


def continual_section(result: dict[str, Any], name: str = "continual") -> str:
    settings = result["settings"]
    train = settings["train"]
    targets = [dict(target=name, **{k: v for k, v in t.items()}) for name, t in result["targets"].items()]
    for t in targets:
        t["figures"] = ", ".join(f"{k} {_cell(v)}" for k, v in t.items() if k not in ("target", "met"))
    scores = ("ACC", "BWT", "FWT", "forgetting", "pooled R²", "zero-shot R²", "LM loss")
    rows = [{**row, **{k: _score(row, k) for k in scores},
             **{k: _points(row, k)
                for k in ("RMSE %", "RMSE BWT", "RMSE forgetting", "MAE %", "zero-shot RMSE")},
             **{k: "yes" if row.get(k) else "no" for k in ("task-aware", "stores reactions")},
             "reactions": None if row.get("reactions") is None else f"{row['reactions']:,.0f}"}
            for row in result["rows"]]
    images = [f"![{row['strategy']}](results/{name}_{row['strategy'].replace(':', '_')}_r2_heatmap.png)"
              for row in result["rows"]]
    title = ("## Continual learning (`benchmarks/continual.py`)" if name == "continual" else
             f"## Continual learning, variant `{name}` (`benchmarks/continual.py --results {name}`)")
    data = settings.get("data", "suzuki")
    stream = {"suzuki": "The 15 Suzuki–Miyaura reactant-pair tasks",
              "buchwald": "The 15 Buchwald–Hartwig aryl-halide tasks"}.get(data, f"The tasks of `{data}`")
    order = settings.get("task_order", "sorted")
    order = {"sorted": "sorted order", "seed": "the seed paper's order (`--task-order seed`)"}.get(
        order, f"the order `{order}`")
    split = ("held out by one 70/30 split of all reactions, then grouped by task (`--split global`)"
             if settings.get("split") == "global" else "each split 70/30")
    return "\n\n".join([
        title,
        _meta(result),
        f"{stream} in {order}, {split}, learned one after "
        f"another by the `{settings['model']}` model in `{settings['mode']}` mode (MHAR head "
        f"{_head_words(settings.get('head', {}))}, {train['epochs']} epochs "
        f"per task, batch {train['batch_size']}, peak lr {train['learning_rate']:g}, replay memory "
        f"`{settings['continual']['memory']}`). Command: `{settings['command'].strip()}`. ACC, BWT, FWT and "
        "forgetting are computed on held-out R² of every task (R² of a task is relative to its own "
        "spread of yields, so a model that predicts the wrong yield level for a task scores far below "
        "0). RMSE and MAE are the mean over tasks after the last one, in yield %; RMSE BWT is the mean over "
        "earlier tasks of the final RMSE minus the RMSE just after learning the task (positive: the error "
        "grew, forgetting), RMSE forgetting the final RMSE minus the lowest since, pooled R² the R² of "
        "all tasks' test reactions as one set after the last round, and zero-shot R² and RMSE the mean "
        "score on each task from the second on just before it is trained (where recorded). `adapters` "
        "keeps one adapter and head per task and picks it by task id (task-aware), so it cannot forget. "
        "Reactions: the compute of each row, reactions processed (forward and backward) over all rounds, "
        "current and remembered rows alike (a `joint` that chose its epochs on validation includes its trial "
        "run).",
        *_seed_notes(result),
        *([result["notes"]] if result.get("notes") else []),
        *_forest_line(result, data),
        *_retention_words(result),
        _table(rows, [("strategy", "strategy"), ("ACC", "ACC"), ("BWT", "BWT"), ("FWT", "FWT"),
                                ("forgetting", "forgetting"), ("RMSE %", "RMSE %"), ("RMSE BWT", "RMSE BWT"),
                                ("RMSE forgetting", "RMSE forgetting"), ("MAE %", "MAE %"),
                                ("pooled R²", "pooled R²"),
                                *([("zero-shot R²", "zero-shot R²"), ("zero-shot RMSE", "zero-shot RMSE")]
                                  if any("zero-shot R²" in row for row in result["rows"]) else []),
                                ("reactions", "reactions"), ("wall s", "wall s"), ("CPU s", "CPU s"),
                                ("task-aware", "task-aware"),
                                ("stores reactions", "stores reactions"),
                                *([("LM loss", "LM loss")] if result.get("retention") else [])]),
        *([f"![retention](results/{name}_retention.png)"] if result.get("retention") else []),
        "Targets:",
        _table(targets, [("target", "target"), ("met", "met"), ("figures", "figures")]),
        "R² heatmaps (row: after learning that task; column: the task scored):",
        "\n".join(images),
    ])


def _retention_words(result: dict[str, Any]) -> list[str]:
    """For a run that fine-tunes pretrained weights: what its LM loss column measures."""
    kept = result.get("retention")
    if not kept:
        return []
    return [f"LM loss: knowledge retention, the fine-tuned backbone's next-token loss (nats per predicted "
            f"token, through the pretrained output layer) on {kept['texts']} held-out texts "
            f"(`{kept['source']}`) after the last round; the pretrained model scores "
            f"{kept['pretrained_lm_loss']:.3f}. The plot gives it after every round."]


def _forest_line(result: dict[str, Any], data: str) -> list[str]:
    """For a stream other than the main one: its best cumulative forest (`results/classical.json`, sorted
    order) beside this table's best row that is not task-aware."""
    path = RESULTS / "classical.json"
    if data == "suzuki" or not path.exists():
        return []
    forests = [r for r in json.loads(path.read_text())["rows"]
               if (r["data"], r["protocol"], r["order"]) == (data, "cumulative", "sorted")]
    mine = [r for r in result["rows"] if _ranked(r)]
    if not forests or not mine:
        return []
    forest, best = min(forests, key=lambda r: r["rmse_acc"]["mean"]), min(mine, key=lambda r: r["RMSE %"])
    verdict = "below" if best["RMSE %"] < forest["rmse_acc"]["mean"] else "above"
    return [f"The reference: the cumulative {forest['features']} forest on the same tasks, order and seeds "
            f"ends at a mean per-task RMSE of {_stat(forest, 'rmse_acc', 2)} points "
            f"(`results/classical.json`); the best row here, `{best['strategy']}`, ends {verdict} it at "
            f"{best['RMSE %']:.2f} points."]


def _stat(row: dict[str, Any], key: str, digits: int) -> str:
    """`mean ± sd` of a figure recorded over seeds (just the mean for a single seed)."""
    stat = row.get(key) or {}
    mean, sd = stat.get("mean"), stat.get("sd")
    if mean is None:
        return ""
    return f"{mean:,.{digits}f}" if not sd else f"{mean:,.{digits}f} ± {sd:,.{digits}f}"


_DATA_NAMES = {"suzuki": "Suzuki–Miyaura (15 reactant pairs, 5760 reactions)",
               "buchwald": "Buchwald–Hartwig (15 aryl halides, 3955 reactions)"}


def _best_llm_row(paths: Sequence[Path], joint: bool = False) -> tuple[dict[str, Any], Path] | None:
    """The LLM row of the continual benchmarks (`paths`) with the lowest final mean per-task RMSE, and
    the file it is in: among the continual strategies that are not task-aware, or (`joint`) among the
    `joint` reference rows, which learn every task at once."""
    rows = [(r, path) for path in paths if path.exists()
            for r in json.loads(path.read_text()).get("rows", [])
            if _ranked(r) and (r["strategy"].split(":")[0] == "joint") == joint]
    return min(rows, key=lambda rp: rp[0]["RMSE %"]) if rows else None


def _ranked(row: dict[str, Any]) -> bool:
    """Whether a continual row competes on its final RMSE: it has one, and it does not pick its model by
    task id (a task-aware row cannot forget, nor be compared with a learner that must not)."""
    return isinstance(row.get("RMSE %"), float) and not row.get("task-aware")


def _classical_verdict(result: dict[str, Any]) -> list[str]:
    """Who wins on the Suzuki stream in sorted order: the cumulative one-hot forest or the best LLM row."""
    bar = next((r for r in result["rows"] if (r["data"], r["features"], r["protocol"], r["order"])
                == ("suzuki", "onehot", "cumulative", "sorted")), None)
    if bar is None:
        return []
    rmse, r2 = bar["rmse_acc"], bar["r2_acc"]
    seeds = ", ".join(map(str, result["settings"]["seeds"]))
    rounds = len(next(iter(bar["keys"].values())))
    lines = [
        f"**The bar.** On the Suzuki–Miyaura stream in sorted order (seeds {seeds}), the one-hot forest "
        "retrained on every task seen so far ends at a "
        f"mean per-task RMSE of **{rmse['mean']:.2f} ± {rmse['sd']:.2f} yield points** (95 % interval "
        f"{rmse['low']:.2f} to {rmse['high']:.2f}), per-task R² ACC {_stat(bar, 'r2_acc', 3)}, RMSE-BWT "
        f"{_stat(bar, 'rmse_bwt', 2)} points and pooled R² over all tasks {_stat(bar, 'pooled_all_r2', 3)}, "
        f"in {_stat(bar, 'wall_seconds', 1)} s of wall time ({_stat(bar, 'cpu_seconds', 1)} CPU s) for all "
        f"{rounds} rounds ({bar['reactions_fitted']['mean']:,.0f} reactions fitted) on one core."]
    bag = next((r for r in result["rows"] if (r["data"], r["features"], r["protocol"], r["order"])
                == ("suzuki", "molecules", "cumulative", "sorted")), None)
    if bag is not None:
        lines.append(
            f"The encoding matters: with every molecule of the vial as its own column (`molecules`), the "
            f"same cumulative forest ends at RMSE {_stat(bag, 'rmse_acc', 2)} points and per-task R² "
            f"{_stat(bag, 'r2_acc', 3)}, because \"no ligand\" and \"no base\" are then not columns of their "
            "own, and water and potassium belong to several chemicals.")
    found = _best_llm_row([RESULTS / f"{name}.json" for name in CONTINUAL_RESULTS])
    if found is not None:
        best, path = found
        verdict = "beats" if best["RMSE %"] < rmse["mean"] else "does not beat"
        cpu = best.get("CPU s") or math.nan
        settings = json.loads(path.read_text())["settings"]
        memory = settings.get("continual", {})
        pooled = settings.get("head", {}).get("pool") == "molecules"
        alone = settings.get("head", {}).get("context") == "molecule"
        head = ("MHAR head encoding each molecule on its own, " if alone else
                "MHAR head pooling each molecule, " if pooled else "")
        lines.append(
            f"The best LLM row recorded in `results/{path.name}`, `{best['strategy']}` ({head}replay memory "
            f"`{memory.get('memory', '?')}`, same tasks, order and seeds), ends at "
            f"{best['RMSE %']:.2f} ± {best.get('RMSE % sd') or float('nan'):.2f} points (per-task R² ACC "
            f"{best['ACC']:.3f}) in {best['wall s']:.0f} s ({cpu:.0f} CPU s): it **{verdict}** the forest, "
            f"with about {cpu / bar['cpu_seconds']['mean']:.0f}x its CPU time. Per-task R² credits "
            f"the forest the same way (R² ACC {r2['mean']:.3f} against {best['ACC']:.3f}).")
    sweep = RESULTS / "continual_memory_sweep.json"
    if sweep.exists():
        lines.extend(_bar_verdicts(json.loads(sweep.read_text())["rows"], rmse["mean"], sweep.name))
    found = _best_llm_row([RESULTS / f"{name}.json" for name in CONTINUAL_RESULTS], joint=True)
    if found is not None:
        best, path = found
        verdict = "below" if best["RMSE %"] < rmse["mean"] else "above"
        lines.append(
            f"Not a continual learner but the reference: trained on every task at once, `{best['strategy']}` "
            f"(`results/{path.name}`) ends at {best['RMSE %']:.2f} ± "
            f"{best.get('RMSE % sd') or float('nan'):.2f} points, {verdict} the forest, for "
            f"{best['reactions']:,.0f} processed reactions.")
    return lines


def _best_reference(result: dict[str, Any], data: str) -> str:
    """One sentence: the reference row with the lowest final error in sorted order, and naive's BWT."""
    rows = [r for r in result["rows"] if r["data"] == data and r["order"] == "sorted"]
    if not rows:
        return ""
    best = min(rows, key=lambda r: r["rmse_acc"]["mean"])
    naive = [f"{r['features']} {r['rmse_bwt']['mean']:+.1f}" for r in rows if r["protocol"] == "naive"]
    return (f"Sorted order: the lowest final error is the {best['features']} forest's, `{best['protocol']}`, "
            f"RMSE {_stat(best, 'rmse_acc', 2)} points (per-task R² {_stat(best, 'r2_acc', 3)}); a forest "
            f"fitted on the latest task alone forgets, RMSE-BWT {', '.join(naive)} points.")


def classical_section(result: dict[str, Any]) -> str:
    settings = result["settings"]
    featurisation = "; ".join(
        f"{data}: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in per.items())
        for data, per in result.get("featurisation_seconds", {}).items())
    columns = [("features", "features"), ("protocol", "protocol"), ("order", "order"),
               ("RMSE ACC", "rmse_acc"), ("RMSE BWT", "rmse_bwt"), ("RMSE forgetting", "rmse_forgetting"),
               ("zero-shot RMSE", "rmse_zero_shot"), ("MAE ACC", "mae_acc"), ("R² ACC (per task)", "r2_acc"),
               ("pooled R²", "pooled_all_r2"), ("pooled RMSE", "pooled_all_rmse"), ("wall s", "wall_seconds"),
               ("CPU s", "cpu_seconds"), ("reactions fitted", "reactions_fitted")]
    digits = {"r2_acc": 3, "pooled_all_r2": 3, "wall_seconds": 1, "cpu_seconds": 1, "reactions_fitted": 0}
    parts = [
        "## Classical reference rows (`benchmarks/classical.py`)",
        _meta(result),
        "Not LLM strategies: the bar a continual learner has to clear. A scikit-learn random forest "
        f"({settings['forest']['n_estimators']} trees, otherwise its defaults, one core) on one-hot "
        "reaction components (Suzuki: quinoline, indazole, ligand or none, base or none, solvent; "
        "Buchwald–Hartwig: its six molecules, one per role) or on "
        f"{settings['drfp_bits']}-bit DRFP fingerprints. `naive`: after each task a forest fitted on "
        "that task alone; `cumulative`: after each task a forest fitted from scratch on every task so far. "
        "The tasks, their 70/30 splits (split seed = run seed) and the orders are the LLM benchmark's: "
        "`sorted`, `seed` (the seed repository's order of the Suzuki pairs) and two fixed random orders "
        f"(`random:1`, `random:2`); seeds {', '.join(map(str, settings['seeds']))}, each cell mean ± sd "
        "over seeds (95 % t-intervals in the JSON). The rows ran at low priority beside other engineers' "
        "jobs (each row's load average is in the JSON), so wall seconds are inflated; CPU seconds are "
        "steadier.",
        "All errors are in yield points. **ACC**: mean over tasks of the final RMSE (MAE). **BWT**: mean "
        "over earlier tasks of final error minus the error just after learning the task: **positive means "
        "the error grew (forgetting)**. **Forgetting**: final error minus the lowest error since the task "
        "was learned. **Zero-shot RMSE**: error on each next task just before it is trained (forward "
        "transfer; a forest has no untrained state, so no FWT against one). **Pooled**: R² and RMSE of the "
        "test reactions of all tasks as one set after the last round (the seed paper's \"Overall\"; per "
        "round in `results/classical_boards.json`). Per-task R² ACC is the secondary view. Wall seconds "
        "cover fitting and scoring all rounds; the one-off featurisation took "
        f"{featurisation or 'not recorded'}.",
        *_classical_verdict(result),
    ]
    for data in dict.fromkeys(row["data"] for row in result["rows"]):
        rows = [{**{k: row[k] for k in ("features", "protocol", "order")},
                 **{key: _stat(row, key, digits.get(key, 2)) for _, key in columns[3:]}}
                for row in result["rows"] if row["data"] == data]
        parts += [f"**{_DATA_NAMES.get(data, data)}**", _table(rows, columns), _best_reference(result, data)]
    return "\n\n".join(parts)


def throughput_section(result: dict[str, Any]) -> str:
    rows = [dict(r, ratio=f"{r['jax_over_torch']:.2f}x" if r.get("jax_over_torch") else None,
                 mfu=f"{r['mfu']:.1%}" if r.get("mfu") is not None else None) for r in result["rows"]]
    configs = "; ".join(f"{c['threads']} threads (cores {c['cores']}), malloc {c['malloc']}, "
                        f"OMP_WAIT_POLICY {c['OMP_WAIT_POLICY']}, measured matmul peak "
                        f"{c['peak_flops']['peak'] / 1e9:.0f} GFLOP/s, PyTorch LoRA via {c['torch_lora']}"
                        for c in result["configurations"])
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    parts = [
        "## Throughput, JAX against PyTorch (`benchmarks/throughput.py`)",
        _meta(result),
        f"Model `{result['model']}`, {result['dtype']}, batch {result['batch_size']} real Suzuki reactions "
        f"padded to their bucket width, median of {result['steps']} steps after warm-up, JAX and PyTorch "
        f"steps alternating. Settings: {configs}. Versions: {versions}. A train step is forward, backward, "
        "clipping and AdamW; MFU is analytic matmul FLOPs (formula in the script) over time × measured peak.",
        _table(rows, [("mode", "mode"), ("step", "step"), ("framework", "framework"), ("batch", "batch"),
                      ("ms", "ms"), ("real tokens/s", "real_tokens_per_s"),
                      ("reactions/s", "reactions_per_s"),
                      ("MFU", "mfu"), ("JAX / PyTorch", "ratio")]),
    ]
    trains = {r["mode"]: r.get("jax_over_torch") for r in result["rows"]
              if r["step"] == "train" and r["framework"] == "jax" and r.get("jax_over_torch")}
    if trains:
        verdicts = ", ".join(f"{mode} {ratio:.2f}x ({'met' if ratio >= 1.3 else 'NOT met'})"
                             for mode, ratio in trains.items() if mode in ("lora", "full"))
        parts.append(f"Target (train step ≥ 1.3x PyTorch eager in lora and full mode): {verdicts}.")
        previous = RESULTS / "throughput_previous.json"
        if previous.exists():
            earlier = json.loads(previous.read_text())
            ratios = ", ".join(f"{r['mode']} {r['jax_over_torch']:.2f}x" for r in earlier["rows"]
                               if r["step"] == "train" and r["framework"] == "jax"
                               and r.get("jax_over_torch"))
            parts.append(
                f"The ratios move by several percent from run to run on this VM: the previous run "
                f"({earlier['date']}, commit `{earlier['git_commit'][:10]}`, before LoRA adapters became "
                f"2-D matmuls; `results/throughput_previous.json`) measured train-step ratios {ratios}. "
                "The margin over 1.3x is within that spread.")
    ms = {(r["mode"], r["step"], r["framework"]): r["ms"] for r in result["rows"]}
    cached, tokens = ms.get(("head", "train", "jax, cached features")), ms.get(("head", "train", "jax"))
    if cached and tokens:
        full = ms.get(("full", "train", "jax"))
        parts.append(
            f"Head mode with cached features: a train step takes {cached:.1f} ms against {tokens:.1f} ms "
            f"when the frozen backbone runs on token ids every step, so a head-mode epoch is "
            f"**{tokens / cached:.2f}x** faster after the one-off caching pass"
            + (f" (and {full / cached:.2f}x faster than a full fine-tuning epoch)" if full else "")
            + ". The tiny backbone has 2 layers; with Mistral-7B's 32 the gain is far larger.")
    bucketing = result.get("bucketing")
    if bucketing:
        b, longest = bucketing["buckets"], bucketing["longest"]
        parts.append(
            f"Length bucketing ({bucketing['mode']} mode, one epoch of the Suzuki set): buckets "
            f"{b['widths']} pad {b['padding']:.1%} of positions and take {b['epoch_s']:.1f} s; padding every "
            f"batch to the longest reaction ({longest['widths'][0]}) pads {longest['padding']:.1%} and takes "
            f"{longest['epoch_s']:.1f} s: bucketing is **{bucketing['speedup']:.2f}x** faster.")
    return "\n\n".join(parts)


def pretrain_section(result: dict[str, Any]) -> str:
    """The shipped model's pretraining, stage by stage: command, corpus, tokens, time, held-out loss."""
    parts = ["## Pretraining (`mistral-cl pretrain`, the shipped `chem-small`)", _meta(result),
             "Held-out loss in nats per predicted token; `monitor suzuki` is the loss on 1000 "
             "Suzuki–Miyaura reactions, never trained on (tokens outside the stage's restricted vocabulary "
             f"not counted). Shipped file: {result['bytes']:,} bytes (bfloat16), SHA-256 "
             f"`{result['sha256'][:16]}…`; model card: `mistral_cl/models/chem-small/README.md`."]
    for k, stage in enumerate(result["stages"], start=1):
        history = stage["history"]
        losses = sorted(key for key in history[-1] if key.startswith(("heldout_", "monitor_")))
        rows = [{"step": 0, **{key: stage["initial"][key] for key in losses}}]
        rows += [{"step": h["step"], "train": h["loss"], **{key: h[key] for key in losses},
                  "tokens/s": round(h["tokens_per_s"])} for h in history]
        columns = [("step", "step"), ("train loss", "train"),
                   *[(key.replace("_", " ", 1), key) for key in losses], ("tokens/s", "tokens/s")]
        parts += [f"Stage {k}: `{stage['command']}`: {stage['tokens']:,} real tokens in "
                  f"{stage['seconds'] / 60:.1f} min wall ({stage['cpu_seconds'] / 60:.1f} CPU-min).",
                  _table(rows, columns)]
    return "\n\n".join(parts)


def pretrained_section(result: dict[str, Any]) -> str:
    """Held-out R² of the pretrained and random backbones and of the forests, random and ligand splits."""
    splits = result["splits"]
    rows = []
    for label, row in result["rows"].items():
        cells = {s: row["cells"][s]["r2"] for s in splits if s in row["cells"]}
        means = row.get("means", {})
        rows.append({"row": label, **cells,
                     **{f"mean {g}": _mean_sd({"mean": means[g]["r2"], "sd": means[g]["r2_sd"]})
                        for g in ("random", "ligand") if g in means},
                     "s": round(sum(c["seconds"] for c in row["cells"].values()) / len(row["cells"]))})
    columns = [("row", "row"), *[(s, s) for s in splits], ("random mean", "mean random"),
               ("ligand-OOS mean", "mean ligand"), ("s per split", "s")]
    options = [f"- `{label}`: `mistral-cl train {' '.join(row['options'])}`"
               for label, row in result["rows"].items() if row.get("options")]
    return "\n\n".join([
        "## Does pretraining help? Random and ligand-out-of-sample splits",
        _meta(result),
        "Held-out R² on Suzuki–Miyaura (`python benchmarks/pretrained.py`). `random:S`: the random 70/30 "
        "split of seed S; `ligand:A+B`: every reaction run with ligand A or B held out (960), the other "
        "4800 train; `ligand:A+B@S`: the same reactions, with the model, shuffling and forest seeded S "
        "(seed 0 without the suffix). A row's ligand-OOS mean is over every ligand cell it has, all seeds. "
        "The verdict picks the best pretrained row on the cells every candidate has and sets it beside "
        "each other row on the cells both have. Forests: scikit-learn defaults, 100 trees, on the one-hot "
        "components or DRFP (2048 bits). The model rows:",
        "\n".join(options),
        _table(rows, columns),
        *([result["notes"]] if result.get("notes") else []),
        *([result["verdict"]] if result.get("verdict") else []),
    ])


def ligand_similarity_section(result: dict[str, Any]) -> str:
    """Means over known ligands weighted by what a backbone or a fingerprint says about the new ligand,
    on the ligand splits: what knowing which ligands behave alike could be worth."""
    splits = result["splits"]
    rows = [{"reading": label, **{s: row[s]["nested"] for s in splits},
             "peeked": row["mean_peeked"], "nested": row["mean_nested"]}
            for label, row in result["rows"].items()]
    columns = [("reading", "reading"), *[(s, s) for s in splits],
               ("mean, peeked", "peeked"), ("mean, nested", "nested")]
    neighbours = "; ".join(
        f"{ligand}: {', '.join(result['nearest_ligands_by_yield_correlation'][ligand])} by yields, "
        f"{', '.join(result['nearest_ligands']['chem-small L0'][ligand])} by `chem-small` L0"
        for ligand in ("Xantphos", "dppf", "SPhos", "AmPhos"))
    peer = result.get("rxnfp")
    peer_text = ("" if not isinstance(peer, dict) else
                 " `rxnfp` rows: two BERT models of the rxnfp package, trained by its authors on patent "
                 "reactions (USPTO): `bert_pretrained`, the masked language model Yield-BERT fine-tunes, "
                 "and `bert_ft`, the fine-tune behind the package's default reaction fingerprint; a peer "
                 "that has read real reactions. Each ligand is read `alone` ([CLS] state of its SMILES as "
                 "a reaction without product) or `in reactions` (mean [CLS] state over the screen's 480 "
                 "reactions run with it, less the mean over ligands). Tokens outside their vocabulary: "
                 + ", ".join(f"{k} {v}" for k, v in peer["tokens_outside_vocabulary"].items()) + ".")
    return "\n\n".join([
        "## Do backbones know which ligands behave alike? (`benchmarks/ligand_similarity.py`)",
        _meta(result),
        "No head is trained: each held-out reaction of a ligand split is predicted from the measured "
        "yields of the same quinoline, indazole, base and solvent under the training ligands. "
        "`similarity`: weighted by softmax(similarity / T) to the new ligand, over the known ligands "
        "(not `none`; T = inf is their plain mean); similarity is the cosine of a backbone's mean-pooled "
        "states of the ligand's SMILES, or the Tanimoto of Morgan fingerprints (radius 2, 2048 bits). "
        "`offset`: the mean over known ligands plus the new ligand's offset, by ridge regression of "
        "the known ligands' offsets on the same vectors. `peeked`: T or penalty chosen on the held-out "
        "ligands themselves (a ceiling no lab has); `nested`: chosen by the mean R² over training "
        "ligands each predicted from the others. Split cells use the nested choice." + peer_text,
        _table(rows, columns),
        f"Three nearest known ligands: {neighbours}.",
    ])


def _swept(row: dict[str, Any]) -> str:
    """The strategy of a memory-sweep row with the options it was swept with (rows from before other
    strategies were swept are `replay`'s)."""
    return " ".join([row.get("strategy", "replay"), *row.get("options", [])])


def _task_aware(row: dict[str, Any]) -> bool:
    """Whether a memory-sweep row's strategy needs the task to predict (e.g. `replay-snapshot`)."""
    return any(seed.get("task-aware") for seed in row.get("per_seed", {}).values())


def _best_bounded(rows: Sequence[dict[str, Any]], *, task_aware: bool | None = None) -> dict[str, Any] | None:
    """The memory-sweep row with the lowest final RMSE among those storing at most 1000 reactions, the
    bound of issue #19's bar (only task-aware rows, or only the others, when `task_aware` says so)."""
    bounded = [r for r in rows if r["stored at most"] <= 1000
               and (task_aware is None or _task_aware(r) == task_aware)]
    return min(bounded, key=lambda r: r["RMSE %"]["mean"]) if bounded else None


def _sweep_order(row: dict[str, Any]) -> str:
    """The task order a memory-sweep row ran in (rows from before it was recorded ran in sorted order)."""
    return row.get("order", "sorted")


def _order_forests() -> dict[str, dict[str, float]]:
    """The cumulative one-hot forest's final per-task RMSE on the Suzuki–Miyaura stream, per task order
    (`results/classical.json`)."""
    path = RESULTS / "classical.json"
    if not path.exists():
        return {}
    return {r["order"]: r["rmse_acc"] for r in json.loads(path.read_text())["rows"]
            if (r["data"], r["features"], r["protocol"]) == ("suzuki", "onehot", "cumulative")}


def _bar_verdicts(rows: Sequence[dict[str, Any]], forest: float, source: str | None = None) -> list[str]:
    """Issue #19's bar on the memory-sweep rows of the sorted order: the best row storing at most 1000
    reactions against the cumulative forest's final RMSE, and, when that row is task-aware, the best row
    that is not; then the best such row of every other order against the forest of that order."""
    lines = _other_orders(rows)
    best = _best_bounded([r for r in rows if _sweep_order(r) == "sorted"])
    if best is None:
        return lines
    where = f" (`results/{source}`)" if source else ""

    def sentence(row: dict[str, Any], lead: str) -> str:
        met = row["RMSE %"]["mean"] < forest
        cpu = f" in {row['CPU s']['mean']:,.0f} CPU s a run" if "CPU s" in row else ""
        return (f"{lead}{where}, `{_swept(row)}` with `{row['memory']}`, ends at {_stat(row, 'RMSE %', 2)} "
                f"points{_interval(row)}{cpu}: the bar is **{'met' if met else 'missed'}**.")

    verdicts = [sentence(best, "Issue #19's bar (at most 1000 stored reactions, below the forest): the "
                               "best such row")]
    if _task_aware(best):
        verdicts.append("That row is task-aware: it predicts each learned task with the mean of the current "
                        "model and the one saved when the task had just been learned, so prediction needs "
                        "the task (here the reactant pair, which every reaction names).")
        agnostic = _best_bounded([r for r in rows if _sweep_order(r) == "sorted"], task_aware=False)
        if agnostic is not None:
            verdicts.append(sentence(agnostic, "The best row that predicts without the task"))
    return verdicts + lines


def _interval(row: dict[str, Any]) -> str:
    """` (95 % interval LOW to HIGH)` of a memory-sweep row's mean final RMSE over its seeds (a t-interval),
    or nothing for fewer than two seeds."""
    from scipy import stats

    values = [seed["RMSE %"] for seed in row.get("per_seed", {}).values()]
    if len(values) < 2:
        return ""
    mean = statistics.fmean(values)
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return f" (95 % interval {mean - half:.2f} to {mean + half:.2f})"


def _other_orders(rows: Sequence[dict[str, Any]]) -> list[str]:
    """For each task order other than sorted that the sweep ran in, its best row storing at most 1000
    reactions against the cumulative one-hot forest of the same order."""
    forests, lines = _order_forests(), []
    for order in dict.fromkeys(_sweep_order(r) for r in rows if _sweep_order(r) != "sorted"):
        best = _best_bounded([r for r in rows if _sweep_order(r) == order])
        if best is None or order not in forests:
            continue
        below = best["RMSE %"]["mean"] < forests[order]["mean"]
        lines.append(f"In the `{order}` task order, the best such row, `{_swept(best)}` with "
                     f"`{best['memory']}`, ends at {_stat(best, 'RMSE %', 2)} points, "
                     f"{'below' if below else 'above'} the cumulative one-hot forest's "
                     f"{_stat({'f': forests[order]}, 'f', 2)} in that order.")
    return lines


def memory_sweep_section(result: dict[str, Any]) -> str:
    rows = [{"strategy": f"`{_swept(r)}`", "memory": f"`{r['memory']}`",
             "stored": f"{r['stored at most']:,}",
             **{key: _stat(r, key, 2) for key in ("RMSE %", "RMSE BWT")}, "ACC": _stat(r, "ACC", 3),
             **{key: _stat(r, key, 0) for key in ("wall s", "CPU s")},
             "run": (f"{r.get('date', result['date'])[:10]}, "
                     f"`{r.get('git_commit', result['git_commit'])[:7]}`")}
            for r in result["rows"]]
    same = result.get("forests", {})  # the forests of the sorted order
    in_order = [r for r in result["rows"] if _sweep_order(r) == "sorted"]
    for row, r in zip(rows, result["rows"], strict=True):
        row["forest"] = (_stat({"f": same[r["memory"]]}, "f", 2)
                         if r["memory"] in same and _sweep_order(r) == "sorted" else "–")
    bar = result.get("forest")
    verdict = []
    if bar:
        verdict.append(f"The cumulative one-hot forest (sorted order, `results/classical.json`) ends at RMSE "
                       f"{bar['mean']:.2f} ± {bar['sd']:.2f} points.")
        for name in dict.fromkeys(_swept(r) for r in in_order):
            beaten = ", ".join(f"`{r['memory']}`" for r in in_order
                               if _swept(r) == name and r["RMSE %"]["mean"] < bar["mean"])
            verdict.append(f"`{name}` ends below it on the mean with memory {beaten}." if beaten
                           else f"`{name}` ends below it with none of its memories here.")
        verdict.extend(_bar_verdicts(result["rows"], bar["mean"]))
    verdict.extend(_equal_storage(in_order, same))
    return "\n\n".join([
        "## Replay's memory against its final error (`benchmarks/memory_sweep.py`)",
        _meta(result),
        "Replay on the 15 Suzuki–Miyaura tasks in sorted order (or the order a row's `--task-order` option "
        "names) with each memory (`reservoir:N`: at most "
        "N stored reactions, drawn uniformly from all seen; `all`: every training reaction), the "
        f"command's defaults otherwise (`{result['settings']['command'].strip()}`, S the strategy, O its "
        "options), seeds "
        f"{', '.join(map(str, result['settings']['seeds']))}: mean ± sd over seeds of the final per-task "
        "RMSE, RMSE-BWT (yield points; positive: the error of earlier tasks grew) and per-task R² ACC. "
        "`replay:weight=tasks:epochs=40` weighs every task seen the same and trains 40-epoch rounds; "
        "`distill=0.5` replays each remembered reaction against the mean of its measured yield and the "
        "model's prediction when its task had just been learned (DER++ for regression, `docs/continual.md`). "
        "`replay-snapshot` trains as `replay` does and predicts each learned task with the mean of the "
        "current model and the one saved when that task's round ended (task-aware: it needs the task, and "
        "it keeps one trainable half, here a head, per task). Each row gives the date and commit it ran at "
        "(wall and CPU seconds under the load recorded with it).",
        _table(rows, [("strategy", "strategy"), ("memory", "memory"), ("reactions stored at most", "stored"),
                      ("RMSE %", "RMSE %"), ("RMSE BWT", "RMSE BWT"), ("R² ACC", "ACC"),
                      ("one-hot forest, same memory: RMSE %", "forest"), ("wall s", "wall s"),
                      ("CPU s", "CPU s"), ("run", "run")]),
        *verdict,
        "![memory sweep](results/continual_memory_sweep.png)",
    ])


def _equal_storage(rows: Sequence[dict[str, Any]], forests: dict[str, dict[str, float]]) -> list[str]:
    """At each bounded memory, the best swept strategy against the one-hot forest that stores the same
    (the current task and the same memory policy, `classical.py --protocols memory:POLICY`)."""
    lines = []
    for memory in dict.fromkeys(r["memory"] for r in rows if r["memory"] != "all"):
        if memory not in forests:
            continue
        best = min((r for r in rows if r["memory"] == memory), key=lambda r: r["RMSE %"]["mean"])
        forest = forests[memory]["mean"]
        lines.append(f"`{memory}`: `{_swept(best)}` {best['RMSE %']['mean']:.2f}, the forest with the same "
                     f"memory {forest:.2f} ({'LLM' if best['RMSE %']['mean'] < forest else 'forest'} lower)")
    return (["At equal storage (sorted order, means over seeds): " + "; ".join(lines) + "."]
            if lines else [])


def continual_orders_section(result: dict[str, Any]) -> str:
    forests = result.get("forests", {})

    def scores(stats: dict[str, Any]) -> dict[str, str]:
        return {key: _stat(stats, key, 3 if key == "ACC" else 2) for key in stats}

    rows = []
    for strategy, stats in result["strategies"].items():
        for order in result["orders"]:
            rows.append({"strategy": strategy, "order": f"`{order}`", **scores(stats["per_order"][order]),
                         **{f"forest {name}": f"{forest[order]['RMSE %']['mean']:.2f}"
                            for name, forest in forests.items() if order in forest}})
        pooled = stats["pooled"]
        rmse = pooled["RMSE %"]
        rows.append({"strategy": f"**{strategy}**", "order": f"all ({stats['runs']} runs)", **scores(pooled),
                     "interval": f"{rmse['low']:.2f} to {rmse['high']:.2f}"})
    columns = [("strategy", "strategy"), ("order", "order"), ("RMSE %", "RMSE %"),
               ("95 % interval", "interval"), ("RMSE BWT", "RMSE BWT"), ("R² ACC", "ACC"),
               *[(f"{name} forest RMSE %", f"forest {name}") for name in forests]]
    verdict = []
    onehot = forests.get("onehot", {})
    replays = [name for name in result["strategies"] if name.split(":")[0] == "replay"]
    if replays and len(onehot) == len(result["orders"]):
        bar = sum(onehot[o]["RMSE %"]["mean"] for o in result["orders"]) / len(result["orders"])
        for name in replays:
            ours = result["strategies"][name]["pooled"]["RMSE %"]
            verdict.append(
                f"Over the {len(result['orders'])} orders, `{name}` (memory `all`) ends at RMSE "
                f"{ours['mean']:.2f} (95 % interval {ours['low']:.2f} to {ours['high']:.2f}); the cumulative "
                f"one-hot forest at {bar:.2f} on the mean of the same orders: the forest "
                f"{'is still ahead' if bar < ours['mean'] else 'is behind'}.")
    reference = result.get("reference")
    if reference:
        gaps = "; ".join(
            f"`{name}` {stats['minus_converged_joint']:+.2f} points "
            f"({'within' if stats['within_half_a_point'] else 'not within'} half a point)"
            for name, stats in result["strategies"].items() if "minus_converged_joint" in stats)
        verdict.append(
            f"The converged joint (`{reference['strategy']}`, {reference['runs']} runs in the orders "
            f"{', '.join(f'`{o}`' for o in reference['orders'])}: it learns every task at once, and every "
            f"order splits each task the same way, so these serve every order) ends at RMSE "
            f"{_stat(reference, 'RMSE %', 2)}. The pooled replay rows against it: {gaps}.")
    sources = ", ".join(f"`{order}` {source['file']} (commit `{source['git_commit'][:10]}`)"
                        for order, source in result["sources"].items())
    return "\n\n".join([
        "## Task orders (`benchmarks/continual_orders.py`)",
        _meta(result),
        "`naive` and `replay` (the demo's settings), and where recorded `replay:weight=tasks:epochs=40` "
        "(every task seen weighing the same, 40-epoch rounds), in four orders of the 15 Suzuki–Miyaura "
        "tasks: "
        "`sorted`, `seed` (the seed paper's order) and two random orders, seeds 0-2 each. Final "
        "per-task RMSE and RMSE-BWT in yield points, mean ± sd over seeds; the bold rows pool every "
        "order and seed, with the 95 % t-interval of the mean. The forest columns are the cumulative "
        f"forests of the same order (`results/classical.json`). Sources: {sources}.",
        *[f"`{order}`: {source['notes']}" for order, source in result["sources"].items()
          if source.get("notes") and order != "sorted"],
        _table(rows, columns),
        *verdict,
    ])


def _per_seed_rows(result: dict[str, Any]) -> dict[int, dict[str, dict[str, Any]]]:
    """seed -> strategy -> row of a continual result (a one-seed result's rows are its seed's)."""
    if result.get("per_seed"):
        return {int(seed): {r["strategy"]: r for r in rows} for seed, rows in result["per_seed"].items()}
    seeds = result["settings"].get("seeds") or [result["settings"]["train"]["seed"]]
    return {int(seeds[0]): {r["strategy"]: r for r in result["rows"]}}


def _same_stream(result: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Whether two continual results ran the same tasks, order, split and memory (so seeds pair up)."""
    keys = ("data", "task_order", "split", "tasks")
    same = all(result["settings"].get(k) == reference["settings"].get(k) for k in keys)
    ours, theirs = (r["settings"].get("continual", {}) for r in (result, reference))
    return same and all(ours.get(k) == theirs.get(k) for k in ("test_fraction", "memory"))


ZERO_SHOT = ("zero-shot R²", "zero-shot RMSE")


def zero_shot_rows(reference: dict[str, Any], variants: dict[str, dict[str, Any]],
                   strategies: Sequence[str] = ("naive", "replay")) -> list[dict[str, Any]]:
    """Each pretrained variant's zero-shot R² and RMSE (the score on each next task before it is
    trained) beside the reference's (`continual.json`, the random `tiny`) on the seeds both recorded."""
    ours = _per_seed_rows(reference)
    rows = []
    for name, result in variants.items():
        theirs = _per_seed_rows(result)
        for strategy in strategies:
            seeds = [s for s in sorted(theirs) if s in ours
                     and all(side[s].get(strategy, {}).get(key) is not None
                             for side in (theirs, ours) for key in ZERO_SHOT)]
            if not seeds:
                continue
            pick = {key: ([theirs[s][strategy][key] for s in seeds], [ours[s][strategy][key] for s in seeds])
                    for key in ZERO_SHOT}
            r2, r2_random = (math.fsum(v) / len(v) for v in pick["zero-shot R²"])
            rmse, rmse_random = (math.fsum(v) / len(v) for v in pick["zero-shot RMSE"])
            rows.append({"variant": f"`{name}`", "name": name, "strategy": strategy,
                         "mode": result["settings"]["mode"],
                         "layer": result["settings"].get("head", {}).get("feature_layer"),
                         "seeds": ", ".join(map(str, seeds)), "n": len(seeds),
                         "r2": r2, "r2 random": r2_random, "rmse": rmse, "rmse random": rmse_random,
                         "higher": r2 > r2_random,
                         "per seed": sum(a > b for a, b in zip(*pick["zero-shot R²"], strict=True)),
                         "rmse per seed": sum(a < b for a, b in zip(*pick["zero-shot RMSE"], strict=True))})
    return rows


def zero_shot_verdict(rows: Sequence[dict[str, Any]], seeds: int = 3) -> str:
    """Whether the zero-shot R² is higher with pretrained weights, judged on variants with `seeds` or
    more seeds, with what qualifies the claim: the seeds that go the other way and the RMSE."""
    settled = [r for r in rows if r["n"] >= seeds]
    others = [r for r in rows if r["n"] < seeds]
    fewer = ([f"Variants with fewer seeds, not judged: {sum(r['higher'] for r in others)} of {len(others)} "
              "rows higher on the mean."] if others else [])
    if not settled:
        return " ".join([f"No pretrained variant has {seeds} seeds yet: the target is not judged.", *fewer])
    met = [r for r in settled if r["higher"]]
    words = []
    for r in settled:
        rmse = ("lower" if r["rmse"] < r["rmse random"] else "higher")
        words.append(f"{r['variant']} `{r['strategy']}` R² {r['r2']:.3f} against {r['r2 random']:.3f}, "
                     f"higher on {r['per seed']} of {r['n']} seeds; its zero-shot RMSE is {rmse} on the mean "
                     f"({r['rmse']:.2f} against {r['rmse random']:.2f}) and lower on {r['rmse per seed']} of "
                     f"{r['n']} seeds")
    head = (f"Target (zero-shot R² higher with the pretrained model than with the random one, on the mean "
            f"over {seeds} or more seeds): " + (f"**met on the mean** by {len(met)} of {len(settled)} rows"
                                                 if met else "**missed**") + ". ")
    return head + "; ".join(words) + ". " + " ".join(fewer)


def zero_shot_section() -> str:
    """Issue #21's forward view: zero-shot R² on each next reactant pair, pretrained against random."""
    title = "## Zero-shot on the next reactant pair: pretrained against random backbones"
    if not (RESULTS / "continual.json").exists():
        return f"{title}\n\nNot run yet: no `benchmarks/results/continual.json` to compare with."
    reference = json.loads((RESULTS / "continual.json").read_text())
    variants = {}
    for path in sorted(RESULTS.glob("continual_*.json")):
        result = json.loads(path.read_text())
        if (str(result.get("settings", {}).get("model", "")).startswith("weights ")
                and _same_stream(result, reference)):
            variants[path.stem] = result
    rows = zero_shot_rows(reference, variants)
    if not rows:
        return f"{title}\n\nNo continual result with pretrained weights on the main table's stream yet."
    shown = [{**row, "layer": "final" if row["layer"] is None else row["layer"],
              **{k: f"{row[k]:.3f}" for k in ("r2", "r2 random")},
              **{k: f"{row[k]:.2f}" for k in ("rmse", "rmse random")},
              "wins": f"{row['per seed']} of {row['n']}", "higher": "yes" if row["higher"] else "no"}
             for row in rows]
    return "\n\n".join([
        title,
        "From the continual results above: the R² and RMSE (yield points) on each task from the second "
        "on, just before it is trained, averaged over tasks (the seed paper's forward view), for every "
        "variant that loads pretrained weights, beside the main table's random `tiny` (its head reading "
        "the token embeddings) on the same seeds, with the same tasks, order, 70/30 splits and replay "
        "memory. Layer: the backbone states the variant's head reads (0: the token embeddings).",
        _table(shown, [("variant", "variant"), ("mode", "mode"), ("layer", "layer"), ("strategy", "strategy"),
                       ("seeds", "seeds"), ("zero-shot R²", "r2"), ("random `tiny`", "r2 random"),
                       ("zero-shot RMSE", "rmse"), ("random `tiny` RMSE", "rmse random"),
                       ("higher on the mean", "higher"), ("higher by seed", "wins")]),
        zero_shot_verdict(rows),
    ])


SECTIONS: dict[str, Callable[..., str]] = {
    "accuracy": accuracy_section,
    "pretrained": pretrained_section,
    "ligand_similarity": ligand_similarity_section,
    "pretrain": pretrain_section,
    "continual": continual_section,
    "continual_molecules": functools.partial(continual_section, name="continual_molecules"),
    "continual_memory_sweep": memory_sweep_section,
    "continual_orders": continual_orders_section,
    "continual_buchwald": functools.partial(continual_section, name="continual_buchwald"),
    "continual_chem_small": functools.partial(continual_section, name="continual_chem_small"),
    "continual_seed_recipe": functools.partial(continual_section, name="continual_seed_recipe"),
    "continual_chem_small_lora": functools.partial(continual_section, name="continual_chem_small_lora"),
    "continual_chem_small_full": functools.partial(continual_section, name="continual_chem_small_full"),
    "continual_chem_small_l0": functools.partial(continual_section, name="continual_chem_small_l0"),
    "zero_shot": zero_shot_section,
    "classical": classical_section,
    "throughput": throughput_section,
    "memory": memory_section,
    "gpu_check": gpu_check_section,
    "checkpoint": checkpoint_section,
}
# Sections with something to say before their benchmark has run.
OPTIONAL = {"gpu_check"}
# Sections read from other sections' results, with no file of their own.
DERIVED = {"zero_shot"}
# The continual benchmark's result files whose LLM rows meet the classical bar.
CONTINUAL_RESULTS = ("continual", "continual_molecules")


def render() -> str:
    parts = [INTRO]
    for name, section in SECTIONS.items():
        path = RESULTS / f"{name}.json"
        if name in DERIVED:
            parts.append(section())
        elif path.exists():
            parts.append(section(json.loads(path.read_text())))
        elif name in OPTIONAL:
            parts.append(section(None))
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
