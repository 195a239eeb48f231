"""Per-device memory of the Mistral-7B train steps, from compilation alone (nothing is allocated).

The real step of `mistral_cl.train` is lowered with abstract, sharded inputs (`ShapeDtypeStruct`s) for
the real `mistral-7b-v0.1` shapes and compiled for simulated CPU devices; XLA's buffer assignment
then says how much each device would hold: arguments, outputs, temporaries, generated code.

    python benchmarks/memory.py                 # the full table (~5-10 min on 2 CPU cores)
    python benchmarks/memory.py --quick         # one row per target

Targets: full fine-tuning (AdamW, float32 master weights, bfloat16 compute) at batch 8 x 256 fits in
24 GiB per device on 8 devices; LoRA rank 16 (frozen base stored in bfloat16) fits on ONE device.

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
import platform  # noqa: E402
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

GiB = 1024**3
BUDGET_GIB = 24.0
LORA_RANK = 16


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


def _abstract(tree, specs, mesh: Mesh, dtype=None):
    """`ShapeDtypeStruct`s of `tree` carrying their shardings (floating leaves cast to `dtype`)."""

    def put(leaf, spec):
        floating = jnp.issubdtype(leaf.dtype, jnp.floating)
        return jax.ShapeDtypeStruct(leaf.shape, dtype if dtype and floating else leaf.dtype,
                                    sharding=NamedSharding(mesh, spec))

    return jax.tree.map(put, tree, specs)


def compile_step(case: Case, config: ModelConfig) -> dict:
    """Compiles the train step of `case` and returns its per-device memory, in bytes."""
    devices = jax.devices()[: case.devices]
    mesh = sharding.make_mesh(case.mesh, devices=devices)
    adaptation = AdaptationConfig(mode=case.mode, lora=LoRAConfig(rank=LORA_RANK))

    def build():
        return build_yield_model(config, HeadConfig(), adaptation, key=jax.random.key(0),
                                 remat=case.remat)

    model = eqx.filter_eval_shape(build)
    trains = eqx.filter_eval_shape(lambda: trainable_filter(build(), case.mode))
    trainable, frozen = eqx.partition(model, trains)
    optimizer = make_optimizer(TrainConfig(optimizer="adamw", compute_dtype="bfloat16"), 1000)
    opt_state = jax.eval_shape(optimizer.init, trainable)
    opt_specs = sharding.opt_state_specs(opt_state, trainable, mesh)
    tokens = jax.ShapeDtypeStruct((case.batch, case.seq), jnp.int32)
    rows = jax.ShapeDtypeStruct((case.batch,), jnp.float32)
    fields = {"tokens": tokens, "mask": jax.ShapeDtypeStruct(tokens.shape, jnp.bool_),
              "yields": rows, "weight": rows, "task": jax.ShapeDtypeStruct(rows.shape, jnp.int32),
              "index": jax.ShapeDtypeStruct(rows.shape, jnp.int32)}
    batch = Batch(**{name: fields[name] for name in Batch._fields})
    key = jax.eval_shape(lambda: jax.random.key(0))

    args = (
        _abstract(trainable, sharding.model_specs(trainable, mesh), mesh),
        # The DESIGN allows a frozen base in bfloat16: half the bytes of the 7B weights.
        _abstract(frozen, sharding.model_specs(frozen, mesh), mesh, jnp.bfloat16),
        _abstract(opt_state, opt_specs, mesh),
        (_abstract(batch, sharding.batch_specs(batch, mesh), mesh),),
        jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=NamedSharding(mesh, PartitionSpec())),
        None,
    )
    step = make_train_step(optimizer, supervised_objective(), compute_dtype="bfloat16",
                           constrain=sharding.state_constraint(mesh))
    start = time.perf_counter()
    stats = step.lower(*args).compile().memory_analysis()
    seconds = time.perf_counter() - start
    peak = (stats.argument_size_in_bytes + stats.temp_size_in_bytes + stats.output_size_in_bytes
            - stats.alias_size_in_bytes)
    return {
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one row per target")
    parser.add_argument("--cpu-default-passes", action="store_true",
                        help="keep XLA:CPU's loop-invariant code motion (see the module docstring)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.json")
    args = parser.parse_args()
    config = ModelConfig.preset("mistral-7b-v0.1")
    rows = []
    for case in cases(args.quick):
        print(f"compiling {case.mode} {case.mesh} {case.batch}x{case.seq} remat={case.remat} ...",
              flush=True)
        rows.append(compile_step(case, config))
    print()
    print_table(rows)
    verdicts = targets(rows)
    for name, v in verdicts.items():
        word = "MET" if v["met"] else "MISSED"
        how = "under" if v["met"] else "over"
        print(f"target {word}: {name}: {v['peak_gib']:.2f} GiB with {v['best']} "
              f"({abs(v['margin_gib']):.2f} GiB {how} the {BUDGET_GIB:.0f} GiB budget)")
    comparison = None
    if not args.quick and not args.cpu_default_passes:
        comparison = _with_cpu_default_passes()
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
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
