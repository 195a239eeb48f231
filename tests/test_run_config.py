"""Each setting has one home: typed configs, per-command recipes that the command line is built from,
library errors that name config fields (the command line prints them as flags), and run.json files of
older versions that still load."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mistral_cl.cli import build_parser, in_flags, main, run_config
from mistral_cl.data.sources import DataConfig
from mistral_cl.errors import InputError
from mistral_cl.recipes import RECIPES
from mistral_cl.runs import ContinualConfig, RunConfig


@pytest.mark.parametrize("command", ["train", "continual"])
def test_a_command_line_without_options_is_the_commands_recipe(command):
    recipe = RECIPES[command]
    config = run_config(build_parser().parse_args([command]))
    assert config.train == recipe.train
    assert config.adaptation.mode == recipe.mode and config.adaptation.lora == recipe.lora
    # `--feature-layer auto` is the recipe's own rule, applied to a random backbone in head mode.
    assert dataclasses.replace(config.head, feature_layer=None) == recipe.head
    assert config.test_fraction == recipe.test_fraction and config.split == recipe.split
    assert config.continual == recipe.continual
    assert config.kind == command and config.data == DataConfig()


def test_every_option_reaches_its_field():
    args = build_parser().parse_args([
        "continual", "--epochs", "3", "--batch-size", "8", "--lr", "2e-3", "--ema", "0.9", "--seed", "4",
        "--mode", "lora", "--lora-rank", "4", "--lora-targets", "q,gate", "--head-heads", "2",
        "--no-head-standardize", "--strategies", "ewc:lam=5,replay", "--memory", "quota:3",
        "--test-fraction", "0.2", "--data", "buchwald", "--task-columns", "a,b", "--yield-unit", "percent"])
    config = run_config(args)
    assert (config.train.epochs, config.train.batch_size, config.train.learning_rate) == (3, 8, 2e-3)
    assert (config.train.ema, config.train.seed) == (0.9, 4)
    assert config.adaptation.lora.rank == 4 and config.adaptation.lora.targets == ("wq", "w1")
    assert config.head.n_heads == 2 and not config.head.standardize
    assert config.continual == ContinualConfig(strategies=("ewc:lam=5.0", "replay"), memory="quota:3")
    assert config.test_fraction == 0.2
    assert config.data == DataConfig("buchwald", task_columns=("a", "b"), yield_unit="percent")


def test_run_config_survives_its_json_round_trip():
    config = run_config(build_parser().parse_args(["continual", "--task-columns", "task"]))
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_run_json_of_an_older_version_loads_into_the_typed_settings():
    config = run_config(build_parser().parse_args(["continual"]))
    raw = config.to_dict()
    for name in ("kind", "split", "test_fraction", "continual"):
        raw.pop(name)
    raw["extra"] = {"kind": "continual", "continual": {
        "strategies": ["naive", "replay"], "memory": "all", "test_fraction": 0.25, "eval_batch_size": 128,
        "buckets": 2}}
    old = RunConfig.from_dict(raw)
    assert old.kind == "continual" and old.test_fraction == 0.25
    assert old.continual == ContinualConfig(strategies=("naive", "replay"))
    train = RunConfig.from_dict({**raw, "extra": {"split": "task", "test_fraction": 0.2}})
    assert (train.kind, train.split, train.test_fraction, train.continual) == ("train", "task", 0.2, None)


def test_library_errors_name_fields_and_the_command_line_prints_flags(capsys, tmp_path):
    with pytest.raises(InputError, match="`continual.memory`"):
        from mistral_cl.continual.buffer import MemoryPolicy

        MemoryPolicy.parse("bogus")
    assert main(["continual", "--memory", "bogus", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "set --memory to all, reservoir:N or quota:N" in err and "`continual.memory`" not in err
    assert in_flags("set `head.standardize=False` or e.g. `train.ema=0.99`; `mistral-cl train`") == (
        "set --no-head-standardize or e.g. --ema 0.99; `mistral-cl train`")


def test_resume_refuses_options_it_would_ignore(capsys, tmp_path):
    assert main(["continual", "--resume", str(tmp_path), "--epochs", "3", "--memory", "all"]) == 2
    err = capsys.readouterr().err
    assert "--epochs, --memory would be ignored" in err  # even a setting given at its default value
