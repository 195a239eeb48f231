"""The command line: user mistakes end with a clear message and exit code 2, never a traceback."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mistral_cl.cli import feature_layer, main
from mistral_cl.config import ModelConfig
from mistral_cl.data.sources import load_dataset


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    dataset = load_dataset("suzuki")
    path = tmp_path_factory.mktemp("data") / "small.csv"
    pd.DataFrame({"rxn": dataset.smiles[:48], "yield": 100 * dataset.yields[:48]}).to_csv(path, index=False)
    return path


def _error(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr().err


def test_unknown_mode_is_a_clear_error(capsys, small_csv, tmp_path):
    code, err = _error(capsys, ["train", "--data", str(small_csv), "--mode", "partial",
                                "--out", str(tmp_path / "run")])
    assert code == 2 and "unknown adaptation mode 'partial'" in err and "head, lora, full" in err
    assert not (tmp_path / "run").exists()


def test_non_positive_lora_rank_is_a_clear_error(capsys, small_csv, tmp_path):
    code, err = _error(capsys, ["train", "--data", str(small_csv), "--mode", "lora", "--lora-rank", "0",
                                "--out", str(tmp_path / "run")])
    assert code == 2 and "LoRA rank must be a positive integer" in err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--head-members", "0", "head members must be a positive number"),
    ("--head-pool-heads", "5", "pool_heads=5 must be positive and divide the backbone width 128"),
    ("--head-mlp-layers", "0", "head mlp_layers must be a positive number of layers"),
    ("--feature-layer", "3", "feature layer 3 is not a layer of this backbone"),
    ("--feature-layer", "-1", "feature layer -1 is not a layer of this backbone"),
    ("--feature-layer", "last", "--feature-layer 'last' is not a layer number"),
    ("--ema", "1.5", "EMA decay must be in (0, 1)"),
])
def test_bad_head_or_optimiser_settings_are_clear_errors(capsys, small_csv, tmp_path, option, value,
                                                         message):
    code, err = _error(capsys, ["train", "--data", str(small_csv), option, value,
                                "--out", str(tmp_path / "run")])
    assert code == 2 and message in err
    assert not (tmp_path / "run").exists()


def test_data_without_the_needed_columns_names_file_and_column(capsys, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("reaction,percent\nCC>>CC,10\n")
    code, err = _error(capsys, ["train", "--data", str(path), "--out", str(tmp_path / "run")])
    assert code == 2 and str(path) in err and "rxn" in err and "reaction" in err


def test_weights_that_do_not_match_the_model_are_refused(capsys, small_csv, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    other = ModelConfig(vocab_size=32000, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                        hidden_dim=128)
    (weights / "config.json").write_text(json.dumps(other.to_hf_config()))
    code, err = _error(capsys, ["train", "--data", str(small_csv), "--model", "tiny", "--weights",
                                str(weights), "--out", str(tmp_path / "run")])
    assert code == 2 and "do not match --model tiny" in err and "dim: --model 128, weights 64" in err


def test_missing_weights_directory_is_a_clear_error(capsys, small_csv, tmp_path):
    code, err = _error(capsys, ["train", "--data", str(small_csv), "--weights", str(tmp_path / "nope"),
                                "--out", str(tmp_path / "run")])
    assert code == 2 and "weights directory not found" in err


MICRO = ModelConfig(vocab_size=32000, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                    hidden_dim=64)


@pytest.mark.parametrize("members", [1, 2])
def test_train_then_predict_writes_predictions(capsys, small_csv, tmp_path, members):
    run = tmp_path / "run"
    shapes = tmp_path / "micro.json"
    shapes.write_text(json.dumps(MICRO.to_hf_config()))
    assert main(["train", "--data", str(small_csv), "--model", str(shapes), "--epochs", "1",
                 "--batch-size", "16", "--head-heads", "2", "--head-members", str(members),
                 "--out", str(run), "--no-progress"]) == 0
    for name in ("run.json", "metrics.json", "metrics.csv", "predictions.csv", "parity.png", "loss.png"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_test"] == 48
    assert main(["train", "--data", str(small_csv), "--out", str(run)]) == 2  # never overwrites a run
    queries = tmp_path / "queries.csv"
    pd.read_csv(small_csv)[["rxn"]].head(5).to_csv(queries, index=False)
    assert main(["predict", "--run", str(run), str(queries)]) == 0
    out = pd.read_csv(tmp_path / "queries.predictions.csv")
    assert len(out) == 5 and out["predicted_yield_percent"].between(0, 100).all()
    bad = tmp_path / "bad_queries.csv"
    bad.write_text("rxn\nnot a smiles\nCC>>CC\n")
    code, err = _error(capsys, ["predict", "--run", str(run), str(bad)])
    assert code == 2 and "row 2" in err and "'rxn'" in err


def test_a_run_on_the_token_embeddings_predicts_from_them_again(small_csv, tmp_path):
    run = tmp_path / "run"
    shapes = tmp_path / "micro.json"
    shapes.write_text(json.dumps(MICRO.to_hf_config()))
    assert main(["train", "--data", str(small_csv), "--model", str(shapes), "--epochs", "1",
                 "--batch-size", "16", "--head-heads", "2", "--feature-layer", "0",
                 "--out", str(run), "--no-progress"]) == 0
    assert json.loads((run / "run.json").read_text())["head"]["feature_layer"] == 0
    held_out = pd.read_csv(run / "predictions.csv")
    queries = tmp_path / "queries.csv"
    held_out[["reaction"]].rename(columns={"reaction": "rxn"}).to_csv(queries, index=False)
    assert main(["predict", "--run", str(run), str(queries)]) == 0
    # `predict` rebuilds the model from run.json: it must read the embeddings as training did (the
    # final layer's states would give other yields).
    again = pd.read_csv(tmp_path / "queries.predictions.csv")
    column = "predicted_yield_percent"
    np.testing.assert_allclose(again[column], held_out[column], atol=0.01)


def test_importing_the_package_and_cli_pulls_in_neither_torch_nor_transformers():
    probe = ("import sys, mistral_cl, mistral_cl.cli, mistral_cl.weights, mistral_cl.supervised; "
             "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "mistral_cl.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("continual", "train", "predict", "ingest", "convert", "report"):
        assert command in out


@pytest.mark.parametrize(("option", "mode", "weights", "expected"), [
    ("auto", "head", None, 0),  # a random backbone's frozen blocks: the head reads the embeddings
    ("auto", "lora", None, None),  # blocks that train: their output
    ("auto", "full", None, None),
    ("auto", "head", "weights/", None),  # trained weights: their output
    ("final", "head", None, None),
    ("1", "head", "weights/", 1),
])
def test_the_feature_layer_option_resolves_to_a_block_count(option, mode, weights, expected):
    assert feature_layer(option, mode, weights) == expected
