"""Run directories: a resumed run ends exactly like an uninterrupted one, and `ingest` either adds a
task to every strategy or, for a bad file, exits 2 without touching a byte of the run."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from continual_fixtures import coupling_tasks_csv, micro_config

from mistral_cl.cli import main
from mistral_cl.continual import runner

STRATEGIES = "replay,lwf"  # one keeps memory positions (values), one a previous model (arrays)
RESULTS = ["summary.json", "scores.json", "r2_matrix.csv", "rmse_matrix.csv", "mae_matrix.csv"]


def _config(data):
    return runner.with_continual(micro_config(data, epochs=2), STRATEGIES, memory="reservoir:40",
                                 eval_batch_size=32, buckets=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return coupling_tasks_csv(folder / "tasks.csv", {"Br": 0.7, "I": 0.3, "Cl": 0.5})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    run_dir = runner.create_run(tmp_path_factory.mktemp("runs") / "whole", _config(data))
    runner.run_all(run_dir, show=False)
    return run_dir


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_resumed_run_ends_with_exactly_the_scores_of_an_uninterrupted_one(finished, data, tmp_path):
    run_dir = runner.create_run(tmp_path / "interrupted", _config(data))
    runner.run_all(run_dir, stop_after=1, show=False)  # as if killed after the first task
    assert json.loads((run_dir / "replay" / "summary.json").read_text())["rounds"] == 1
    # One device, as the uninterrupted run had (the test process simulates eight).
    resumed = subprocess.run([sys.executable, "-m", "mistral_cl.cli", "continual", "--resume", str(run_dir),
                              "--mesh", "1x1x1", "--no-progress"], capture_output=True, text=True,
                             env=dict(os.environ), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    for strategy in ("replay", "lwf"):
        for name in RESULTS:
            assert (run_dir / strategy / name).read_text() == (finished / strategy / name).read_text(), name


def test_ingest_adds_a_task_to_every_strategy_and_extends_the_matrices(finished, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    new = tmp_path / "new_batch.csv"
    lines = ["reaction,yield"] + [f"{'C' * n}I.OB(O)c1ccc(CC)cc1O>>{'C' * n}c1ccc(CC)cc1O,{10 * n}"
                                  for n in range(1, 11)]
    new.write_text("\n".join(lines) + "\n")
    assert main(["ingest", str(run_dir), str(new), "--task", "lab-batch-1", "--no-progress"]) == 0
    stream = json.loads((run_dir / "stream.json").read_text())
    assert [t["key"] for t in stream["tasks"]][-1] == "lab-batch-1" and stream["arrivals"] == [3, 4]
    assert (stream["tasks"][-1]["train"], stream["tasks"][-1]["test"]) == (7, 3)
    for strategy in ("replay", "lwf"):
        scores = json.loads((run_dir / strategy / "scores.json").read_text())
        r2 = np.array(scores["matrices"]["r2"], dtype=float)
        assert r2.shape == (4, 4) and np.isnan(r2[:2, 3]).all() and np.isfinite(r2[2:, 3]).all()
        assert scores["learned_at"] == [0, 1, 2, 3]
    assert "lab-batch-1" in (run_dir / "replay" / "r2_matrix.csv").read_text()
    assert "replay" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("rxn,percent\nCCBr.OB(O)c1ccccc1>>CCc1ccccc1,50\n", "missing column 'yield'"),
    ("rxn,yield\nCCBr.OB(O)c1ccccc1>>CCc1ccccc1,50\nnot-a-smiles>>C,40\n", "row 3"),
    ("rxn,yield\n", "no reaction rows"),
    ("", "empty"),
])
def test_ingesting_a_bad_file_exits_2_and_leaves_the_run_unchanged(finished, tmp_path, capsys, content,
                                                                   message):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    before = _tree_digest(finished)
    assert main(["ingest", str(finished), str(bad)]) == 2
    assert message in capsys.readouterr().err
    assert _tree_digest(finished) == before


def test_ingest_refuses_a_run_whose_strategies_have_not_finished(data, tmp_path, capsys):
    run_dir = runner.create_run(tmp_path / "unfinished", _config(data))
    new = tmp_path / "new.csv"
    new.write_text("rxn,yield\n" + "".join(f"{'C' * n}Br.OB(O)c1ccccc1>>{'C' * n}c1ccccc1,{n}\n"
                                           for n in range(1, 6)))
    before = _tree_digest(run_dir)
    assert main(["ingest", str(run_dir), str(new)]) == 2
    assert "--resume" in capsys.readouterr().err and _tree_digest(run_dir) == before


def test_report_redraws_the_plots_and_prints_the_comparison(finished, capsys):
    (finished / "replay" / "r2_heatmap.png").unlink()
    assert main(["report", str(finished)]) == 0
    assert (finished / "replay" / "r2_heatmap.png").exists()
    out = capsys.readouterr().out
    assert "ACC" in out and "BWT" in out and "lwf" in out


def test_bias_report_matches_the_runs_final_scores_and_never_lowers_r2(finished, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import continual_bias

    assert continual_bias.main([str(finished)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    for spec in STRATEGIES.split(","):
        with open(finished / spec / "r2_matrix.csv") as f:
            final = [float(v) for v in f.read().strip().splitlines()[-1].split(",")[1:]]
        mine = [row for row in rows if row[0] == spec]
        assert len(mine) == len(final) == 3
        for row, r2 in zip(mine, final, strict=True):
            assert float(row[5]) == pytest.approx(r2, abs=0.006)  # printed with 2 decimals
            assert float(row[6]) >= float(row[5])  # removing the mean error never raises the MSE
