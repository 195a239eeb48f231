"""Train- and eval-step throughput of the yield model, side by side with PyTorch.

    python benchmarks/throughput.py                                  # tiny; head, lora, full; JAX only
    python benchmarks/throughput.py --compare-torch --threads 1,2    # + the same steps in PyTorch
    python benchmarks/throughput.py --model mistral-7b-v0.1 --mode lora --dtype bfloat16   # on a GPU

Timed: the train step of `mistral_cl.train.make_train_step` (forward, backward, gradient clipping and
AdamW, as `fit` runs it) and the eval step (`predict_batch`), on one batch of real Suzuki reactions
padded to its length bucket; the median of `--steps` steps after warm-up, each blocked until its outputs
are ready. `--compare-torch` builds the PyTorch model of `torch_reference.py` (transformers'
`MistralModel`, PEFT LoRA, the MHAR head in PyTorch) with the same weights and times the same step on
the same batch; JAX and PyTorch steps alternate, so that load from other processes hits both alike.

In head mode a third row, `jax, cached features`, times the step that `--mode head` epochs run: on the
frozen backbone's hidden states, computed once and cached, so only the head runs forward and backward.

Each row: milliseconds per step, tokens/s (real tokens, and padded positions), reactions/s, and MFU =
matmul FLOPs executed / (time x peak), where the peak is the best rate of a large matmul in the compute
dtype measured in the same process (same threads) with JAX and PyTorch.

Matmul FLOPs (d = dim, H/K = query/KV heads, h = head dim, f = SwiGLU width, r = LoRA rank, T = batch
width, w = sliding window; per position unless noted):
    backbone layer   projections  L_p = 2dh(2H + 2K)        SwiGLU  L_f = 6df
                     attention    A   = 4HhS,  S = mean over i < T of min(i + 1, w) keys (QK^T and PV)
    LoRA adapter     in -> out    L_a = 2r(in + out)
    MHAR head        L_h = 8d^2 + 4d f_h + 4d (projections, feed-forward, pooling), A_h = 4dT,
                     and per reaction 2dm + 2m (MLP of width m)
    eval step   = F = sum of (L + A) over the model
    train step  = F + sum of (L + 2A) over the parts that gradients pass through (the head; the backbone
                  too in lora and full mode) + sum of L over trainable weights (weight gradients)
Padded positions count (that is the work executed): MFU on real tokens is MFU x real / padded. The
query blocks of the CPU attention skip some, not all, of the keys that S leaves out.

Bucketing (`--bucketing`, first configuration only): one epoch of the Suzuki set in batches padded to
their `choose_buckets` width against batches padded to the longest reaction; epoch time = the sum over
the epoch's batches of the median train-step time measured at each batch's width.

Each configuration of `--threads` x `--malloc` runs in a fresh process, because both must be set
before jax and torch load:
- threads N: the process is pinned to N cores (XLA:CPU sizes its thread pool from them) and
  `torch.set_num_threads(N)`; with N > 1 also OMP_WAIT_POLICY=PASSIVE, since libgomp's spin-waiting
  made PyTorch several times slower on this shared, oversubscribed machine.
- malloc `reuse` (default): glibc keeps freed memory for reuse. XLA:CPU allocates a step's temporaries
  as one block of a few hundred MB, which glibc otherwise maps afresh and the kernel zero-fills page by
  page on every step (88k page faults per tiny-model train step, about a third of its time here);
  PyTorch's tensors are small enough to be reused either way. `default` leaves glibc as it is.

Writes benchmarks/results/throughput.json (date, machine, commit, settings, load averages, rows) and
prints a table. On CPU the 7B preset is refused unless `--force`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "throughput.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="model preset: tiny or mistral-7b-v0.1")
    parser.add_argument("--mode", default="head,lora,full", help="adaptation modes, comma-separated")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="compute dtype (bfloat16 also stores a frozen base in bfloat16)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--remat", default="none", choices=["none", "dots", "full"])
    parser.add_argument("--threads", default=str(len(os.sched_getaffinity(0))),
                        help="thread counts, comma-separated (default: every core)")
    parser.add_argument("--malloc", default="reuse", help="reuse and/or default, comma-separated")
    parser.add_argument("--compare-torch", action="store_true", help="time the PyTorch model too")
    parser.add_argument("--bucketing", action=argparse.BooleanOptionalAction, default=True,
                        help="epoch time with length buckets vs padding to the longest reaction")
    parser.add_argument("--force", action="store_true", help="run the 7B preset on CPU anyway")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # one configuration -> this file
    args = parser.parse_args(argv)
    args.modes = args.mode.split(",")
    args.thread_counts = [int(n) for n in args.threads.split(",")]
    args.mallocs = args.malloc.split(",")
    return args


def configure_process(threads: int, malloc: str) -> dict[str, Any]:
    """Pins threads and sets the allocator; must run before jax or torch is imported."""
    cores = sorted(os.sched_getaffinity(0))
    if not 1 <= threads <= len(cores):
        sys.exit(f"--threads {threads}: this process may use {len(cores)} cores")
    os.sched_setaffinity(0, cores[:threads])
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if threads > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if malloc == "reuse":
        from mistral_cl.hostmem import keep_freed_memory  # imports neither jax nor torch

        if not keep_freed_memory():
            sys.exit("could not set glibc's mallopt; use --malloc default")
    elif malloc != "default":
        sys.exit(f"--malloc {malloc!r}: choose reuse or default")
    return {"threads": threads, "cores": cores[:threads], "malloc": malloc,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "XLA_FLAGS": os.environ.get("XLA_FLAGS")}


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        SETTINGS = configure_process(ARGS.thread_counts[0], ARGS.mallocs[0])

import equinox as eqx  # noqa: E402  (jax and torch load after configure_process)
import jax  # noqa: E402
import numpy as np  # noqa: E402

from mistral_cl.config import ModelConfig  # noqa: E402
from mistral_cl.data.batching import Batch, EncodedReactions, batches, encode_reactions  # noqa: E402
from mistral_cl.data.sources import load_dataset  # noqa: E402
from mistral_cl.features import FeatureBatch, hidden_states  # noqa: E402
from mistral_cl.head import HeadConfig  # noqa: E402
from mistral_cl.inference import forward  # noqa: E402
from mistral_cl.lora import TARGETS, LoRAConfig  # noqa: E402
from mistral_cl.predictor import (  # noqa: E402
    AdaptationConfig,
    YieldModel,
    build_yield_model,
    cast_floating,
    trainable_filter,
)
from mistral_cl.tokenizer import Tokenizer  # noqa: E402
from mistral_cl.train import (  # noqa: E402
    COMPUTE_DTYPES,
    TrainConfig,
    make_optimizer,
    make_train_step,
    supervised_objective,
)

TRAIN = TrainConfig()  # AdamW, clipping at norm 1, as `fit` trains by default
HEAD = HeadConfig()
LORA = LoRAConfig()


# ----------------------------------------------------------------------------------------------- FLOPs
def step_flops(config: ModelConfig, mode: str, batch: int, width: int, lora: LoRAConfig = LORA
               ) -> dict[str, float]:
    """Matmul FLOPs of one eval and one train step on a `[batch, width]` batch (module docstring), with
    `lora`'s adapters in lora mode."""
    d, h, f = config.dim, config.head_dim, config.hidden_dim
    shapes = {"wq": (d, config.n_heads * h), "wk": (d, config.n_kv_heads * h),
              "wv": (d, config.n_kv_heads * h), "wo": (config.n_heads * h, d),
              "w1": (d, f), "w2": (f, d), "w3": (d, f)}
    assert set(shapes) == set(TARGETS)
    window = config.sliding_window or width
    keys = float(np.minimum(np.arange(1, width + 1), window).mean())
    layer_linear = sum(2 * i * o for i, o in shapes.values())
    layer_attention = 4 * config.n_heads * h * keys
    adapters = sum(2 * lora.rank * sum(shapes[t]) for t in lora.targets) if mode == "lora" else 0
    backbone_linear = config.n_layers * (layer_linear + adapters)
    backbone_attention = config.n_layers * layer_attention
    head_linear = 8 * d * d + 4 * d * (HEAD.ffn_dim or d) + 4 * d
    head_attention = 4 * d * width
    tokens, per_reaction = batch * width, batch * (2 * d * HEAD.mlp_dim + 2 * HEAD.mlp_dim)

    forward_flops = tokens * (backbone_linear + backbone_attention + head_linear + head_attention)
    forward_flops += per_reaction
    backward = tokens * (head_linear + 2 * head_attention) + per_reaction
    weights = tokens * head_linear + per_reaction
    if mode != "head":
        backward += tokens * (backbone_linear + 2 * backbone_attention)
        weights += tokens * config.n_layers * (layer_linear if mode == "full" else adapters)
    return {"eval": forward_flops, "train": forward_flops + backward + weights,
            "backbone": tokens * (backbone_linear + backbone_attention)}


def matmul_peak(dtype: str, with_torch: bool) -> dict[str, float]:
    """FLOP/s of a large square matmul in `dtype`, JAX (and PyTorch on CPU), median of a few runs."""
    gpu = jax.default_backend() == "gpu"
    n, runs = (8192, 20) if gpu else (2048, 7)
    a = jax.random.normal(jax.random.key(0), (n, n), COMPUTE_DTYPES[dtype])
    product = jax.jit(lambda x: x @ x)
    rates = {"jax": 2 * n**3 / _median_seconds(lambda: jax.block_until_ready(product(a)), runs)}
    if with_torch and not gpu:
        import torch

        t = torch.from_numpy(np.asarray(a, np.float32)).to(getattr(torch, dtype))
        rates["torch"] = 2 * n**3 / _median_seconds(lambda: t @ t, runs)
    rates["peak"] = max(rates.values())
    return rates


def _median_seconds(run: Callable[[], Any], runs: int) -> float:
    run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------------------------- steps
def build_model(config: ModelConfig, mode: str, dtype: str, remat: str) -> YieldModel:
    """A random-initialised yield model; in bfloat16 its frozen part is stored in bfloat16."""

    def build(key):
        model = build_yield_model(config, HEAD, AdaptationConfig(mode=mode, lora=LORA), key=key,
                                  remat=remat)
        if dtype == "float32":
            return model
        low = COMPUTE_DTYPES[dtype]
        return jax.tree.map(lambda x, trains: x if trains or not eqx.is_inexact_array(x) else x.astype(low),
                            model, trainable_filter(model, mode))

    return eqx.filter_jit(build)(jax.random.key(0))


class JaxSteps:
    """The train and eval steps of `mistral_cl.train` for one model; each call blocks until done."""

    def __init__(self, model: YieldModel, mode: str, dtype: str, batch: Batch) -> None:
        self.trainable, self.frozen = eqx.partition(model, trainable_filter(model, mode))
        optimizer = make_optimizer(TRAIN, total_steps=1000)
        self.opt_state = optimizer.init(eqx.filter(self.trainable, eqx.is_array))
        self.step = make_train_step(optimizer, supervised_objective(), compute_dtype=dtype)
        low = COMPUTE_DTYPES[dtype]
        self.predict = eqx.filter_jit(lambda model, batch: forward(cast_floating(model, low), batch))
        self.batch = jax.device_put(batch)
        self.key, self.n = jax.random.key(1), 0

    def train(self) -> None:
        self.trainable, self.opt_state, metrics = self.step(
            self.trainable, self.frozen, self.opt_state, (self.batch,), jax.random.fold_in(self.key, self.n),
            None,
        )
        self.n += 1
        jax.block_until_ready((self.trainable, metrics))

    def eval(self) -> None:
        jax.block_until_ready(self.predict(eqx.combine(self.trainable, self.frozen), self.batch))


class CachedHeadSteps(JaxSteps):
    """Head mode as `mistral-cl train --mode head` runs its epochs: on the frozen backbone's features,
    computed once (see `features.py`), so a step is the head's forward and backward only."""

    def __init__(self, model: YieldModel, dtype: str, batch: Batch) -> None:
        hidden = hidden_states(model.backbone, batch.tokens, batch.mask)
        features = FeatureBatch(np.asarray(hidden), batch.mask, batch.yields, batch.weight, batch.task,
                                batch.index)
        own = jax.tree.map(lambda x: x.copy() if eqx.is_array(x) else x, model)  # steps donate theirs
        super().__init__(own, "head", dtype, features)


class TorchSteps:
    """The same steps on `torch_reference`'s copy of the model (same weights, same batch)."""

    def __init__(self, model: YieldModel, config: ModelConfig, mode: str, dtype: str, batch: Batch,
                 threads: int) -> None:
        import torch
        import torch_reference

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = torch_reference.from_jax(model, config)
        self.step = torch_reference.make_train_step(self.model, mode, TRAIN)
        self.inputs = (torch.as_tensor(batch.tokens, dtype=torch.long), torch.as_tensor(batch.mask),
                       torch.as_tensor(batch.yields), torch.as_tensor(batch.weight))
        self.dtype = getattr(torch, dtype)

    def _autocast(self):
        return self.torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype != self.torch.float32)

    def train(self) -> None:
        with self._autocast():
            self.step(*self.inputs)

    def eval(self) -> None:
        self.model.eval()
        with self.torch.inference_mode(), self._autocast():
            self.model(*self.inputs[:2])
        self.model.train()


def alternate(runs: dict[str, Callable[[], None]], steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each run, taking turns step by step after `warmup` untimed steps of each."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(steps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def time_mode(args: argparse.Namespace, config: ModelConfig, mode: str, batch: Batch,
              peak: float, settings: dict[str, Any]) -> list[dict[str, Any]]:
    model = build_model(config, mode, args.dtype, args.remat)
    frameworks: dict[str, JaxSteps | TorchSteps] = {}
    if args.compare_torch:  # copied before the JAX step donates (deletes) the initial weights
        frameworks["torch"] = TorchSteps(model, config, mode, args.dtype, batch, settings["threads"])
    frameworks = {"jax": JaxSteps(model, mode, args.dtype, batch), **frameworks}
    if mode == "head":
        frameworks["jax, cached features"] = CachedHeadSteps(model, args.dtype, batch)
    flops = step_flops(config, mode, *batch.tokens.shape)
    real = batch.weight > 0
    real_tokens, reactions = int(batch.mask[real].sum()), int(real.sum())
    rows = []
    for step in ("train", "eval"):
        load = os.getloadavg()[0]
        seconds = alternate({name: getattr(f, step) for name, f in frameworks.items()},
                            args.steps, args.warmup)
        median = {name: statistics.median(s) for name, s in seconds.items()}
        for name, s in seconds.items():
            quartiles = statistics.quantiles(s, n=4)
            rows.append({
                "threads": settings["threads"], "malloc": settings["malloc"], "mode": mode, "step": step,
                "framework": name, "batch": "x".join(map(str, batch.tokens.shape)),
                "ms": median[name] * 1e3, "ms_iqr": (quartiles[2] - quartiles[0]) * 1e3,
                "real_tokens_per_s": real_tokens / median[name],
                "padded_tokens_per_s": batch.tokens.size / median[name],
                "reactions_per_s": reactions / median[name],
                "mfu": (flops[step] - (flops["backbone"] if name.endswith("cached features") else 0))
                / median[name] / peak,
                "jax_over_torch": median["torch"] / median["jax"] if name == "jax" and "torch" in median
                else None,
                "load_1min": load,
            })
        print(f"  {mode} {step}: " + ", ".join(f"{n} {m * 1e3:.1f} ms" for n, m in median.items()),
              flush=True)
    return rows


# ------------------------------------------------------------------------------------------- bucketing
def measure_bucketing(args: argparse.Namespace, config: ModelConfig, encoded: EncodedReactions
                      ) -> dict[str, Any]:
    """One epoch's time with `choose_buckets` widths and with every batch padded to the longest."""
    mode = "full" if "full" in args.modes else args.modes[0]
    plans = {"buckets": list(encoded.batches(args.batch_size, shuffle=True, seed=0)),
             "longest": list(batches(encoded, args.batch_size, shuffle=True, seed=0, buckets=None))}
    examples = {b.tokens.shape[1]: b for plan in plans.values() for b in plan}
    steps = JaxSteps(build_model(config, mode, args.dtype, args.remat), mode, args.dtype,
                     next(iter(examples.values())))
    step_seconds = {}
    for width, example in sorted(examples.items()):
        steps.batch = jax.device_put(example)
        step_seconds[width] = _median_seconds(steps.train, max(5, args.steps // 4))
        print(f"  bucketing ({mode}): width {width} {step_seconds[width] * 1e3:.1f} ms", flush=True)
    result: dict[str, Any] = {"mode": mode, "step_ms": {w: s * 1e3 for w, s in step_seconds.items()}}
    for name, plan in plans.items():
        padded = sum(b.tokens.size for b in plan)
        real = sum(int(b.mask[b.weight > 0].sum()) for b in plan)
        epoch = sum(step_seconds[b.tokens.shape[1]] for b in plan)
        result[name] = {"batches": len(plan), "widths": sorted({b.tokens.shape[1] for b in plan}),
                        "padding": 1 - real / padded, "epoch_s": epoch, "real_tokens_per_s": real / epoch}
    result["speedup"] = result["longest"]["epoch_s"] / result["buckets"]["epoch_s"]
    return result


# ---------------------------------------------------------------------------------------------- driver
def suzuki_batch(batch_size: int) -> tuple[EncodedReactions, Batch]:
    """The Suzuki set encoded, and a full batch of it at the most common bucket width."""
    encoded = encode_reactions(load_dataset("suzuki"), Tokenizer.default())
    epoch = [b for b in encoded.batches(batch_size, shuffle=True, seed=0) if (b.weight > 0).all()]
    width = Counter(b.tokens.shape[1] for b in epoch).most_common(1)[0][0]
    return encoded, next(b for b in epoch if b.tokens.shape[1] == width)


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "device": jax.devices()[0].device_kind}


def versions() -> dict[str, str]:
    import importlib.metadata

    found = {}
    for package in ("jax", "jaxlib", "equinox", "optax", "torch", "transformers", "peft"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "-"
    return found


def run_configuration(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """Every row of one threads x malloc configuration (runs in its own process)."""
    config = ModelConfig.preset(args.model)
    print(f"threads {settings['threads']}, malloc {settings['malloc']}: {args.model}, {args.dtype}",
          flush=True)
    encoded, batch = suzuki_batch(args.batch_size)
    with_torch = args.compare_torch
    if with_torch and jax.default_backend() != "cpu":
        print("  --compare-torch: the PyTorch reference runs on CPU only here; skipped", flush=True)
        args.compare_torch = with_torch = False
    peak = matmul_peak(args.dtype, with_torch)
    settings = dict(settings, peak_flops=peak, torch_lora=_torch_lora_backend() if with_torch else None)
    rows = [row for mode in args.modes
            for row in time_mode(args, config, mode, batch, peak["peak"], settings)]
    return {"machine": machine(), "versions": versions(), "settings": settings, "rows": rows,
            "bucketing": measure_bucketing(args, config, encoded) if args.bucketing else None}


def _torch_lora_backend() -> str:
    import torch_reference

    return torch_reference.available_lora_backends()[0]


def refuse_large_model_on_cpu(args: argparse.Namespace) -> None:
    config = ModelConfig.preset(args.model)
    if jax.default_backend() != "cpu" or config.n_params < 1e9 or args.force:
        return
    gib = config.n_params * (2 if args.dtype == "bfloat16" else 4) / 2**30
    sys.exit(f"{args.model} has {config.n_params / 1e9:.1f}B parameters: {gib:.0f} GiB of weights in "
             f"{args.dtype} before optimizer state and activations, and a CPU step would take minutes "
             "if it fits at all. Run it where JAX sees a GPU, or pass --force.")


def main(args: argparse.Namespace) -> None:
    if args.worker:
        args.worker.write_text(json.dumps(run_configuration(args, SETTINGS)))
        return
    refuse_large_model_on_cpu(args)
    started, load_start = datetime.now(UTC).isoformat(timespec="seconds"), os.getloadavg()[0]
    parts = []
    configurations = [(t, m) for t in args.thread_counts for m in args.mallocs]
    for index, (threads, malloc) in enumerate(configurations):
        part = args.output.with_name(f".throughput.part{index}.json")
        argv = [*sys.argv[1:], "--threads", str(threads), "--malloc", malloc, "--worker", str(part)]
        if index:
            argv.append("--no-bucketing")
        subprocess.run([sys.executable, __file__, *argv], check=True)
        parts.append(json.loads(part.read_text()))
        part.unlink()
    result = {
        "date": started,
        "machine": parts[0]["machine"],
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "mistral_cl", "benchmarks")),
        "versions": parts[0]["versions"],
        "model": args.model, "dtype": args.dtype, "batch_size": args.batch_size, "steps": args.steps,
        "remat": args.remat,
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "configurations": [p["settings"] for p in parts],
        "rows": [row for p in parts for row in p["rows"]],
        "bucketing": parts[0]["bucketing"],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"wrote {args.output}")


def _git(*command: str) -> str:
    try:
        return subprocess.run(["git", *command], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def print_table(result: dict[str, Any]) -> None:
    header = (f"{'threads':>7} {'malloc':7} {'mode':5} {'step':5} {'framework':9} {'ms':>8} "
              f"{'tok/s real':>11} {'tok/s padded':>12} {'rxn/s':>7} {'MFU':>6} {'JAX/torch':>9}")
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        ratio = f"{r['jax_over_torch']:.2f}" if r["jax_over_torch"] else ""
        print(f"{r['threads']:7d} {r['malloc']:7} {r['mode']:5} {r['step']:5} {r['framework']:9} "
              f"{r['ms']:8.1f} {r['real_tokens_per_s']:11,.0f} {r['padded_tokens_per_s']:12,.0f} "
              f"{r['reactions_per_s']:7.1f} {r['mfu']:6.1%} {ratio:>9}")
    bucketing = result.get("bucketing")
    if bucketing:
        print(f"\nOne Suzuki epoch, {bucketing['mode']} train steps:")
        for name in ("buckets", "longest"):
            r = bucketing[name]
            print(f"  {name:8} {r['batches']:4d} batches, widths {r['widths']}, padding {r['padding']:.1%}, "
                  f"{r['epoch_s']:.1f} s, {r['real_tokens_per_s']:,.0f} real tokens/s")
        print(f"  buckets are {bucketing['speedup']:.2f}x faster")


if __name__ == "__main__":
    main(ARGS)
