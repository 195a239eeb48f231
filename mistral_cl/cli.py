"""`mistral-cl`: the command-line front end, and the only module that speaks in flags.

Options are built from the commands' recipes (`recipes.py`) and the typed configs, and turned back
into a `RunConfig`; the library behind them raises `InputError`s that name config fields in backticks
(`train.ema`), which are printed here as the flags that set them (`--ema`). Every user mistake ends the
process with its message and exit code 2; anything else is a bug and keeps its traceback. Modules
beyond the configs are imported inside each command.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mistral_cl import hostmem
from mistral_cl.errors import InputError, InputWarning
from mistral_cl.head import CONTEXTS, POOLS, HeadConfig
from mistral_cl.lora import LoRAConfig
from mistral_cl.train import TrainConfig

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from mistral_cl.recipes import Recipe
    from mistral_cl.runs import RunConfig

# The flag that sets each config field that errors name (`field` or `field=value` in backticks).
FLAGS = {
    "model": "--model", "weights": "--weights", "tokenizer": "--tokenizer", "remat": "--remat",
    "adaptation.mode": "--mode", "lora.rank": "--lora-rank", "lora.alpha": "--lora-alpha",
    "lora.targets": "--lora-targets", "head.n_heads": "--head-heads", "head.members": "--head-members",
    "head.pool_heads": "--head-pool-heads", "head.pool": "--head-pool", "head.context": "--head-context",
    "head.mlp_layers": "--head-mlp-layers", "head.dropout": "--head-dropout",
    "head.molecule_dropout": "--molecule-dropout",
    "head.feature_layer": "--feature-layer",
    "head.standardize=False": "--no-head-standardize", "head.token_block": "--[no-]head-token-block",
    "train.epochs": "--epochs", "train.batch_size": "--batch-size", "train.learning_rate": "--lr",
    "train.weight_decay": "--weight-decay", "train.optimizer": "--optimizer", "train.loss": "--loss",
    "train.ema": "--ema", "train.compute_dtype": "--compute-dtype", "train.seed": "--seed",
    "train.schedule": "--schedule",
    "data.source": "--data", "data.smiles_column": "--smiles-column", "data.yield_column": "--yield-column",
    "data.yield_unit": "--yield-unit", "data.task_columns": "--task-columns",
    "test_fraction": "--test-fraction", "split": "--split", "continual.strategies": "--strategies",
    "continual.memory": "--memory", "continual.carry_optimizer": "--carry-optimizer",
    "continual.carry_optimizer=False": "--no-carry-optimizer", "continual.retention": "--retention",
    "continual.retention=none": "--retention none",
    "task_order": "--task-order", "smiles_column": "--smiles-column", "yield_column": "--yield-column",
    "yield_unit": "--yield-unit", "task": "--task", "strategy": "--strategy", "out": "--out",
    "mesh": "--mesh", "output": "--output", "duplicates": "--duplicates", "data.duplicates": "--duplicates",
    # pretrain
    "corpus": "--corpus", "mode": "--mode", "steps": "--steps", "eval_every": "--eval-every",
    "batch_size": "--batch-size", "max_len": "--max-len", "heldout": "--heldout", "resume": "--resume",
}
UNIT_HELP = ("unit of the yields: percent (0-100), fraction (0-1), or auto: fraction if no yield exceeds 1, "
             "percent if the yields above 1 are at least as many as those strictly between 0 and 1, else an "
             "error asking you to say which")
DUPLICATES_HELP = ("rows that repeat a reaction (same canonical SMILES) with another yield or task: error "
                   "(default: list them), mean (one reaction with the mean yield) or first (keep the first "
                   "row); identical repeats are always merged, with a warning")
# Options that say how a resumed run is executed rather than what it computes: accepted with --resume.
RESUME_OPTIONS = {"command", "resume", "no_progress", "mesh", "distributed", "coordinator",
                  "num_processes", "process_id"}


def in_flags(message: str) -> str:
    """`message` with every backticked config field that a flag sets written as that flag."""

    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        if f"{name}={value}" in FLAGS:
            return FLAGS[f"{name}={value}"]
        if name not in FLAGS:
            return match.group(0)
        return FLAGS[name] if value is None else f"{FLAGS[name]} {value}"

    return re.sub(r"`([a-z_.]+)(?:=([^`]*))?`", flag, message)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def _add_data_options(parser: argparse.ArgumentParser, recipe: Recipe) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", default="suzuki",
                       help="suzuki (default), suzuki-xlsx, buchwald, or a .csv/.xlsx file")
    group.add_argument("--smiles-column", help="column with reaction SMILES (generic CSV)")
    group.add_argument("--yield-column", help="column with yields (generic CSV)")
    group.add_argument("--task-columns", help="comma-separated columns that define a task")
    group.add_argument("--yield-unit", choices=["auto", "percent", "fraction"], default="auto",
                       help=UNIT_HELP + " (default auto; the unit read is printed)")
    group.add_argument("--duplicates", choices=["error", "mean", "first"], default="error",
                       help=DUPLICATES_HELP)
    group.add_argument("--test-fraction", type=_fraction, default=recipe.test_fraction,
                       help=f"held-out share of each split (default {recipe.test_fraction})")
    group.add_argument("--tokenizer", help="a SentencePiece tokenizer.model (default: Mistral v0.1)")


def _add_model_options(parser: argparse.ArgumentParser, recipe: Recipe) -> None:
    from mistral_cl.recipes import DEFAULT_MODEL

    head, lora = recipe.head, recipe.lora
    group = parser.add_argument_group("model")
    group.add_argument("--model", help=f"tiny, mistral-7b-v0.1, or a Hugging Face config.json "
                       f"(default: read from --weights, else {DEFAULT_MODEL})")
    group.add_argument("--weights", help="Hugging Face or Mistral weights directory, a directory written "
                                         "by `mistral-cl convert` or `mistral-cl pretrain`, or chem-small "
                                         "(the small chemistry Mistral shipped with the package)")
    group.add_argument("--mode", default=recipe.mode, help=f"head | lora | full (default {recipe.mode})")
    group.add_argument("--lora-rank", type=int, default=lora.rank)
    group.add_argument("--lora-alpha", type=float, default=lora.alpha)
    group.add_argument("--lora-targets", default=",".join(lora.targets),
                       help="from q,k,v,o,gate,up,down (or wq,wk,wv,wo,w1,w3,w2)")
    group.add_argument("--head-heads", type=int, default=head.n_heads,
                       help="attention heads of the MHAR head")
    group.add_argument("--head-members", type=int, default=head.members,
                       help="train an ensemble of this many MHAR heads side by side and average them")
    group.add_argument("--head-pool-heads", type=int, default=head.pool_heads,
                       help="attention-pooling heads of the MHAR head (each pools a slice of the width)")
    group.add_argument("--head-pool", choices=POOLS, default=head.pool,
                       help="reaction: one attention pool over all tokens; molecules: a pool per "
                            f"molecule, summed (default {head.pool})")
    group.add_argument("--head-context", choices=CONTEXTS, default=head.context,
                       help="what a token's state is computed from: reaction (the whole reaction's "
                            "text) or molecule (each molecule on its own, with --head-pool molecules: "
                            "a batch then encodes each of its distinct molecules once, a far cheaper "
                            f"step on a screen) (default {head.context})")
    group.add_argument("--head-token-block", action=argparse.BooleanOptionalAction, default=head.token_block,
                       help="the head's own self-attention and feed-forward over the tokens before "
                            "pooling; without it the pools read the backbone's states as they are "
                            f"(a far cheaper step; default {'on' if head.token_block else 'off'})")
    group.add_argument("--head-mlp-layers", type=int, default=head.mlp_layers,
                       help=f"hidden SiLU layers of the MLP after the pooling (default {head.mlp_layers})")
    group.add_argument("--no-head-standardize", action="store_true",
                       help="feed the pooled vector to the MLP as is, not standardised per channel "
                            "with statistics of training reactions")
    group.add_argument("--feature-layer", default="auto", metavar="K",
                       help="the backbone hidden states the head reads: after K blocks (0: the token "
                            "embeddings), 'final' (the output), or 'auto' (default): the embeddings for "
                            "a randomly initialised backbone in head mode, else the output")
    group.add_argument("--head-dropout", type=float, default=head.dropout)
    group.add_argument("--remat", choices=["none", "dots", "full"], default="none")


def _add_train_options(parser: argparse.ArgumentParser, recipe: Recipe) -> None:
    train = recipe.train
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=_positive_int, default=train.epochs, help=f"(default {train.epochs})")
    group.add_argument("--batch-size", type=_positive_int, default=train.batch_size,
                       help=f"(default {train.batch_size})")
    group.add_argument("--lr", type=float, default=train.learning_rate,
                       help=f"peak learning rate (default {train.learning_rate:g})")
    group.add_argument("--weight-decay", type=float, default=train.weight_decay)
    group.add_argument("--optimizer", choices=["adamw", "adafactor"], default=train.optimizer)
    group.add_argument("--schedule", choices=["cosine", "constant"], default=train.schedule,
                       help=f"learning rate: cosine (warm-up to --lr, then a cosine decay) or constant "
                            f"(--lr at every step) (default {train.schedule})")
    group.add_argument("--loss", choices=["mse", "huber"], default=train.loss)
    group.add_argument("--ema", type=float, metavar="DECAY", default=train.ema,
                       help="keep an exponential moving average of the weights (e.g. 0.999) and use it")
    group.add_argument("--compute-dtype", choices=["float32", "bfloat16"], default=train.compute_dtype)
    group.add_argument("--seed", type=int, default=train.seed)


def _add_run_options(parser: argparse.ArgumentParser, *, progress: bool = True) -> None:
    group = parser.add_argument_group("scale-out")
    group.add_argument("--mesh", default=os.environ.get("MISTRAL_CL_MESH", "-1x1x1"),
                       help="data x fsdp x tensor device mesh, -1 = the rest (default $MISTRAL_CL_MESH, "
                            "else -1x1x1: every device splits the batch; 1x1x1: one device, without any "
                            "sharding)")
    group.add_argument("--distributed", action="store_true",
                       help="call jax.distributed.initialize (auto-detects TPU pods and SLURM; else "
                            "set --coordinator, --num-processes and --process-id)")
    group.add_argument("--coordinator")
    group.add_argument("--num-processes", type=int)
    group.add_argument("--process-id", type=int)
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def continual_recipes() -> list[str]:
    """The recipes `continual --recipe` may start from: those with continual settings."""
    from mistral_cl.recipes import RECIPES

    return [name for name, recipe in RECIPES.items() if recipe.continual is not None]


def build_parser(continual_recipe: str = "continual") -> argparse.ArgumentParser:
    """The command line, the `continual` command's defaults taken from `continual_recipe`."""
    from mistral_cl.recipes import RECIPES

    parser = argparse.ArgumentParser(
        prog="mistral-cl",
        description="Continual learning of reaction yields with Mistral-7B and an MHAR head.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    recipe = RECIPES[continual_recipe]
    assert recipe.continual is not None
    cont = commands.add_parser(
        "continual", help="learn tasks one after another (the main job)",
        description="Learn the tasks of a dataset one after another with each strategy, score every "
                    "task after every task, and print ACC, BWT, FWT and forgetting. With no options: "
                    "Suzuki-Miyaura, the tiny model in head mode, naive then replay.")
    cont.add_argument("--recipe", choices=continual_recipes(), default=continual_recipe,
                      help="the settings every other option starts from: continual (default: the demo's) "
                           "or seed (the seed repository's protocol: Adafactor at a constant rate carried "
                           "through all rounds, equal current and remembered batches, memory all, "
                           "--split global); `--recipe seed --help` shows its defaults")
    cont.add_argument("--strategies", default=",".join(recipe.continual.strategies),
                      help="comma-separated, each NAME or NAME:SETTING=VALUE (e.g. ewc:lam=3e4): joint, "
                           "cumulative, naive, replay, replay-avg-grad, replay-snapshot, ewc, lwf, agem, "
                           f"adapters (default {','.join(recipe.continual.strategies)})")
    cont.add_argument("--task-order", default="sorted",
                      help="sorted (default), random (drawn with --seed), random:K (drawn with K), seed "
                           "(the seed repository's order of the Suzuki pairs), or comma-separated task keys")
    cont.add_argument("--split", choices=["task", "global"], default=recipe.split,
                      help="task: 70/30 within every task; global: one 70/30 split of all reactions, then "
                           f"grouped by task (the seed repository's protocol) (default {recipe.split})")
    cont.add_argument("--memory", default=recipe.continual.memory,
                      help="replay memory of the replay strategies and agem: all | reservoir:N (at most N "
                           f"reactions) | quota:N (N per task) (default {recipe.continual.memory})")
    cont.add_argument("--carry-optimizer", action=argparse.BooleanOptionalAction,
                      default=recipe.continual.carry_optimizer,
                      help="keep one optimizer state (moments, step count, schedule) through all rounds "
                           "instead of a fresh one per round (default "
                           f"{'on' if recipe.continual.carry_optimizer else 'off'})")
    cont.add_argument("--retention", default=recipe.continual.retention,
                      help="after every round, the backbone's language-model loss on held-out texts: auto "
                           "(default: when --mode lora/full fine-tunes weights written by `mistral-cl "
                           "pretrain`, on the texts it held out), none, or a file of SMILES")
    cont.add_argument("--resume", metavar="RUN_DIR",
                      help="continue an interrupted run; every setting comes from RUN_DIR/run.json (other "
                           "options, but --no-progress and the scale-out ones, are refused)")
    cont.add_argument("--out", default="runs/continual", help="run directory (default runs/continual)")
    _add_data_options(cont, recipe)
    _add_model_options(cont, recipe)
    _add_train_options(cont, recipe)
    _add_run_options(cont)

    recipe = RECIPES["train"]
    train = commands.add_parser("train", help="train on one split (all tasks at once)")
    train.add_argument("--split", choices=["random", "task"], default=recipe.split,
                       help="random: one 70/30 split of all reactions; task: 70/30 within every task")
    train.add_argument("--out", default="runs/train", help="run directory (default runs/train)")
    train.add_argument("--molecule-dropout", type=float, metavar="SHARE",
                       default=recipe.head.molecule_dropout,
                       help="train on this share of the reactions a second time with one of their "
                            "molecules read as an unknown placeholder, and read molecules never trained "
                            "on as that placeholder when predicting: a new ligand then gets the average "
                            "over the known ones, not a guess from its text (default "
                            f"{recipe.head.molecule_dropout:g}: off)")
    _add_data_options(train, recipe)
    _add_model_options(train, recipe)
    _add_train_options(train, recipe)
    _add_run_options(train)

    pred = commands.add_parser(
        "predict", help="predict yields of a CSV of reactions with a trained run",
        description="Write FILE's rows, every column kept, with the predicted yield in percent as a last "
                    "column, predicted_yield_percent. A `continual` run predicts with the final model of "
                    "one strategy (--strategy; for adapters, the model of one --task).")
    pred.add_argument("--run", required=True, help="run directory of `train` or `continual`")
    pred.add_argument("file", help="CSV with reaction SMILES")
    pred.add_argument("--smiles-column", help="column with reaction SMILES (default: detected)")
    pred.add_argument("--strategy", help="which strategy of a continual run predicts (needed when it has "
                                         "several), e.g. replay")
    pred.add_argument("--task", help="task key, for strategies with one model per task (adapters)")
    pred.add_argument("--output", help="output CSV (default: FILE with .predictions.csv); never the input, "
                                       "a file of the run, or a file that `predict` did not write")
    _add_run_options(pred, progress=False)

    ingest = commands.add_parser(
        "ingest", help="add a new task (a batch of experiments) to a run",
        description="Add the experiments of FILE as a new task (split into train and test like the "
                    "others), train it with every strategy of the run, score every task again and "
                    "extend the matrices. A bad file changes nothing and exits with code 2.")
    ingest.add_argument("run", help="run directory of a finished `continual` run")
    ingest.add_argument("file", help="CSV of the new experiments (reaction SMILES and yields)")
    ingest.add_argument("--smiles-column",
                        help="default: rxn, reaction, reaction_smiles, rxn_smiles or smiles")
    ingest.add_argument("--yield-column", help="default: yield, yield_percent or measured_yield")
    ingest.add_argument("--yield-unit", choices=["auto", "percent", "fraction"],
                        help=UNIT_HELP + " (default: the unit the run's own data was read in)")
    ingest.add_argument("--duplicates", choices=["error", "mean", "first"], default="error",
                        help=DUPLICATES_HELP + "; a reaction the run already has is an error, or with "
                                               "first is left out of the new task")
    ingest.add_argument("--task", help="name of the new task (default: the file name)")
    _add_run_options(ingest)

    _add_pretrain_parser(commands)

    conv = commands.add_parser("convert", help="convert Mistral weights to this project's checkpoint format")
    conv.add_argument("--from", dest="source", required=True,
                      help="Hugging Face or Mistral weights directory")
    conv.add_argument("--to", dest="target", required=True, help="output checkpoint directory")
    conv.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")

    rep = commands.add_parser("report", help="re-draw tables and plots of a run directory")
    rep.add_argument("run", help="run directory of a `continual` run")
    return parser


def _add_pretrain_parser(commands) -> None:
    from mistral_cl.pretrain import PretrainConfig

    default, lora = PretrainConfig(), LoRAConfig()
    pre = commands.add_parser(
        "pretrain", help="pretrain the backbone as a causal language model on SMILES",
        description="Train the backbone to predict the next token of molecules and reaction SMILES, from "
                    "scratch (any --model) or continued from --weights (full or lora), and write it in "
                    "Hugging Face format to OUT/model, which every command loads with --weights. The "
                    "held-out loss of each corpus source is printed after every --eval-every steps.")
    pre.add_argument("--corpus", default=",".join(default.corpus),
                     help="comma-separated sources, each SOURCE or SOURCE@SHARE (the fraction of every batch "
                          "it fills): moses, moses-test (MOSES molecules, from `pip install --no-deps "
                          "molsets==0.3.1`), buchwald (Buchwald-Hartwig reaction SMILES), a text file of one "
                          f"SMILES per line, or FILE.csv[:COLUMN] (default {','.join(default.corpus)})")
    pre.add_argument("--model", help="tiny, a preset, or a Hugging Face config.json (default: read from "
                                     "--weights, else tiny)")
    pre.add_argument("--weights", help="continue pretraining these weights (they need their output layer)")
    pre.add_argument("--tokenizer", help="a SentencePiece tokenizer.model (default: Mistral v0.1)")
    pre.add_argument("--mode", choices=["full", "lora"], default=default.mode,
                     help="what trains: every weight, or LoRA adapters on loaded weights "
                          f"(default {default.mode})")
    pre.add_argument("--lora-rank", type=int, default=lora.rank)
    pre.add_argument("--lora-alpha", type=float, default=lora.alpha)
    pre.add_argument("--lora-targets", default=",".join(lora.targets))
    pre.add_argument("--remat", choices=["none", "dots", "full"], default="none")
    pre.add_argument("--steps", type=_positive_int, default=default.steps,
                     help="optimizer steps, rounded up to whole --eval-every segments "
                          f"(default {default.steps})")
    pre.add_argument("--eval-every", type=_positive_int, default=default.eval_every,
                     help="steps between held-out evaluations and checkpoints "
                          f"(default {default.eval_every})")
    pre.add_argument("--batch-size", type=_positive_int, default=default.batch_size,
                     help=f"texts per step (default {default.batch_size})")
    pre.add_argument("--lr", type=float, default=default.learning_rate,
                     help="peak learning rate of the warm-up + cosine schedule "
                          f"(default {default.learning_rate:g})")
    pre.add_argument("--weight-decay", type=float, default=default.weight_decay)
    pre.add_argument("--compute-dtype", choices=["float32", "bfloat16"], default=default.compute_dtype)
    pre.add_argument("--max-len", type=_positive_int, default=default.max_len,
                     help="tokens per text; longer texts are cut, with a warning "
                          f"(default {default.max_len})")
    pre.add_argument("--heldout", type=int, default=default.heldout,
                     help=f"texts of each source held out for the held-out loss (default {default.heldout}, "
                          "at most a tenth of the source)")
    vocab = pre.add_mutually_exclusive_group()
    vocab.add_argument("--restrict-vocab", dest="restrict_vocab", action="store_true", default=None,
                       help="softmax over the corpus's token ids only (default when training from scratch)")
    vocab.add_argument("--full-vocab", dest="restrict_vocab", action="store_false",
                       help="softmax over the whole vocabulary (default with --weights)")
    pre.add_argument("--monitor", default=",".join(default.monitor),
                     help="comma-separated texts whose loss is recorded but never trained on: suzuki (1000 "
                          "reactions of the evaluation set) or corpus sources")
    pre.add_argument("--seed", type=int, default=default.seed)
    pre.add_argument("--out", default="runs/pretrain", help="run directory (default runs/pretrain)")
    pre.add_argument("--resume", metavar="RUN_DIR",
                     help="continue an interrupted run with the settings in RUN_DIR/pretrain.json")
    _add_run_options(pre)


# ------------------------------------------------------------------------------ flags -> configs


def run_config(args: argparse.Namespace) -> RunConfig:
    """The `RunConfig` of a `train` or `continual` command line."""
    from mistral_cl.config import resolve_model_config
    from mistral_cl.data.sources import DataConfig
    from mistral_cl.models import weights_directory
    from mistral_cl.predictor import AdaptationConfig
    from mistral_cl.runs import RunConfig

    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    columns = [c.strip() for c in args.task_columns.split(",") if c.strip()] if args.task_columns else None
    weights = weights_directory(args.weights) if args.weights else None
    config = RunConfig(
        model=resolve_model_config(args.model, weights),
        head=HeadConfig(n_heads=args.head_heads, members=args.head_members,
                        pool_heads=args.head_pool_heads, pool=args.head_pool, dropout=args.head_dropout,
                        molecule_dropout=getattr(args, "molecule_dropout", HeadConfig.molecule_dropout),
                        mlp_layers=args.head_mlp_layers, standardize=not args.no_head_standardize,
                        token_block=args.head_token_block, context=args.head_context,
                        feature_layer=feature_layer(args.feature_layer, args.mode, args.weights)),
        adaptation=AdaptationConfig(
            mode=args.mode, lora=LoRAConfig(rank=args.lora_rank, alpha=args.lora_alpha, targets=targets)
        ),
        train=TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            weight_decay=args.weight_decay, optimizer=args.optimizer, loss=args.loss,
            compute_dtype=args.compute_dtype, seed=args.seed, ema=args.ema, schedule=args.schedule,
        ),
        data=DataConfig(source=args.data, smiles_column=args.smiles_column, yield_column=args.yield_column,
                        yield_unit=None if args.yield_unit == "auto" else args.yield_unit,
                        task_columns=tuple(columns) if columns else None,
                        duplicates=None if args.duplicates == "error" else args.duplicates),
        weights=weights,
        tokenizer=str(Path(args.tokenizer).resolve()) if args.tokenizer else None,
        remat=args.remat,
        test_fraction=args.test_fraction,
        split="random" if args.command == "continual" else args.split,  # with_continual sets its own
    )
    if args.command != "continual":
        return config
    from mistral_cl.continual.runner import with_continual

    return with_continual(config, args.strategies, memory=args.memory, split=args.split,
                          carry_optimizer=args.carry_optimizer, retention=args.retention)


def feature_layer(option: str, mode: str, weights: str | None) -> int | None:
    """`--feature-layer` as `HeadConfig.feature_layer` (None: the backbone's final output); `auto`
    leaves it to the recipe (`recipes.auto_feature_layer`)."""
    from mistral_cl.recipes import auto_feature_layer

    if option == "auto":
        return auto_feature_layer(mode, pretrained=weights is not None)
    if option == "final":
        return None
    try:
        return int(option)
    except ValueError:
        raise InputError(f"--feature-layer {option!r} is not a layer number",
                         hint="pass a block count such as 0 (the token embeddings), final or auto") from None


def task_order(text: str) -> str | list[str]:
    """`sorted`, `random`, `random:K`, `seed` or an explicit comma-separated list of task keys."""
    if text in ("sorted", "random", "seed") or re.fullmatch(r"random:\d+", text):
        return text
    return [key.strip() for key in text.split(",") if key.strip()]


def training_mesh(args: argparse.Namespace) -> Mesh | None:
    """The device mesh of `--mesh`, or None for one device (no sharding machinery at all): `1x1x1`,
    or a machine with a single device."""
    import sharding

    if [part.strip() for part in args.mesh.split("x")] == ["1", "1", "1"]:
        return None
    mesh = sharding.make_mesh(args.mesh)
    return mesh if mesh.size > 1 else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the defaults of the recipe that `continual --recipe NAME` names."""
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    probe.add_argument("--recipe")
    named = probe.parse_known_args(argv)[0].recipe
    return build_parser(named if named in continual_recipes() else "continual").parse_args(argv)


def options_given(argv: Sequence[str] | None) -> set[str]:
    """The destinations of the options written on the command line (not those left at a default)."""
    probe = build_parser()
    for action in probe._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                for option in command._actions:
                    option.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def refuse_settings_beside_resume(argv: Sequence[str] | None) -> None:
    """A resumed run takes every setting from its run.json: other options would be ignored."""
    ignored = sorted(options_given(argv) - RESUME_OPTIONS)
    if ignored:
        flags = ", ".join("--" + name.replace("_", "-") for name in ignored)
        raise InputError(f"--resume takes every setting from the run's own saved settings, so {flags} "
                         "would be ignored",
                         hint="drop them to resume the run as it was started, or start a new run with "
                              "--out NEW_DIR")


# ----------------------------------------------------------------------------------- commands


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    _enable_compilation_cache()
    hostmem.configure()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", InputWarning)
            warnings.showwarning = _warning_printer(args.command, warnings.showwarning)
            if getattr(args, "resume", None):
                refuse_settings_beside_resume(argv)
            if getattr(args, "distributed", False):
                from sharding.distributed import initialize

                initialize(args.coordinator, args.num_processes, args.process_id)
            return _COMMANDS[args.command](args) or 0
    except InputError as err:
        print(f"mistral-cl {args.command}: error: {in_flags(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mistral-cl {args.command}: interrupted; saved checkpoints are intact", file=sys.stderr)
        return 130


def _warning_printer(command: str, fallback: Callable[..., None]) -> Callable[..., None]:
    """Show an `InputWarning` as `mistral-cl COMMAND: warning: ...` (other warnings as Python does)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, InputWarning):
            print(f"mistral-cl {command}: warning: {in_flags(str(message))}", file=sys.stderr, flush=True)
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


def _enable_compilation_cache() -> None:
    """Keep compiled steps on disk, so a repeated run (the demo, a resume) skips most compiles.

    Set MISTRAL_CL_JAX_CACHE to choose the directory, or to an empty string to switch it off.
    """
    directory = os.environ.get("MISTRAL_CL_JAX_CACHE", str(Path.home() / ".cache" / "mistral-cl" / "jax"))
    if directory:
        import jax

        jax.config.update("jax_compilation_cache_dir", directory)


def _report(line: str) -> None:
    import sharding

    if sharding.is_reporting_process():
        print(line)


def _tell(line: str) -> None:
    """A line of the library's for the user, the settings it names written as flags."""
    print(in_flags(line), flush=True)


def _train(args: argparse.Namespace) -> int:
    from mistral_cl import report
    from mistral_cl.supervised import summary_rows, train_run

    run = train_run(run_config(args), args.out, mesh=training_mesh(args), progress=not args.no_progress,
                    say=_tell)
    _report(report.format_table(summary_rows(run)))
    _report(f"wrote {run.directory}/ (metrics.json, predictions.csv, parity.png)")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from mistral_cl.prediction import PREDICTION_COLUMN
    from mistral_cl.supervised import predict_file

    output, count = predict_file(args.run, args.file, output=args.output, smiles_column=args.smiles_column,
                                 strategy=args.strategy, task=args.task, mesh=training_mesh(args))
    _report(f"wrote {count} predictions (yield in percent, column {PREDICTION_COLUMN}) to {output}")
    return 0


def _continual(args: argparse.Namespace) -> int:
    from mistral_cl.continual.runner import ContinualRun
    from mistral_cl.runlock import run_lock

    mesh = training_mesh(args)
    if args.resume:
        run = ContinualRun.open(args.resume, mesh)
    else:
        run = ContinualRun.create(args.out, run_config(args), task_order(args.task_order), mesh, say=_tell)
    with run_lock(run.directory, "continual"):
        rows = run.train(show=not args.no_progress)
    _print_table(rows, run.directory)
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from mistral_cl.continual.runner import ContinualRun
    from mistral_cl.runlock import run_lock

    path = Path(args.file)
    run = ContinualRun.open(args.run, training_mesh(args))
    with run_lock(run.directory, "ingest"):
        task, how = run.new_task(path, args.task or path.stem, smiles_column=args.smiles_column,
                                 yield_column=args.yield_column, yield_unit=args.yield_unit,
                                 duplicates=args.duplicates)
        run = run.with_task(task)
        _report(f"ingested {len(task.train) + len(task.test)} reactions as task {task.key!r} "
                f"({len(task.train)} train / {len(task.test)} test); {how}")
        rows = run.train(show=not args.no_progress)
    _print_table(rows, run.directory)
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from mistral_cl.config import resolve_model_config
    from mistral_cl.models import weights_directory
    from mistral_cl.pretrain import MODEL_DIR, PretrainConfig, pretrain
    from mistral_cl.tokenizer import Tokenizer

    mesh = training_mesh(args)
    tokenizer = Tokenizer.from_file(args.tokenizer) if args.tokenizer else None
    progress = not args.no_progress
    if args.resume:
        from mistral_cl.runlock import run_lock

        with run_lock(Path(args.resume), "pretrain"):
            result = pretrain(PretrainConfig(), args.resume, resume=True, mesh=mesh, progress=progress,
                              tokenizer=tokenizer)
    else:
        config = PretrainConfig(
            corpus=tuple(c.strip() for c in args.corpus.split(",") if c.strip()), mode=args.mode,
            steps=args.steps, eval_every=args.eval_every, batch_size=args.batch_size, learning_rate=args.lr,
            weight_decay=args.weight_decay, compute_dtype=args.compute_dtype, max_len=args.max_len,
            heldout=args.heldout, restrict_vocab=args.restrict_vocab, seed=args.seed,
            monitor=tuple(m.strip() for m in args.monitor.split(",") if m.strip()))
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        weights = weights_directory(args.weights) if args.weights else None
        result = pretrain(config, args.out, model=resolve_model_config(args.model, weights),
                          weights=weights, tokenizer=tokenizer, mesh=mesh, progress=progress,
                          remat=args.remat,
                          lora=LoRAConfig(rank=args.lora_rank, alpha=args.lora_alpha, targets=targets))
    last = result.history[-1] if result.history else {}
    losses = ", ".join(f"{k.replace('_', ' ', 1)} {v:.3f}" for k, v in last.items()
                       if k.startswith(("heldout_", "monitor_")))
    _report(f"held-out loss (nats/token) after {last.get('step', 0)} steps: {losses or 'none measured'}")
    _report(f"wrote {result.directory / MODEL_DIR}/ (config.json, model.safetensors: load it with --weights) "
            f"and {result.directory}/pretrain.json")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from mistral_cl.convert import convert_command

    return convert_command(args)


def _report_command(args: argparse.Namespace) -> int:
    from mistral_cl.continual.runner import ContinualRun

    run = ContinualRun.open(args.run)
    _print_table(run.results(), run.directory)
    return 0


def _print_table(rows: list[dict], run_dir: Path) -> None:
    from mistral_cl import report

    _report(report.format_table(rows))
    _report(f"ACC/BWT/FWT/forgetting on test R²; RMSE % = mean test RMSE after the last round. "
            f"Results in {run_dir}/")


_COMMANDS = {
    "train": _train,
    "predict": _predict,
    "continual": _continual,
    "ingest": _ingest,
    "pretrain": _pretrain,
    "convert": _convert,
    "report": _report_command,
}


if __name__ == "__main__":
    sys.exit(main())
