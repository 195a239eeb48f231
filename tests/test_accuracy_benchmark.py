"""Specifications of benchmarks/accuracy.py's settings and report (no training here)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import accuracy  # noqa: E402

from mistral_cl.config import ModelConfig  # noqa: E402


def result_rows() -> dict:
    rows = [{"seed": s, "r2": r2, "rmse": 12.0 + s, "mae": 8.0 + s, "seconds": 600.0 + 60 * s,
             "cpu_seconds": 1100.0, "load_average": [2.0, 2.5, 3.0]}
            for s, r2 in enumerate([0.80, 0.84, 0.82])]
    return {"rows": rows, "summary": accuracy.summary(rows)}


def test_the_benchmark_trains_the_default_model_of_the_train_command():
    config = accuracy.train_settings()
    assert config.model == ModelConfig.preset("tiny")
    assert config.adaptation.mode == "head"  # the recipe of the recorded benchmark is the default
    assert (config.train.epochs, config.train.batch_size, config.train.learning_rate) == (80, 16, 1.5e-3)
    assert config.weights is None


def test_train_options_and_shape_overrides_reach_the_settings():
    config = accuracy.train_settings(["--epochs", "3", "--lr", "2e-3"], shape="dim=192,n_layers=3")
    assert (config.train.epochs, config.train.learning_rate) == (3, 2e-3)
    assert (config.model.dim, config.model.n_layers) == (192, 3)
    assert config.model.vocab_size == ModelConfig.preset("tiny").vocab_size


def test_a_misspelt_shape_is_an_error():
    with pytest.raises(ValueError, match="dimm"):
        accuracy.parse_shape("dimm=192")


def test_summary_is_the_mean_and_sample_sd_of_the_seeds():
    summary = result_rows()["summary"]
    assert summary["r2"]["mean"] == pytest.approx(0.82)
    assert summary["r2"]["sd"] == pytest.approx(0.02)
    assert summary["seconds"]["mean"] == pytest.approx(660.0)


def test_the_table_has_a_row_per_seed_then_the_mean_then_the_references():
    lines = accuracy.markdown_table(result_rows()).splitlines()
    assert len(lines) == 2 + 3 + 1 + len(accuracy.REFERENCES)
    assert lines[2].startswith("| 0 | 0.800 | 12.00 | 8.00 | 10.0 | 18.3 | 2.0 / 2.5 / 3.0 |")
    assert "**0.820 ± 0.020**" in lines[5]


def test_the_table_flag_prints_the_table_of_the_recorded_json(tmp_path, capsys):
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps(result_rows()))
    assert accuracy.main(["--table", "--results", str(path)]) == 0
    assert capsys.readouterr().out.strip() == accuracy.markdown_table(result_rows())
