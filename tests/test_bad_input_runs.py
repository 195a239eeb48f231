"""What bad input gets from `train`, `continual`, `ingest`, `predict` and `report`: exit code 2 with a
message naming the file, row and column and what to do, and not a byte of what is already saved
changed; or, for input that is valid but doubtful, a visible warning. One `train` and one `continual`
run of a micro model (1 epoch) serve every case that needs a trained model."""

import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from continual_fixtures import MICRO, coupling_tasks_csv, micro_config

from mistral_cl.cli import main
from mistral_cl.continual import runner
from mistral_cl.runlock import run_lock

RUN_OPTIONS = ["--head-heads", "2", "--epochs", "1", "--batch-size", "16", "--no-progress"]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `mistral-cl ARGV` (usable in module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def digest(path: Path) -> dict[str, str]:
    """Every file under `path` (or `path` itself) and the hash of its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def coupling(n: int, halide: str = "I") -> str:
    """A reaction of n chain carbons that no run here has yet (an other boronic acid)."""
    return f"{'C' * n}{halide}.OB(O)c1ccc(CC)cc1O>>{'C' * n}c1ccc(CC)cc1O"


KNOWN = "CBr.OB(O)c1ccc(C)cc1>>Cc1ccc(C)cc1"  # in the runs' Br-coupling task (see coupling_tasks_csv)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


@pytest.fixture(scope="module")
def micro(folder) -> Path:
    """The micro backbone as a config.json that reads at most 64 tokens (the reactions here have ~30)."""
    path = folder / "micro.json"
    path.write_text(json.dumps(MICRO.to_hf_config() | {"max_position_embeddings": 64}))
    return path


@pytest.fixture(scope="module")
def tasks_csv(folder) -> Path:
    return coupling_tasks_csv(folder / "tasks.csv", {"Br": 0.7, "I": 0.3})


@pytest.fixture(scope="module")
def trained(folder, micro, tasks_csv) -> tuple[Path, str]:
    run = folder / "train"
    code, out, err = run_cli(["train", "--data", tasks_csv, "--task-columns", "task", "--model", micro,
                              "--out", run, *RUN_OPTIONS])
    assert code == 0, err
    return run, out


@pytest.fixture(scope="module")
def continual_run(folder, micro, tasks_csv) -> Path:
    run = folder / "continual"
    code, _, err = run_cli(["continual", "--data", tasks_csv, "--task-columns", "task", "--model", micro,
                            "--mode", "head", "--strategies", "naive,adapters,replay-snapshot", "--out", run,
                            *RUN_OPTIONS])
    assert code == 0, err
    return run


def small_csv(folder: Path, name: str, rows: list[tuple[str, object]]) -> Path:
    path = folder / name
    pd.DataFrame(rows, columns=["rxn", "yield"]).to_csv(path, index=False)
    return path


# --- train ------------------------------------------------------------------------------------


def test_train_states_the_unit_and_writes_percent_yields_people_can_join_back(trained, tasks_csv):
    run, out = trained
    assert "yields read as percent (0-100), detected from the values" in out
    held_out = pd.read_csv(run / "predictions.csv")
    assert list(held_out.columns) == ["row", "reaction", "task", "yield_percent", "predicted_yield_percent"]
    source = pd.read_csv(tasks_csv)
    measured = source["yield"].iloc[held_out["row"] - 2]  # row 2 is the first data row
    np.testing.assert_allclose(held_out["yield_percent"], measured, atol=1e-4)
    assert (held_out["yield_percent"] == held_out["yield_percent"].round(4)).all()  # no float32 noise


@pytest.mark.parametrize(("rows", "message", "bad_rows"), [
    ([(coupling(n), 10 * n) for n in range(1, 6)] + [(coupling(2), 45)], "rows 3, 7: yields 20, 45", "3, 7"),
    ([(coupling(n), round(0.1 * n, 2)) for n in range(1, 8)] + [(coupling(9), 1.5)], "unit is unclear", "9"),
    ([(coupling(n), 10 * n) for n in range(1, 6)] + [(coupling(7), "inf")], "infinite", "7"),
    ([(coupling(n), 10 * n) for n in range(1, 6)] + [(coupling(40), 50)], "maximum length of 64", "7"),
])
def test_train_refuses_a_bad_file_before_making_a_run_directory(folder, micro, rows, message, bad_rows):
    data = small_csv(folder, "bad_train.csv", rows)
    code, _, err = run_cli(["train", "--data", data, "--model", micro, "--out", folder / "never"])
    assert code == 2 and message in err and str(data) in err and f"{bad_rows}" in err and "column" in err
    assert not (folder / "never").exists()


def test_a_failed_task_split_leaves_no_run_directory(folder, micro):
    rows = [(coupling(n), 2 * n) for n in range(1, 40)]
    data = small_csv(folder, "split.csv", rows)
    code, _, err = run_cli(["train", "--data", data, "--model", micro, "--test-fraction", "0.02",
                            "--out", folder / "never"])
    assert code == 2 and "leaves 1 test reaction" in err and "--test-fraction 0.04" in err
    frame = pd.DataFrame({"rxn": [coupling(n) for n in range(1, 8)], "yield": 10,
                          "task": ["a"] * 6 + ["b"]})
    frame.to_csv(folder / "tasks_small.csv", index=False)
    code, _, err = run_cli(["train", "--data", folder / "tasks_small.csv", "--task-columns", "task",
                            "--split", "task", "--model", micro, "--out", folder / "never"])
    assert code == 2 and "task 'b' has 1 reaction" in err and "row 8" in err
    assert not (folder / "never").exists()


@pytest.mark.parametrize("command", ["train", "continual"])
def test_out_must_be_a_new_or_empty_directory(folder, micro, tasks_csv, command):
    mine = folder / f"{command}-mine"
    mine.mkdir()
    (mine / "predictions.csv").write_text("my own predictions\n")
    a_file = folder / f"{command}-notes.txt"
    a_file.write_text("notes\n")
    for out, message in ((mine, "not empty"), (a_file, "is a file")):
        before = digest(out)
        code, _, err = run_cli([command, "--data", tasks_csv, "--task-columns", "task", "--model", micro,
                                "--out", out, *RUN_OPTIONS])
        assert code == 2 and message in err and "--out" in err and digest(out) == before


# --- predict ----------------------------------------------------------------------------------


def test_predict_keeps_every_input_column_next_to_the_prediction(trained, folder):
    run, _ = trained
    queries = folder / "queries.csv"
    queries.write_text(f"id,rxn,note\nA1,{coupling(3)},first\n\nA2,{coupling(4, 'Br')},second\n")
    code, out, err = run_cli(["predict", "--run", run, queries])
    assert code == 0, err
    written = pd.read_csv(folder / "queries.predictions.csv")
    assert list(written.columns) == ["id", "rxn", "note", "predicted_yield_percent"]
    assert written["id"].tolist() == ["A1", "A2"] and written["predicted_yield_percent"].between(0, 100).all()
    assert "yield in percent" in out
    assert run_cli(["predict", "--run", run, queries])[0] == 0  # its own output may be replaced


@pytest.mark.parametrize("case", ["input itself", "missing folder", "a user's file", "a run file",
                                  "directory input", "task on a train run", "strategy on a train run"])
def test_predict_never_overwrites_and_never_tracebacks(trained, folder, case):
    run, _ = trained
    queries = folder / "q.csv"
    queries.write_text(f"rxn\n{coupling(3)}\n")
    mine = folder / "mine.csv"
    mine.write_text("my,data\n1,2\n")
    argv, message = {
        "input itself": (["--output", queries], "is the input file itself"),
        "missing folder": (["--output", folder / "nowhere" / "out.csv"], "does not exist"),
        "a user's file": (["--output", mine], "was not written by `mistral-cl predict`"),
        "a run file": (["--output", run / "predictions.csv"], "is a file of the run directory"),
        "directory input": ([], "is a directory"),
        "task on a train run": (["--task", "Br-coupling"], "--task does not apply"),
        "strategy on a train run": (["--strategy", "naive"], "--strategy does not apply"),
    }[case]
    file = folder if case == "directory input" else queries
    before = {**digest(run), **digest(queries), **digest(mine)}
    code, _, err = run_cli(["predict", "--run", run, file, *argv])
    assert code == 2 and message in err and "Traceback" not in err
    assert {**digest(run), **digest(queries), **digest(mine)} == before


def test_predict_with_a_continual_run_uses_a_strategys_final_model(continual_run, folder):
    queries = folder / "cq.csv"
    queries.write_text(f"rxn\n{coupling(3)}\n{coupling(5, 'Br')}\n")

    def predicted(*options: str) -> np.ndarray:
        code, _, err = run_cli(["predict", "--run", continual_run, queries, "--output", folder / "cq.out.csv",
                                *options])
        assert code == 0, err
        return pd.read_csv(folder / "cq.out.csv")["predicted_yield_percent"].to_numpy()

    assert predicted("--strategy", "naive").shape == (2,)
    first, second = predicted("--strategy", "adapters", "--task", "Br-coupling"), predicted(
        "--strategy", "adapters", "--task", "I-coupling")
    assert not np.allclose(first, second)  # one model per task
    # replay-snapshot: the first task with its snapshot and the final model, the last with the final one.
    first, second = (predicted("--strategy", "replay-snapshot", "--task", task)
                     for task in ("Br-coupling", "I-coupling"))
    assert first.shape == (2,) and not np.allclose(first, second)
    three = "trained 3 strategies (naive, adapters, replay-snapshot)"
    for options, message in ((["--task", "Br-coupling"], three),
                             (["--strategy", "replay-snapshot"], "--task, one of: Br-coupling, I-coupling"),
                             (["--strategy", "adapters"], "--task, one of: Br-coupling, I-coupling"),
                             (["--strategy", "naive", "--task", "Br-coupling"], "--task does not apply"),
                             (["--strategy", "adapters", "--task", "Cl"], "the run has no task 'Cl'"),
                             (["--strategy", "ewc"], "the run has no strategy 'ewc'")):
        code, _, err = run_cli(["predict", "--run", continual_run, queries, *options])
        assert code == 2 and message in err


def test_a_tasks_models_share_one_frozen_half_on_a_mesh_and_predict_as_on_one_device(continual_run, folder):
    import equinox as eqx
    import jax

    import sharding
    from mistral_cl.prediction import restore_predictor
    from mistral_cl.supervised import predict_file

    mesh = sharding.make_mesh("1x8x1")
    config, models = restore_predictor(continual_run, "replay-snapshot", "Br-coupling", mesh=mesh)
    assert len(models) == 2
    leaves = [jax.tree.leaves(eqx.filter(m, eqx.is_array)) for m in models]
    shared = {id(a) for a in leaves[0]} & {id(b) for b in leaves[1]}
    assert shared and len(shared) < len(leaves[0])  # the backbone is one copy; the heads are their own
    queries = folder / "mq.csv"
    queries.write_text(f"rxn\n{coupling(3)}\n{coupling(5, 'Br')}\n")
    out = {}
    for name, where in (("one", None), ("mesh", mesh)):
        path, _ = predict_file(continual_run, queries, output=folder / f"mq.{name}.csv",
                               strategy="replay-snapshot", task="Br-coupling", mesh=where)
        out[name] = pd.read_csv(path)["predicted_yield_percent"].to_numpy()
    np.testing.assert_allclose(out["mesh"], out["one"], atol=0.02)


# --- continual, report ------------------------------------------------------------------------


def test_resume_with_other_settings_is_refused_not_ignored(continual_run):
    before = digest(continual_run)
    code, _, err = run_cli(["continual", "--resume", continual_run, "--epochs", "3", "--strategies", "ewc"])
    assert code == 2 and "--epochs, --strategies would be ignored" in err
    assert digest(continual_run) == before


def test_report_on_a_run_without_a_round_is_an_error_and_says_what_to_do(folder, tasks_csv):
    config = runner.with_continual(micro_config(tasks_csv), "naive")
    run = runner.create_run(folder / "no-rounds", config)
    code, out, err = run_cli(["report", run])
    assert code == 2 and "nothing to report" in err and f"continual --resume {run}" in err
    assert "(no rows)" not in out


# --- ingest -----------------------------------------------------------------------------------


@pytest.fixture
def run_copy(continual_run, tmp_path) -> Path:
    return Path(shutil.copytree(continual_run, tmp_path / "run"))


@pytest.mark.parametrize(("content", "message", "where"), [
    (f"rxn,yield\n{coupling(3)},40\n", "task 'one' has 1 reaction", "row 2"),
    (f"rxn,yield\n{KNOWN},40\n{coupling(1)},5\n{coupling(2)},6\n{coupling(3)},7\n",
     "already in the run, in task(s) 'Br-coupling'", "row 2"),
    ("rxn;yield\nCC>>CC;5\n", "separated by semicolons", "row 1"),
    ("rxn,yield\n" + "".join(f"{coupling(n)},{n}\n" for n in (1, 2, 3, 4, 40)), "maximum length of 64",
     "row 6"),
    (f"rxn,yield\n{coupling(1)},5\n{coupling(2)},-inf\n{coupling(3)},7\n", "infinite", "row 3"),
])
def test_ingesting_a_bad_file_names_file_and_row_and_changes_nothing(continual_run, tmp_path, content,
                                                                      message, where):
    bad = tmp_path / "one.csv"
    bad.write_text(content)
    before = digest(continual_run)
    code, _, err = run_cli(["ingest", continual_run, bad])
    assert code == 2 and message in err and str(bad) in err and where in err
    assert digest(continual_run) == before


def test_ingesting_a_directory_says_it_is_a_directory(continual_run, folder):
    code, _, err = run_cli(["ingest", continual_run, folder])
    assert code == 2 and "is a directory" in err and "not found" not in err


def test_ingest_reads_the_runs_unit_and_leaves_out_known_reactions_when_asked(run_copy, tmp_path):
    batch = tmp_path / "low.csv"
    rows = [(KNOWN, 0.7)] + [(coupling(n), round(0.05 * n, 2)) for n in range(1, 11)]
    pd.DataFrame(rows, columns=["rxn", "yield"]).to_csv(batch, index=False)
    code, out, err = run_cli(["ingest", run_copy, batch, "--duplicates", "first", "--no-progress"])
    assert code == 0, err
    assert "yields read as percent (the run's unit)" in out
    assert "warning" in err and "every yield lies within [0, 1]" in err and "--yield-unit fraction" in err
    assert "already in the run" in err and "left out of the new task" in err
    stored = pd.read_csv(next((run_copy / "ingested").iterdir()))
    assert len(stored) == 10  # the known reaction stayed out
    np.testing.assert_allclose(sorted(stored["yield"]), [0.0005 * n for n in range(1, 11)], rtol=1e-5)
    assert not (run_copy / ".lock").exists()


def test_repeating_an_interrupted_ingest_is_told_to_resume(run_copy, tmp_path, monkeypatch):
    batch = tmp_path / "batch.csv"
    pd.DataFrame([(coupling(n), 5 * n) for n in range(1, 11)], columns=["rxn", "yield"]).to_csv(batch,
                                                                                               index=False)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.ContinualRun, "train", interrupted)
    assert run_cli(["ingest", run_copy, batch])[0] == 130  # as if Ctrl-C stopped its training
    before = digest(run_copy)
    code, _, err = run_cli(["ingest", run_copy, batch])
    assert code == 2 and f"mistral-cl continual --resume {run_copy}" in err and "--task" not in err
    assert digest(run_copy) == before
    code, out, err = run_cli(["report", run_copy])
    assert code == 0 and "warning: " in err and "naive (2 of 3 rounds)" in err and "naive" in out


def test_a_second_command_on_a_busy_run_is_told_to_wait_not_to_resume(run_copy, tmp_path):
    batch = tmp_path / "batch.csv"
    pd.DataFrame([(coupling(n), 5 * n) for n in range(1, 11)], columns=["rxn", "yield"]).to_csv(batch,
                                                                                               index=False)
    before = digest(run_copy)
    with run_lock(run_copy, "ingest"):
        for argv in (["ingest", run_copy, batch], ["continual", "--resume", run_copy]):
            code, _, err = run_cli(argv)
            assert code == 2 and "the run is busy" in err and f"pid {os.getpid()}" in err
            assert "started" in err and "--resume" not in err
    assert digest(run_copy) == before
