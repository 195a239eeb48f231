"""Run directories: the configuration of a run and the model it trains.

    runs/NAME/
      run.json          every setting needed to rebuild the model and repeat the run
      base/             the frozen half of the model, written once (absent when it can be re-read
                        from the `weights` directory the run started from)
      checkpoints/      the trainable half (and, for continual runs, optimizer and strategy state)
      molecules.json    the molecules a `train` run trained on, where it reads others as a
                        placeholder (`head.molecule_dropout`, see `data.unseen`)

Splitting the model this way keeps a LoRA or head-only checkpoint of Mistral-7B at the size of its
adapters rather than 14 GB per checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
from jax.sharding import Mesh

import sharding
from mistral_cl import checkpoint
from mistral_cl.config import ModelConfig
from mistral_cl.data.sources import DataConfig
from mistral_cl.errors import InputError
from mistral_cl.head import HeadConfig
from mistral_cl.lora import LoRAConfig
from mistral_cl.model import Mistral, check_depth
from mistral_cl.predictor import AdaptationConfig, YieldModel, build_yield_model, trainable_filter
from mistral_cl.tokenizer import Tokenizer
from mistral_cl.train import TrainConfig

RUN_FILE = "run.json"
MOLECULES_FILE = "molecules.json"
# Head settings that run.json files written before they existed imply: such runs had a one-layer MLP
# on the raw pooled vector, and must be rebuilt that way to restore their checkpoints.
LEGACY_HEAD = {"mlp_layers": 1, "standardize": False}


SPLITS = {"train": ("random", "task"), "continual": ("task", "global")}


@dataclasses.dataclass(frozen=True)
class ContinualConfig:
    """What a continual run adds to a run's settings.

    strategies: the strategy specs, learned one after another (`continual.strategies`).
    memory: the replay memory policy of the strategies that keep one (`continual.buffer.MemoryPolicy`).
    eval_batch_size: reactions per batch when every task is scored after every round.
    buckets: batch widths chosen from all reactions of the stream; each is one compiled shape of every
        step (fewer compile faster, more pad less).
    carry_optimizer: keep the optimizer state (moments and step count, so the schedule goes on) from
        one round to the next, as the seed repository does, instead of a fresh optimizer every round;
        it is then checkpointed with every round (see `continual.learner`).
    retention: after every round, the backbone's language-model loss on held-out texts (see
        `continual.retention`): auto (when fine-tuning weights from `mistral-cl pretrain`), none, or a
        file of SMILES.
    """

    strategies: tuple[str, ...] = ("naive", "replay")
    memory: str = "all"
    eval_batch_size: int = 128
    buckets: int = 2
    carry_optimizer: bool = False
    retention: str = "auto"

    def __post_init__(self) -> None:
        if not self.strategies:
            raise InputError("continual.strategies is empty", hint="name at least one strategy")
        if self.eval_batch_size <= 0 or self.buckets <= 0:
            raise InputError(f"continual.eval_batch_size and continual.buckets must be positive, got "
                             f"{self.eval_batch_size} and {self.buckets}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: model, head, adaptation, optimisation, data and weights.

    kind: `train` (one model on one split) or `continual` (tasks learned one after another; then
        `continual` holds its settings).
    split: how test reactions are held out: for a `train` run `random` (one split of all reactions)
        or `task` (within every task); for a continual run `task` or `global` (one split of all
        reactions, then grouped by task; see `data.tasks`).
    test_fraction: the held-out share of each split.
    """

    model: ModelConfig
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
    adaptation: AdaptationConfig = dataclasses.field(default_factory=AdaptationConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    weights: str | None = None
    tokenizer: str | None = None
    remat: str = "none"
    kind: Literal["train", "continual"] = "train"
    split: Literal["random", "task", "global"] = "random"
    test_fraction: float = 0.3
    continual: ContinualConfig | None = None

    def __post_init__(self) -> None:
        # Before any run directory is made.
        self.head.check(self.model.dim)
        check_depth(self.head.feature_layer, self.model.n_layers)
        if self.kind not in ("train", "continual"):
            raise InputError(f"unknown run kind {self.kind!r}; choose train or continual")
        if self.split not in SPLITS[self.kind]:
            raise InputError(f"a {self.kind} run cannot use the split {self.split!r}; choose one of "
                             f"{', '.join(SPLITS[self.kind])} (`split`)")
        if not 0.0 < self.test_fraction < 1.0:
            raise InputError(f"test_fraction must be strictly between 0 and 1, got {self.test_fraction}")
        if (self.kind == "continual") != (self.continual is not None):
            raise InputError("a continual run needs its continual settings, and only it has them")
        if self.kind == "continual" and self.head.molecule_dropout:
            raise InputError("continual runs do not read unseen molecules as a placeholder: "
                             "`head.molecule_dropout` is a setting of `train` runs",
                             hint="leave out --molecule-dropout")

    def to_dict(self) -> dict[str, Any]:
        raw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        raw = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in raw.items()}
        return {**raw, "data": self.data.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        raw = dict(raw)
        raw.update(_settings_of_old_runs(raw.pop("extra", None)))
        if raw.get("kind") == "continual" and raw.get("split") == "random":
            raw["split"] = "task"  # continual runs of commits 1c7941c..7c19583 recorded train's default
        adaptation = dict(raw.pop("adaptation", {}))
        lora = LoRAConfig(**{**adaptation.pop("lora", {})})
        continual = raw.pop("continual", None)
        return cls(
            model=ModelConfig.from_dict(raw.pop("model")),
            head=HeadConfig(**{**LEGACY_HEAD, **raw.pop("head", {})}),
            adaptation=AdaptationConfig(lora=lora, **adaptation),
            train=TrainConfig(**raw.pop("train", {})),
            data=DataConfig.from_dict(raw.pop("data", {})),
            continual=None if continual is None else ContinualConfig(
                **{**continual, "strategies": tuple(continual["strategies"])}),
            **raw,
        )


def _settings_of_old_runs(extra: dict[str, Any] | None) -> dict[str, Any]:
    """The typed settings of a run.json written before they were typed (an `extra` dict with `kind`,
    `split`, `test_fraction` and, for continual runs, a `continual` dict holding `test_fraction`)."""
    if not extra:
        return {}
    settings = {k: extra[k] for k in ("split", "test_fraction") if k in extra}
    if extra.get("kind") == "continual":
        continual = dict(extra["continual"])
        settings.update(kind="continual", test_fraction=continual.pop("test_fraction", 0.3),
                        split=continual.pop("split", "task"), continual=continual)
    return settings


def write_json(path: Path, content: Any) -> None:
    """Writes JSON through a temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def make_run_dir(out: str | Path) -> Path:
    """`out` created as a new run directory. It must not hold a run, nor anything else: a run writes
    files such as predictions.csv and metrics.json, which would replace the user's own."""
    path = Path(out)
    hint = "choose a new or empty directory as `out`"
    if path.exists() and not path.is_dir():
        raise InputError("exists and is a file, not a directory", file=str(path), hint=hint)
    if (path / RUN_FILE).exists():
        raise InputError("a run already exists here", file=str(path),
                         hint="choose another `out`, resume the run, or delete the directory first")
    if path.is_dir():
        held = sorted(p.name for p in path.iterdir())
        if held:
            shown = ", ".join(held[:5]) + (f" (+{len(held) - 5} more)" if len(held) > 5 else "")
            raise InputError(f"the directory is not empty ({shown}) and is not a run: a run's files would "
                             f"replace files of the same name", file=str(path), hint=hint)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the run directory ({error.strerror})", file=str(path),
                         hint=hint) from None
    return path


def save_run_config(run_dir: Path, config: RunConfig) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(run_dir) / RUN_FILE, config.to_dict())


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        from mistral_cl.pretrain import MODEL_DIR, pretraining_run

        if pretraining_run(run_dir):
            model = Path(run_dir) / MODEL_DIR
            raise InputError("not a run directory (no run.json); it is a pretraining run", file=str(run_dir),
                             hint=f"its model is {model}: fine-tune it with `mistral-cl train --weights "
                                  f"{model}`, then pass that run")
        raise InputError("not a run directory (no run.json)", file=str(run_dir),
                         hint="pass the output directory of an earlier `mistral-cl train` or `continual`")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as err:
        raise InputError(f"run.json is damaged or from another version ({err})", file=str(path)) from None


def save_known_molecules(run_dir: Path, molecules: frozenset[str]) -> None:
    """Records the molecules a run trained on, which its predictions read as they are."""
    write_json(Path(run_dir) / MOLECULES_FILE, sorted(molecules))


def load_known_molecules(run_dir: Path) -> frozenset[str]:
    """The molecules a run trained on (`save_known_molecules`)."""
    path = Path(run_dir) / MOLECULES_FILE
    try:
        molecules = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("this run reads molecules it never trained on as a placeholder, but its list of "
                         "training molecules is missing", file=str(path),
                         hint="the run directory is incomplete: train it again") from None
    except json.JSONDecodeError as err:
        raise InputError(f"the list of training molecules is damaged ({err})", file=str(path),
                         hint="the run directory is incomplete: train it again") from None
    if not isinstance(molecules, list) or not all(isinstance(m, str) for m in molecules):
        raise InputError("the list of training molecules is not a list of SMILES", file=str(path),
                         hint="the run directory is incomplete: train it again")
    return frozenset(molecules)


def initial_model(config: RunConfig, key: jax.Array, mesh: Mesh | None = None) -> YieldModel:
    """The model a run starts from: pretrained weights when the run names them, else random.

    With a `mesh`, parameters are created (or read) directly in their sharded layout: no device
    ever holds a full copy.
    """
    build = lambda backbone: build_yield_model(config.model, config.head, config.adaptation, key=key,
                                               backbone=backbone, remat=config.remat)
    if config.weights is None:
        return build(None) if mesh is None else sharding.sharded_init(lambda: build(None), mesh)
    from mistral_cl.convert import is_converted, load_converted
    from mistral_cl.weights import load_mistral

    placement = None
    if mesh is not None:
        abstract = eqx.filter_eval_shape(Mistral, config.model, key=jax.random.key(0))
        placement = sharding.shardings(sharding.model_specs(abstract, mesh), mesh)
    if is_converted(config.weights):
        backbone = load_converted(config.weights, config.model, sharding=placement)
    else:
        backbone = load_mistral(config.weights, config=config.model, sharding=placement)
    model = build(backbone.with_remat(config.remat))
    return model if mesh is None else sharding.place(model, mesh)


def abstract_model(config: RunConfig) -> YieldModel:
    """The model's structure with `ShapeDtypeStruct` leaves: a `like` for restoring checkpoints."""
    return eqx.filter_eval_shape(
        lambda: build_yield_model(config.model, config.head, config.adaptation,
                                  key=jax.random.key(0), remat=config.remat)
    )


def split_model(model: YieldModel, config: RunConfig) -> tuple[YieldModel, YieldModel]:
    """(trainable, frozen) halves for the run's adaptation mode."""
    return eqx.partition(model, trainable_filter(model, config.adaptation.mode))


def save_frozen(run_dir: Path, model: YieldModel, config: RunConfig) -> None:
    """Stores the frozen half once, unless it can be re-read from the run's pretrained weights."""
    _, frozen = split_model(model, config)
    if not jax.tree.leaves(frozen):  # full fine-tuning: nothing is frozen
        return
    if config.weights is None and not checkpoint.steps(Path(run_dir) / "base"):
        checkpoint.save(Path(run_dir) / "base", 0, frozen, keep=1)


def load_model(run_dir: Path, config: RunConfig, trainable: YieldModel) -> YieldModel:
    """The full model of a run, given its trainable half (restored from a checkpoint)."""
    return load_models(run_dir, config, [trainable])[0]


def load_models(run_dir: Path, config: RunConfig, trainables: Sequence[YieldModel]
                ) -> tuple[YieldModel, ...]:
    """The full model of a run for each of `trainables`, all sharing one frozen half, loaded once."""
    like = abstract_model(config)
    if not jax.tree.leaves(split_model(like, config)[1]):
        return tuple(trainables)
    if config.weights is None:
        _, frozen_like = split_model(like, config)
        frozen, _ = checkpoint.restore(Path(run_dir) / "base", frozen_like)
    else:
        _, frozen = split_model(initial_model(config, jax.random.key(0)), config)
    return tuple(eqx.combine(trainable, frozen) for trainable in trainables)


def trainable_like(config: RunConfig) -> YieldModel:
    """Abstract trainable half, for restoring the `trainable` entry of a checkpoint."""
    trainable, _ = split_model(abstract_model(config), config)
    return trainable


def tokenizer_for(config: RunConfig) -> Tokenizer:
    """The run's tokenizer (`tokenizer`, default: Mistral v0.1's), checked against the model's vocabulary."""
    tokenizer = Tokenizer.from_file(config.tokenizer) if config.tokenizer else Tokenizer.default()
    if tokenizer.vocab_size > config.model.vocab_size:
        raise InputError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.model.vocab_size}",
            file=str(tokenizer.path), hint="use the tokenizer that belongs to the weights",
        )
    return tokenizer


def fresh_run_dir(out: str | Path) -> Path:
    """`out`, which must not already hold a run (so nothing saved is ever overwritten). Only process 0
    makes it; the others return the path."""
    path = Path(out)
    if not sharding.is_reporting_process():  # process 0 alone decides and writes
        return path
    return make_run_dir(path)
