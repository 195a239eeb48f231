"""Per-device memory of the Mistral-7B train steps, from compilation alone (nothing is allocated).

The real step of `mistral_cl.train` is lowered with abstract, sharded inputs (`ShapeDtypeStruct`s) for
the real `mistral-7b-v0.1` shapes and compiled for simulated CPU devices; XLA's buffer assignment
then says how much each device would hold: arguments, outputs, temporaries, generated code.

    python benchmarks/memory.py                   # every table (~20 min on 2 CPU cores)
    python benchmarks/memory.py --quick           # one row per target
    python benchmarks/memory.py --continual-only  # the continual rows alone (~5 min)

Targets: full fine-tuning (AdamW, float32 master weights, bfloat16 compute) at batch 8 x 256 fits in
24 GiB per device on 8 devices; LoRA rank 16 (frozen base stored in bfloat16) fits on ONE device.

Continual rows: the step of one continual round of `naive` (the plain step, the baseline), `replay`,
`ewc`, `lwf` and `agem` in each target's best setting, built as the continual learner builds it
(`strategy.objective`, `grad_transform` and `extra` of a `Setting` whose model halves are abstract), with
the strategy's state after a round (`state_like`) placed by `sharding.strategy_state_specs`, and the
batches of its steps (rehearsal pairs each batch with a remembered one of `memory_batch` reactions).
Each row records the state's bytes per device and what the strategy adds to naive's step; the target is
every strategy within the same 24 GiB.

The CPU compiler is not the GPU/TPU one. Arguments and outputs (weights, optimizer state, batch) are
exact; temporaries are an estimate. XLA:CPU runs bfloat16 matmuls in float32: it converts their
operands, and its loop-invariant code motion then hoists the conversion of the *whole stacked* frozen
weights out of the layer loop (a float32 copy of all 7B weights: +27 GiB for LoRA) where an
accelerator multiplies bfloat16 natively and holds one layer's slice at most. That pass is therefore
disabled by default here (`--cpu-default-passes` keeps it; the full run also reports the target rows
with it, for comparison). The remaining float32 copies of bfloat16 activations still make the CPU
numbers somewhat pessimistic.
"""

from __future__ import annotations

import os
import sys

N_DEVICES = 8
CPU_DEFAULT_PASSES = "--cpu-default-passes" in sys.argv
NO_LICM = "--xla_disable_hlo_passes=while-loop-invariant-code-motion"
_DEVICE_COUNT = f"--xla_force_host_platform_device_count={N_DEVICES}"
_inherited = [f for f in os.environ.get("XLA_FLAGS", "").split()
              if f != NO_LICM and not f.startswith("--xla_force_host_platform_device_count")]
os.environ["XLA_FLAGS"] = " ".join([*_inherited, _DEVICE_COUNT, *([] if CPU_DEFAULT_PASSES else [NO_LICM])])
os.environ["JAX_PLATFORMS"] = "cpu"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sharding  # noqa: E402
from mistral_cl.config import ModelConfig  # noqa: E402
from mistral_cl.continual.strategies import Setting, Strategy, StrategyState, build_strategy  # noqa: E402
from mistral_cl.continual.strategies.replay import Rehearsal  # noqa: E402
from mistral_cl.data.batching import Batch  # noqa: E402
from mistral_cl.head import HeadConfig  # noqa: E402
from mistral_cl.lora import LoRAConfig  # noqa: E402
from mistral_cl.predictor import AdaptationConfig, build_yield_model, trainable_filter  # noqa: E402
from mistral_cl.train import (  # noqa: E402
    TrainConfig,
    make_optimizer,
    make_train_step,
    supervised_objective,
)
from sharding.specs import path_name  # noqa: E402

GiB = 1024**3
BUDGET_GIB = 24.0
LORA_RANK = 16
TRAIN = TrainConfig(optimizer="adamw", compute_dtype="bfloat16")
# Naive's step is the plain step: the baseline the others are measured against.
STRATEGIES = ("naive", "replay", "ewc", "lwf", "agem")


@dataclasses.dataclass(frozen=True)
class Case:
    """One compiled step: what trains, on which mesh, at which batch shape and remat policy."""

    mode: str  # "full" | "lora"
    mesh: str  # data x fsdp x tensor
    batch: int
    seq: int
    remat: str  # "none" | "dots" | "full"

    @property
    def devices(self) -> int:
        return eval(self.mesh.replace("x", "*"))  # a product of three integers

    @property
    def target(self) -> str | None:
        """Which target this row can meet (the row must match its batch shape and device count)."""
        if (self.batch, self.seq) != (8, 256):
            return None
        if self.mode == "full" and self.devices == N_DEVICES:
            return "full fine-tuning, AdamW fp32 master, 8 devices"
        if self.mode == "lora" and self.devices == 1:
            return f"LoRA rank {LORA_RANK}, bf16 frozen base, 1 device"
        return None


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case("full", "1x8x1", 8, 256, "dots"), Case("lora", "1x1x1", 8, 256, "dots")]
    rows = [Case("full", mesh, 8, 256, remat) for mesh in ("1x8x1", "1x1x8", "1x2x4", "2x4x1")
            for remat in ("none", "dots", "full")]
    rows += [Case("full", "1x8x1", 8, 512, remat) for remat in ("dots", "full")]
    rows += [Case("lora", "1x1x1", 8, 256, remat) for remat in ("none", "dots", "full")]
    rows += [Case("lora", "1x1x1", 8, 512, "full"), Case("lora", "1x8x1", 8, 256, "none")]
    return rows


def continual_cases() -> list[Case]:
    """The best setting of each target (see the recorded table): where the continual rows are compiled."""
    return [Case("full", "1x8x1", 8, 256, "full"), Case("lora", "1x1x1", 8, 256, "full")]


def _abstract(tree, specs, mesh: Mesh, dtype=None):
    """`ShapeDtypeStruct`s of `tree` carrying their shardings (floating leaves cast to `dtype`)."""

    def put(leaf, spec):
        floating = jnp.issubdtype(leaf.dtype, jnp.floating)
        return jax.ShapeDtypeStruct(leaf.shape, dtype if dtype and floating else leaf.dtype,
                                    sharding=NamedSharding(mesh, spec))

    return jax.tree.map(put, tree, specs)


def abstract_state(strategy: Strategy, setting: Setting) -> StrategyState:
    """The strategy's state after its first round, as shapes: the arrays of `state_like`, the values
    (memory positions, flags) of `initial_state`, traced so that it allocates nothing."""
    values: dict = {}
    jax.eval_shape(lambda: values.update(strategy.initial_state(setting).values))
    return StrategyState(strategy.state_like(setting, 1), values)


def step_rows(strategy: Strategy | None, batch: int) -> tuple[int, ...]:
    """Rows of each batch of a step: rehearsal pairs the current batch with a remembered one of
    `memory_batch` reactions (0: as many), padded to the same width (`paired_with_memory`)."""
    if isinstance(strategy, Rehearsal):
        return batch, strategy.memory_batch or batch
    return (batch,)


def _batch(rows: int, seq: int) -> Batch:
    tokens = jax.ShapeDtypeStruct((rows, seq), jnp.int32)
    per_row = jax.ShapeDtypeStruct((rows,), jnp.float32)
    fields = {"tokens": tokens, "mask": jax.ShapeDtypeStruct(tokens.shape, jnp.bool_),
              "yields": per_row, "weight": per_row, "task": jax.ShapeDtypeStruct(per_row.shape, jnp.int32),
              "index": jax.ShapeDtypeStruct(per_row.shape, jnp.int32)}
    return Batch(**fields)


_HLO_ARRAY = re.compile(r"\b(pred|bf16|[fsu]\d+)\[(\d+(?:,\d+)*)\]")
_HLO_RESULT = re.compile(r"^\s+(?:ROOT )?%[\w.\-]+ = (.+?) [a-z][\w\-]*\(")  # an instruction's result type
_HLO_FUSED = re.compile(r"fusion\(.*calls=%([\w.\-]+)")


def _materialised(hlo: str) -> set[tuple[str, str]]:
    """(dtype, dims) of every array that the compiled HLO text holds in a buffer: instruction results
    outside fused computations (whose intermediates live in registers, never in memory)."""
    fused = set(_HLO_FUSED.findall(hlo))
    found: set[tuple[str, str]] = set()
    computation = None
    for line in hlo.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            computation = line.removeprefix("ENTRY ").split(" ", 1)[0].lstrip("%")
        elif computation not in fused and (result := _HLO_RESULT.match(line)):
            found.update(_HLO_ARRAY.findall(result.group(1)))
    return found


def largest_array(hlo: str, trainable) -> dict:
    """The largest array a compiled step holds in memory (from its HLO text), and the trainable weight
    whose whole, unsharded shape it has when the layout splits that weight (a sign that the partitioner
    gathered it)."""

    def size(found: tuple[str, str]) -> int:
        dtype, dims = found
        itemsize = {"pred": 1, "bf16": 2}.get(dtype) or int(dtype[1:]) // 8
        return math.prod(map(int, dims.split(","))) * itemsize

    dtype, dims = max(_materialised(hlo), key=size)
    split = {tuple(leaf.shape): path_name(path)
             for path, leaf in jax.tree_util.tree_leaves_with_path(trainable)
             if leaf.sharding.shard_shape(leaf.shape) != leaf.shape}
    return {"array": f"{dtype}[{dims}]", "bytes": size((dtype, dims)),
            "whole_copy_of": split.get(tuple(map(int, dims.split(","))))}


def _state_bytes(extra) -> dict[str, int]:
    """Per-device bytes of each part of a step's `extra` (by key; `extra` when it is one array)."""
    if isinstance(extra, dict):
        return {key: _per_device_bytes(value) for key, value in extra.items()}
    return {} if extra is None else {"extra": _per_device_bytes(extra)}


def _per_device_bytes(tree) -> int:
    """Bytes of `tree`'s abstract arrays held by one device (the largest shard of each)."""
    return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
               for leaf in jax.tree.leaves(tree))


def compile_step(case: Case, config: ModelConfig, strategy: Strategy | None = None) -> dict:
    """Compiles the train step of `case` (of `strategy`'s continual round, if given) and returns its
    per-device memory, in bytes."""
    devices = jax.devices()[: case.devices]
    mesh = sharding.make_mesh(case.mesh, devices=devices)
    adaptation = AdaptationConfig(mode=case.mode, lora=LoRAConfig(rank=LORA_RANK))

    def build():
        return build_yield_model(config, HeadConfig(), adaptation, key=jax.random.key(0),
                                 remat=case.remat)

    model = eqx.filter_eval_shape(build)
    trains = eqx.filter_eval_shape(lambda: trainable_filter(build(), case.mode))
    trainable, frozen = eqx.partition(model, trains)
    trainable_specs = sharding.model_specs(trainable, mesh)
    trainable = _abstract(trainable, trainable_specs, mesh)
    # The DESIGN allows a frozen base in bfloat16: half the bytes of the 7B weights.
    frozen = _abstract(frozen, sharding.model_specs(frozen, mesh), mesh, jnp.bfloat16)
    optimizer = make_optimizer(TRAIN, 1000)
    opt_state = jax.eval_shape(optimizer.init, trainable)
    opt_state = _abstract(opt_state, sharding.opt_state_specs(opt_state, trainable, mesh), mesh)
    objective, transform, extra = supervised_objective(), None, None
    if strategy is not None:
        setting = Setting(pool=None, train=TRAIN, mode=case.mode, filter_spec=trains,  # type: ignore[arg-type]
                          frozen=frozen, initial=trainable)
        objective, transform = strategy.objective(setting), strategy.grad_transform(setting)
        extra = strategy.extra(setting, abstract_state(strategy, setting))
        extra = _abstract(extra, sharding.strategy_state_specs(extra, trainable_specs, mesh), mesh)
    rows = step_rows(strategy, case.batch)
    batches = tuple(_abstract(b, sharding.batch_specs(b, mesh), mesh) for b in (_batch(n, case.seq)
                                                                             for n in rows))
    key = jax.eval_shape(lambda: jax.random.key(0))
    args = (trainable, frozen, opt_state, batches,
            jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=NamedSharding(mesh, PartitionSpec())), extra)
    step = make_train_step(optimizer, objective, compute_dtype=TRAIN.compute_dtype, grad_transform=transform,
                           constrain=sharding.state_constraint(mesh))
    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    peak = (stats.argument_size_in_bytes + stats.temp_size_in_bytes + stats.output_size_in_bytes
            - stats.alias_size_in_bytes)
    row = {
        **dataclasses.asdict(case),
        "devices": case.devices,
        "arguments": stats.argument_size_in_bytes,
        "outputs": stats.output_size_in_bytes,
        "aliased": stats.alias_size_in_bytes,
        "temporaries": stats.temp_size_in_bytes,
        "generated_code": stats.generated_code_size_in_bytes,
        "peak_estimate": peak,
        "compile_seconds": round(seconds, 1),
        "target": case.target,
    }
    if strategy is not None:
        parts = _state_bytes(extra)
        row = {"strategy": strategy.spec, **row, "batches": [f"{n}x{case.seq}" for n in rows],
               "state_bytes": sum(parts.values()), "state_parts": parts,
               "largest_array": largest_array(compiled.as_text(), trainable)}
    return row


def continual_rows(config: ModelConfig) -> list[dict]:
    """One row per strategy and continual case, with what each adds to naive's step of its case."""
    rows = []
    for case in continual_cases():
        for name in STRATEGIES:
            print(f"compiling {name} {case.mode} {case.mesh} {case.batch}x{case.seq} remat={case.remat} ...",
                  flush=True)
            rows.append(compile_step(case, config, build_strategy(name)))
        naive = rows[-len(STRATEGIES)]
        for row in rows[-len(STRATEGIES):]:
            for field in ("arguments", "temporaries", "peak_estimate"):
                row[f"added_{field}"] = row[field] - naive[field]
    return rows


def continual_targets(rows: list[dict]) -> dict[str, dict]:
    """For each target: met when every strategy's step fits, the worst strategy, and how far each
    strategy over the budget misses it."""
    verdicts = {}
    for name in sorted({r["target"] for r in rows}):
        group = [r for r in rows if r["target"] == name]
        worst = max(group, key=lambda r: r["peak_estimate"])
        margin = BUDGET_GIB - worst["peak_estimate"] / GiB
        verdicts[name] = {
            "met": margin >= 0, "setting": f"{worst['mesh']} remat={worst['remat']}",
            "worst": worst["strategy"], "peak_gib": round(worst["peak_estimate"] / GiB, 2),
            "margin_gib": round(margin, 2),
            "over_budget_gib": {r["strategy"]: round(r["peak_estimate"] / GiB - BUDGET_GIB, 2)
                                for r in group if r["peak_estimate"] > BUDGET_GIB * GiB},
        }
    return verdicts


def _gib(n: int) -> str:
    return f"{n / GiB:7.2f}"


def print_table(rows: list[dict]) -> None:
    head = (f"{'mode':5} {'mesh':6} {'batch':>7} {'remat':5} {'args':>7} {'outputs':>7} "
            f"{'aliased':>7} {'temps':>7} {'code':>7} {'peak':>7}  fits {BUDGET_GIB:.0f} GiB")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        fits = "yes" if r["peak_estimate"] <= BUDGET_GIB * GiB else "NO"
        print(f"{r['mode']:5} {r['mesh']:6} {r['batch']:>3}x{r['seq']:<3} {r['remat']:5} "
              f"{_gib(r['arguments'])} {_gib(r['outputs'])} {_gib(r['aliased'])} "
              f"{_gib(r['temporaries'])} {_gib(r['generated_code'])} {_gib(r['peak_estimate'])}  "
              f"{fits}")
    print("(GiB per device; peak = arguments + temporaries + outputs - aliased)")


def print_continual_table(rows: list[dict]) -> None:
    head = (f"{'strategy':8} {'mode':5} {'mesh':6} {'batches':15} {'args':>7} {'temps':>7} {'peak':>7} "
            f"{'state':>7} {'+args':>7} {'+temps':>7} {'+peak':>7}  fits  largest array")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        fits = "yes" if r["peak_estimate"] <= BUDGET_GIB * GiB else "NO"
        largest = r["largest_array"]
        whole = f", whole {largest['whole_copy_of']}" if largest["whole_copy_of"] else ""
        print(f"{r['strategy']:8} {r['mode']:5} {r['mesh']:6} {' + '.join(r['batches']):15} "
              f"{_gib(r['arguments'])} {_gib(r['temporaries'])} {_gib(r['peak_estimate'])} "
              f"{_gib(r['state_bytes'])} {_gib(r['added_arguments'])} {_gib(r['added_temporaries'])} "
              f"{_gib(r['added_peak_estimate'])}  {fits:4}  {largest['array']} "
              f"{largest['bytes'] / GiB:.2f}{whole}")
    print(f"(GiB per device, {BUDGET_GIB:.0f} GiB budget; state: the strategy's arrays its step reads; "
          "+: added to naive's step)")


def targets(rows: list[dict]) -> dict[str, dict]:
    """For each target: met or not, by its best row, and the margin to the budget."""
    verdicts = {}
    for name in sorted({r["target"] for r in rows if r["target"]}):
        best = min((r for r in rows if r["target"] == name), key=lambda r: r["peak_estimate"])
        margin = BUDGET_GIB - best["peak_estimate"] / GiB
        verdicts[name] = {"met": margin >= 0, "best": f"{best['mesh']} remat={best['remat']}",
                          "peak_gib": round(best["peak_estimate"] / GiB, 2),
                          "margin_gib": round(margin, 2)}
    return verdicts


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _with_cpu_default_passes() -> dict:
    """The target rows again, in a fresh process that keeps every XLA:CPU pass."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "memory.json"
        subprocess.run([sys.executable, __file__, "--quick", "--cpu-default-passes", "--out",
                        str(out)], check=True)
        result = json.loads(out.read_text())
    return {"xla_flags": result["xla_flags"], "targets": result["targets"], "rows": result["rows"]}


def _print_verdicts(verdicts: dict[str, dict], which: str) -> None:
    for name, v in verdicts.items():
        word = "MET" if v["met"] else "MISSED"
        how = "under" if v["met"] else "over"
        setting = v["best"] if which == "best" else f"{v['setting']}, worst {v['worst']}"
        print(f"target {word}: {name}: {v['peak_gib']:.2f} GiB with {setting} "
              f"({abs(v['margin_gib']):.2f} GiB {how} the {BUDGET_GIB:.0f} GiB budget)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one row per target")
    parser.add_argument("--continual-only", action="store_true", help="the continual rows alone")
    parser.add_argument("--cpu-default-passes", action="store_true",
                        help="keep XLA:CPU's loop-invariant code motion (see the module docstring)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.json")
    args = parser.parse_args()
    config = ModelConfig.preset("mistral-7b-v0.1")
    started = time.perf_counter()
    rows = []
    for case in [] if args.continual_only else cases(args.quick):
        print(f"compiling {case.mode} {case.mesh} {case.batch}x{case.seq} remat={case.remat} ...",
              flush=True)
        rows.append(compile_step(case, config))
    continual = None if args.quick or args.cpu_default_passes else continual_rows(config)
    verdicts = targets(rows)
    if rows:
        print()
        print_table(rows)
        _print_verdicts(verdicts, "best")
    continual_verdicts = None
    if continual:
        print()
        print_continual_table(continual)
        continual_verdicts = continual_targets(continual)
        _print_verdicts(continual_verdicts, "worst")
    comparison = None
    if not args.quick and not args.cpu_default_passes and not args.continual_only:
        comparison = _with_cpu_default_passes()
    wall = time.perf_counter() - started
    print(f"wall time {wall / 60:.1f} min")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
                   f"{N_DEVICES} simulated CPU devices, jax {jax.__version__}",
        "git_commit": _commit(),
        "model": "mistral-7b-v0.1",
        "note": "XLA CPU buffer assignment; accelerator temporaries differ (see the docstring)",
        "xla_flags": os.environ["XLA_FLAGS"].split(),
        "budget_gib": BUDGET_GIB,
        "targets": verdicts,
        "rows": rows,
        "cpu_default_passes": comparison,
        "continual": None if continual is None else {
            "strategies": list(STRATEGIES),
            "train": dataclasses.asdict(TRAIN),
            "targets": continual_verdicts,
            "rows": continual,
        },
        "wall_seconds": round(wall),
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
