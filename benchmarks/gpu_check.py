"""The prepared GPU check: what a first GPU session must measure, in one run of under 8 minutes on an H100.

    bash benchmarks/gpu_check.sh            # on a GPU (prints the GPU, then runs this script)
    bash benchmarks/gpu_check.sh --dry      # anywhere: every shape shrunk, under a minute on 2 CPU cores

Sections, each timed; one that fails is recorded with its error and the others still run:

1. `matmul_peak`: the median rate of `n x n` bfloat16 matmuls (n = 8192 on a GPU), the denominator of MFU.
2. `lora_step`: the train step of `memory.py`'s LoRA plan (Mistral-7B shapes, 32 layers under scan, LoRA
   rank 16, AdamW, bfloat16 compute) on random weights: the frozen base in bfloat16, adapters and head in
   float32, each weight drawn in its own dtype (stacked ones layer by layer), so no float32 copy of the
   base ever exists. One compile (timed, with XLA's own memory analysis for this device), then the
   median of timed steps: tokens/s, and MFU = the model FLOPs of `throughput.step_flops` (recomputation
   under remat not counted) / time / the measured peak. The device's peak memory (`memory_stats`) is
   compared with the plan's row of the same shape in `results/memory.json`; the peak before the first
   step is kept too, to show that the step, not the set-up, set it.
3. `attention_parity`: the attention this backend runs (`mistral_cl.attention.dot_product_attention`;
   on a GPU `jax.nn.dot_product_attention`, whose default implementation is XLA's, not cuDNN's), that
   XLA formulation called explicitly, and cuDNN flash attention (causal, padding as sequence lengths,
   sliding window; GPU only), outputs and gradients, against the CPU formulation on random right-padded
   inputs (real query rows only: padded rows are garbage by design). cuDNN's errors are reported, not
   required: the project does not call it. Then the tiny model's hidden states and predictions on this
   device against the CPU's, float32 at full matmul precision. The CPU side runs in a subprocess with
   JAX_PLATFORMS=cpu, the path every CPU run takes.
4. `continual`: `python -m mistral_cl.cli continual` on 3 Suzuki tasks, 1 epoch each, naive and replay
   (the tiny model in head mode), on whatever device JAX picks; stopped when the whole check reaches
   7.5 minutes.

The dry run: the tiny preset (2 layers, width 128) at batch 4 x 32 without remat, 3 timed steps, 256^2
matmuls, and replay alone on 2 tasks at batch 64. Every code path runs but cuDNN, `memory_stats` and the
comparison of this backend's attention, which on a CPU is the reference itself.

Writes JSON to `--out`, else `$OUT/gpu_check.json` when OUT is set, else
`benchmarks/results/gpu_check.json` (a dry run: the system's temporary directory), and prints a table.
Exits 1 if a section failed.
"""

from __future__ import annotations

import os

# The continual run is a second process on the same GPU: JAX must not take 75% of it up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from throughput import step_flops  # noqa: E402

from mistral_cl.attention import attention_mask, dot_product_attention  # noqa: E402
from mistral_cl.config import ModelConfig  # noqa: E402
from mistral_cl.data.batching import Batch  # noqa: E402
from mistral_cl.head import HeadConfig  # noqa: E402
from mistral_cl.lora import LoRAConfig  # noqa: E402
from mistral_cl.predictor import AdaptationConfig, YieldModel, build_yield_model, trainable_filter  # noqa: E402
from mistral_cl.train import TrainConfig, make_optimizer, make_train_step, supervised_objective  # noqa: E402
from sharding.specs import path_name  # noqa: E402

GiB = 1024**3
PLAN = HERE / "results" / "memory.json"
TASKS = ("Br-Q+BF3K-Ind", "Cl-Q+BOH2-Ind", "I-Q+BPin-Ind")
# The whole check stays under 8 minutes: the continual run, last, gets what is left of 7.5 (at least 1).
BUDGET_SECONDS = 450
LORA = LoRAConfig(rank=16)  # the plan's adapters (memory.py)
# Largest error of each comparison, relative to the reference's largest magnitude.
TOLERANCE = {"float32": 1e-5, "bfloat16": 5e-2}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every shape of the check; `dry` shrinks them all."""

    model: str
    layers: int | None  # None: the preset's
    batch: int
    seq: int
    remat: str
    warmup: int
    steps: int
    matmul: int
    matmul_runs: int
    tasks: tuple[str, ...]
    strategies: str
    continual_args: tuple[str, ...]

    @classmethod
    def real(cls, args: argparse.Namespace) -> Sizes:
        return cls("mistral-7b-v0.1", None, args.batch, args.seq, args.remat, 2, args.steps, 8192, 20,
                   TASKS, "naive,replay", ())

    @classmethod
    def dry(cls) -> Sizes:
        # Only replay (its paired steps are the most code): every compile counts on 2 CPU cores.
        return cls("tiny", 2, 4, 32, "none", 1, 3, 256, 3, TASKS[:2], "replay", ("--batch-size", "64"))

    def model_config(self) -> ModelConfig:
        config = ModelConfig.preset(self.model)
        return config if self.layers is None else dataclasses.replace(config, n_layers=self.layers)


# ----------------------------------------------------------------------------------------- 1. peak
def matmul_peak(sizes: Sizes) -> dict[str, Any]:
    n = sizes.matmul
    a, b = (jax.random.normal(k, (n, n), jnp.bfloat16) for k in jax.random.split(jax.random.key(0)))
    product = jax.jit(jnp.matmul)
    seconds = _timed(lambda: product(a, b), sizes.matmul_runs, warmup=2)
    return {"n": n, "runs": sizes.matmul_runs, "median_ms": statistics.median(seconds) * 1e3,
            "flops_per_s": 2 * n**3 / statistics.median(seconds)}


def _timed(run: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Seconds of each of `runs` calls after `warmup` untimed ones, each blocked until done."""
    for _ in range(warmup):
        jax.block_until_ready(run())
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(run())
        seconds.append(time.perf_counter() - start)
    return seconds


# ---------------------------------------------------------------------------------------- 2. step
def _random_leaf(key: jax.Array, shape: tuple[int, ...], dtype: Any, kind: str) -> jax.Array:
    if kind == "ones":
        return jnp.ones(shape, dtype)
    if kind == "zeros":
        return jnp.zeros(shape, dtype)
    # Uniform with standard deviation 0.02: far less code to compile than normal's inverse error function.
    bound = 0.02 * 3**0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _init_kind(name: str) -> str:
    if name.endswith(("norm.weight", "pool_scale")):
        return "ones"
    if name.endswith((".b", "bias", "pool_shift")):  # LoRA's B starts at zero, as in `lora.py`
        return "zeros"
    return "normal"


def random_lora_model(config: ModelConfig, remat: str) -> tuple[YieldModel, YieldModel]:
    """The trainable and frozen halves of a random LoRA yield model, the frozen base in bfloat16. Each
    weight is drawn in its own dtype and a stacked one layer by layer, so initialisation never holds
    more than the model and one layer's random bits (the step, not the set-up, sets the peak)."""

    def build() -> YieldModel:
        return build_yield_model(config, HeadConfig(), AdaptationConfig("lora", LORA), key=jax.random.key(0),
                                 remat=remat)

    shapes = eqx.filter_eval_shape(build)
    trains = eqx.filter_eval_shape(lambda: trainable_filter(build(), "lora"))

    def draw(key, path, leaf, train):
        name, shape = path_name(path), tuple(leaf.shape)
        dtype, kind = (jnp.float32 if train else jnp.bfloat16), _init_kind(name)
        if name.startswith("backbone.layers."):  # stacked: [layers, ...]
            layer_keys = jax.random.split(key, shape[0])
            return jax.lax.map(lambda k: _random_leaf(k, shape[1:], dtype, kind), layer_keys)
        return _random_leaf(key, shape, dtype, kind)

    @jax.jit
    def fill(key: jax.Array) -> YieldModel:
        keys = iter(jax.random.split(key, len(jax.tree.leaves(shapes))))
        return jax.tree_util.tree_map_with_path(lambda *leaf: draw(next(keys), *leaf), shapes, trains)

    trainable, frozen = eqx.partition(fill(jax.random.key(1, impl="rbg")), trains)
    return trainable, frozen


def random_batch(config: ModelConfig, batch: int, seq: int) -> Batch:
    rng = np.random.default_rng(0)
    fields = {"tokens": rng.integers(1, config.vocab_size, (batch, seq), dtype=np.int32),
              "mask": np.ones((batch, seq), bool), "yields": rng.random(batch, np.float32),
              "weight": np.ones(batch, np.float32), "task": np.zeros(batch, np.int32),
              "index": np.arange(batch, dtype=np.int32)}
    return jax.device_put(Batch(**fields))


def _memory() -> dict[str, int] | None:
    stats = jax.devices()[0].memory_stats()  # None on CPU
    return None if stats is None else {k: int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use")
                                       if k in stats}


def planned_peak(sizes: Sizes) -> dict[str, Any] | None:
    """The plan's row for this step (LoRA, one device, same batch shape and remat), if recorded."""
    if not PLAN.exists():
        return None
    plan = json.loads(PLAN.read_text())
    for row in plan["rows"]:
        if (row["mode"], row["mesh"], row["batch"], row["seq"], row["remat"]) == (
                "lora", "1x1x1", sizes.batch, sizes.seq, sizes.remat) and plan["model"] == sizes.model:
            return {"peak_gib": row["peak_estimate"] / GiB, "git_commit": plan["git_commit"]}
    return None


def lora_step(sizes: Sizes, peak_flops: float | None) -> dict[str, Any]:
    config = sizes.model_config()
    started = time.perf_counter()
    trainable, frozen = random_lora_model(config, sizes.remat)
    train = TrainConfig(optimizer="adamw", compute_dtype="bfloat16")
    optimizer = make_optimizer(train, 1000)
    opt_state = jax.jit(optimizer.init)(trainable)
    batch = random_batch(config, sizes.batch, sizes.seq)
    jax.block_until_ready((trainable, frozen, opt_state))
    init_s = time.perf_counter() - started
    after_init = _memory()

    step = make_train_step(optimizer, supervised_objective(), compute_dtype=train.compute_dtype)
    key = jax.random.key(2)
    start = time.perf_counter()
    compiled = step.lower(trainable, frozen, opt_state, (batch,), key, None).compile()
    compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    xla_peak = None if stats is None else (stats.argument_size_in_bytes + stats.temp_size_in_bytes
                                           + stats.output_size_in_bytes - stats.alias_size_in_bytes)
    state = {"trainable": trainable, "opt_state": opt_state, "n": 0}
    losses = []

    def one_step():
        step_key = jax.random.fold_in(key, state["n"])
        state["trainable"], state["opt_state"], metrics = compiled(
            state["trainable"], frozen, state["opt_state"], (batch,), step_key, None)
        state["n"] += 1
        losses.append(metrics["loss"])
        return state["trainable"], metrics

    seconds = _timed(one_step, sizes.steps, warmup=sizes.warmup)
    after_steps = _memory()
    median = statistics.median(seconds)
    tokens = sizes.batch * sizes.seq
    flops = step_flops(config, "lora", sizes.batch, sizes.seq, LORA)["train"]
    plan = planned_peak(sizes)
    measured = None if after_steps is None else after_steps.get("peak_bytes_in_use")
    return {
        "model": sizes.model, "layers": config.n_layers, "batch": sizes.batch, "seq": sizes.seq,
        "remat": sizes.remat, "lora_rank": LORA.rank, "steps": sizes.steps,
        "init_seconds": init_s, "compile_seconds": compile_s,
        "median_ms": median * 1e3, "iqr_ms": _iqr(seconds) * 1e3,
        "tokens_per_s": tokens / median, "model_flops": flops,
        "mfu": None if not peak_flops else flops / median / peak_flops,
        "loss_first_last": [float(losses[0]), float(losses[-1])],
        "finite": bool(np.all(np.isfinite(np.asarray(losses, np.float32)))),
        "memory_after_init": after_init, "memory_after_steps": after_steps,
        "measured_peak_gib": None if measured is None else measured / GiB,
        "step_set_the_peak": None if measured is None or after_init is None
        else measured > after_init.get("peak_bytes_in_use", 0),
        "xla_peak_gib": None if xla_peak is None else xla_peak / GiB,
        "plan": plan,
    }


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


# ------------------------------------------------------------------------------------- 3. parity
ATTENTION = {"batch": 3, "seq": 64, "heads": 8, "kv_heads": 2, "head_dim": 64, "window": 24}
TINY_WINDOW = 16  # below the tiny model's sequences, so the sliding window is exercised


def attention_inputs() -> dict[str, np.ndarray]:
    """Random right-padded queries, keys, values and the cotangent of the output (0 on padded rows)."""
    a = ATTENTION
    rng = np.random.default_rng(0)
    b, t = a["batch"], a["seq"]
    lengths = np.array([t, t - 13, t // 2 + 3][:b], np.int32)
    mask = np.arange(t)[None] < lengths[:, None]
    q = rng.standard_normal((b, t, a["heads"], a["head_dim"]), np.float32)
    k, v = (rng.standard_normal((b, t, a["kv_heads"], a["head_dim"]), np.float32) for _ in range(2))
    cotangent = rng.standard_normal(q.shape, np.float32) * mask[:, :, None, None]
    return {"q": q, "k": k, "v": v, "mask": mask, "lengths": lengths, "cotangent": cotangent}


def _value_and_grads(attend: Callable, inputs: dict[str, np.ndarray], dtype: Any) -> list[np.ndarray]:
    """The output of `attend(q, k, v)` and the gradients of `sum(output * cotangent)` by q, k, v."""
    q, k, v = (jnp.asarray(inputs[n], dtype) for n in ("q", "k", "v"))
    cotangent = jnp.asarray(inputs["cotangent"], dtype)
    out, pullback = jax.vjp(attend, q, k, v)
    return [np.asarray(x, np.float32) for x in (out, *pullback(cotangent))]


def project_attention(inputs: dict[str, np.ndarray]) -> Callable:
    visible = attention_mask(jnp.asarray(inputs["mask"]), causal=True, window=ATTENTION["window"])
    return jax.jit(lambda q, k, v: dot_product_attention(q, k, v, visible))


def tiny_config() -> ModelConfig:
    return dataclasses.replace(ModelConfig.preset("tiny"), sliding_window=TINY_WINDOW)


def tiny_model() -> YieldModel:
    return build_yield_model(tiny_config(), HeadConfig(), AdaptationConfig("full"), key=jax.random.key(3))


def tiny_batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    lengths = np.array([48, 40, 21, 7])
    mask = np.arange(48)[None] < lengths[:, None]
    return np.where(mask, rng.integers(1, 32000, mask.shape), 0).astype(np.int32), mask


@eqx.filter_jit
def _tiny_outputs(model: YieldModel, tokens: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    return model.features(tokens, mask), model(tokens, mask)


def write_reference(directory: Path) -> None:
    """The CPU side of the parity checks (run with JAX_PLATFORMS=cpu): attention outputs and gradients,
    and the tiny model (saved, so the other side runs the same weights) with its outputs."""
    inputs = dict(np.load(directory / "inputs.npz"))
    out, dq, dk, dv = _value_and_grads(project_attention(inputs), inputs, jnp.float32)
    model = tiny_model()
    eqx.tree_serialise_leaves(directory / "tiny.eqx", model)
    hidden, predicted = _tiny_outputs(model, *tiny_batch())
    np.savez(directory / "reference.npz", out=out, dq=dq, dk=dk, dv=dv, hidden=np.asarray(hidden),
             predicted=np.asarray(predicted), backend=jax.default_backend())


def _error(got: np.ndarray, want: np.ndarray, rows: np.ndarray | None = None) -> float:
    """Largest |got - want| relative to the largest |want|, over `rows` (a [batch, seq] mask) only."""
    if rows is not None:
        got, want = got[rows], want[rows]
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def _cudnn(inputs: dict[str, np.ndarray]) -> Callable:
    lengths = jnp.asarray(inputs["lengths"])
    window = ATTENTION["window"]
    return jax.jit(lambda q, k, v: jax.nn.dot_product_attention(
        q, k, v, is_causal=True, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
        local_window_size=(window - 1, 0), implementation="cudnn"))


def _xla(inputs: dict[str, np.ndarray]) -> Callable:
    visible = attention_mask(jnp.asarray(inputs["mask"]), causal=True, window=ATTENTION["window"]).visible
    return jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=visible, implementation="xla"))


def attention_parity(sizes: Sizes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        inputs = attention_inputs()
        np.savez(directory / "inputs.npz", **inputs)
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_pythonpath())
        subprocess.run([sys.executable, __file__, "--write-reference", str(directory)], env=env, check=True,
                       timeout=120)
        reference = dict(np.load(directory / "reference.npz"))
        like = eqx.filter_eval_shape(tiny_model)
        model = eqx.tree_deserialise_leaves(directory / "tiny.eqx", like)
    rows = inputs["mask"]
    want = [reference[n] for n in ("out", "dq", "dk", "dv")]
    gpu = jax.default_backend() == "gpu"
    candidates = {"this backend's path": (project_attention(inputs), ("float32", "bfloat16")),
                  "jax.nn xla": (_xla(inputs), ("float32", "bfloat16")),
                  "jax.nn cudnn": (_cudnn(inputs), ("bfloat16",))}
    comparisons = []
    for name, (attend, dtypes) in candidates.items():
        for dtype in dtypes:
            row: dict[str, Any] = {"attention": name, "dtype": dtype}
            if not gpu and name != "jax.nn xla":  # on CPU this backend's path is the reference itself
                comparisons.append(dict(row, skipped="needs a GPU"))
                continue
            try:
                with jax.default_matmul_precision("highest"):
                    got = _value_and_grads(attend, inputs, jnp.dtype(dtype))
            except Exception as error:  # cuDNN refuses some shapes, dtypes and versions: a finding
                comparisons.append(dict(row, skipped=f"{type(error).__name__}: {str(error)[:300]}"))
                continue
            errors = {"out": _error(got[0], want[0], rows), "dq": _error(got[1], want[1]),
                      "dk": _error(got[2], want[2]), "dv": _error(got[3], want[3])}
            comparisons.append(dict(row, **errors, tolerance=TOLERANCE[dtype],
                                    ok=max(errors.values()) <= TOLERANCE[dtype]))
    tokens, mask = tiny_batch()
    with jax.default_matmul_precision("highest"):
        hidden, predicted = _tiny_outputs(model, jnp.asarray(tokens), jnp.asarray(mask))
    model_errors = {"hidden": _error(np.asarray(hidden), reference["hidden"], mask),
                    "predicted": _error(np.asarray(predicted), reference["predicted"])}
    tiny = dict(model_errors, tolerance=TOLERANCE["float32"],
                ok=max(model_errors.values()) <= TOLERANCE["float32"])
    checked = [c for c in comparisons if "ok" in c and not c["attention"].endswith("cudnn")]
    return {"backend": jax.default_backend(), "reference_backend": str(reference["backend"]),
            "shapes": ATTENTION, "attention": comparisons, "tiny_model": tiny,
            "ok": tiny["ok"] and all(c["ok"] for c in checked)}


def _pythonpath() -> str:
    return os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


# ----------------------------------------------------------------------------------- 4. continual
def continual(sizes: Sizes, limit: float) -> dict[str, Any]:
    """The continual run, stopped after `limit` seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "mistral_cl.cli", "continual", "--task-order", ",".join(sizes.tasks),
                   "--epochs", "1", "--strategies", sizes.strategies, "--out", str(run_dir), "--no-progress",
                   *sizes.continual_args]
        start = time.perf_counter()
        done = subprocess.run(command, env=dict(os.environ, PYTHONPATH=_pythonpath()), capture_output=True,
                              text=True, timeout=limit, cwd=ROOT)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"mistral-cl continual exited {done.returncode}: {done.stderr[-2000:]}")
        rows = json.loads((run_dir / "comparison.json").read_text())
    return {"command": " ".join(["mistral-cl", *command[3:]]), "tasks": list(sizes.tasks),
            "wall_seconds": seconds, "rows": rows, "output_tail": done.stdout[-1500:]}


# ------------------------------------------------------------------------------------------ driver
def run_section(name: str, work: Callable[[], dict[str, Any]], results: dict[str, Any]) -> None:
    print(f"[{name}] ...", flush=True)
    start = time.perf_counter()
    try:
        result = work()
        result = dict(result, ok=result.get("ok", True))
    except Exception:
        result = {"ok": False, "error": traceback.format_exc(limit=4)[-3000:]}
        print(result["error"], file=sys.stderr, flush=True)
    result["seconds"] = time.perf_counter() - start
    results[name] = result
    print(f"[{name}] {'ok' if result['ok'] else 'FAILED'} in {result['seconds']:.1f} s", flush=True)


def print_table(result: dict[str, Any]) -> None:
    sections = result["sections"]
    lines = [("device", f"{result['device']['kind']} ({result['device']['backend']})"
                        + (", DRY RUN: every shape shrunk" if result["dry"] else ""))]
    peak = sections["matmul_peak"]
    if peak["ok"]:
        lines.append(("matmul peak", f"{_flops(peak['flops_per_s'])} bf16 "
                                     f"({peak['n']}^2, median of {peak['runs']})"))
    step = sections["lora_step"]
    if step["ok"]:
        mfu = "n/a" if step["mfu"] is None else f"{step['mfu']:.1%}"
        lines.append((f"{step['model']} LoRA step", f"{step['batch']}x{step['seq']} remat={step['remat']}: "
                      f"{step['median_ms']:.1f} ms, {step['tokens_per_s']:,.0f} tokens/s, MFU {mfu}, "
                      f"compile {step['compile_seconds']:.0f} s"))
        plan = step["plan"]
        lines.append(("  memory", f"measured peak {_gib(step['measured_peak_gib'])}, XLA estimate "
                      f"{_gib(step['xla_peak_gib'])}, plan {_gib(plan and plan['peak_gib'])}"))
    parity = sections["attention_parity"]
    if "attention" in parity:
        for c in parity["attention"]:
            what = c.get("skipped") or (f"out {c['out']:.1e}, dq {c['dq']:.1e}, dk {c['dk']:.1e}, "
                                        f"dv {c['dv']:.1e} (tol {c['tolerance']:.0e}) "
                                        f"{'ok' if c['ok'] else 'OVER'}")
            lines.append((f"attention {c['attention']} {c['dtype']}", what[:110]))
        t = parity["tiny_model"]
        lines.append(("tiny model vs CPU", f"hidden {t['hidden']:.1e}, predicted {t['predicted']:.1e} "
                                           f"(tol {t['tolerance']:.0e}) {'ok' if t['ok'] else 'OVER'}"))
    run = sections["continual"]
    if run["ok"]:
        scores = ", ".join(f"{r['strategy']} ACC {r['ACC']:.3f}" for r in run["rows"])
        lines.append(("continual", f"{len(run['tasks'])} tasks: {scores}, {run['wall_seconds']:.0f} s"))
    lines += [(f"section {name}", f"{'ok' if s['ok'] else 'FAILED'}, {s['seconds']:.1f} s")
              for name, s in sections.items()]
    lines.append(("total", f"{result['wall_seconds']:.0f} s"))
    width = max(len(k) for k, _ in lines)
    print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in lines))


def _flops(rate: float) -> str:
    return f"{rate / 1e12:.1f} TFLOP/s" if rate >= 1e12 else f"{rate / 1e9:.1f} GFLOP/s"


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} GiB"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def output_path(args: argparse.Namespace) -> Path:
    if args.out:
        return args.out
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    if args.dry:
        return Path(tempfile.gettempdir()) / "gpu_check_dry.json"
    return HERE / "results" / "gpu_check.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", default=os.environ.get("GPU_CHECK_DRY") == "1",
                        help="shrink every shape (2 layers, tiny dims, few steps); runs on CPU "
                             "(also GPU_CHECK_DRY=1)")
    parser.add_argument("--out", type=Path, help="the JSON to write (default: see the module docstring)")
    parser.add_argument("--batch", type=int, default=8, help="LoRA step batch (default 8, as the plan)")
    parser.add_argument("--seq", type=int, default=256, help="LoRA step sequence length (default 256)")
    parser.add_argument("--remat", choices=["none", "dots", "full"], default="dots")
    parser.add_argument("--steps", type=int, default=10, help="timed LoRA steps (default 10)")
    parser.add_argument("--write-reference", type=Path, help=argparse.SUPPRESS)  # the CPU side of parity
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    if args.write_reference:
        write_reference(args.write_reference)
        return 0
    if jax.default_backend() == "cpu" and not args.dry:
        print("no GPU: JAX runs on CPU. Run with --dry (or GPU_CHECK_DRY=1) to check the script itself.",
              file=sys.stderr)
        return 2
    sizes = Sizes.dry() if args.dry else Sizes.real(args)
    started = time.perf_counter()
    sections: dict[str, Any] = {}
    run_section("matmul_peak", lambda: matmul_peak(sizes), sections)
    peak = sections["matmul_peak"].get("flops_per_s")
    run_section("lora_step", lambda: lora_step(sizes, peak), sections)
    run_section("attention_parity", lambda: attention_parity(sizes), sections)
    left = max(60.0, BUDGET_SECONDS - (time.perf_counter() - started))
    run_section("continual", lambda: continual(sizes, left), sections)
    device = jax.devices()[0]
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": _commit(),
        "dry": args.dry,
        "device": {"backend": jax.default_backend(), "kind": device.device_kind, "count": jax.device_count()},
        "versions": {p: _version(p) for p in ("jax", "jaxlib", "equinox", "optax")},
        "sizes": dataclasses.asdict(sizes),
        "sections": sections,
        "wall_seconds": time.perf_counter() - started,
    }
    out = output_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print_table(result)
    print(f"wrote {out}")
    return 0 if all(s["ok"] for s in sections.values()) else 1


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


if __name__ == "__main__":
    sys.exit(main(parse_args()))
