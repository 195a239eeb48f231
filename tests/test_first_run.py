"""Specifications of benchmarks/first_run.py's pure parts: reading pytest's output, building the record,
and refusing to time a checkout with uncommitted changes. Nothing here runs `make`."""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import first_run  # noqa: E402

PYTEST_OUTPUT = """\
........................................................................ [ 40%]
..........F.....s.......................................................  [100%]
============================= slowest 20 durations =============================
95.31s call     tests/test_multihost.py::test_two_processes_equal_one
12.04s setup    tests/test_continual_runs.py::test_resume_is_exact
0.51s teardown tests/test_checkpoint.py::test_commit_is_atomic

(57 durations < 0.005s hidden.  Use -vv to show these durations.)
=========================== short test summary info ============================
FAILED tests/test_cli.py::test_help - AssertionError
1 failed, 142 passed, 1 skipped, 2 warnings in 512.34s (0:08:32)
"""


def test_the_summary_line_gives_each_count_and_the_seconds():
    summary = first_run.parse_pytest_summary(PYTEST_OUTPUT)
    assert summary == {"passed": 142, "failed": 1, "skipped": 1, "warnings": 2, "seconds": 512.34}


def test_a_summary_line_between_rules_is_read_too_and_errors_are_counted():
    text = "===== 3 passed, 1 error in 7.50s =====\n"
    assert first_run.parse_pytest_summary(text) == {"passed": 3, "failed": 0, "errors": 1, "seconds": 7.5}


def test_output_without_a_summary_line_gives_none():
    assert first_run.parse_pytest_summary("All checks passed!\nmake: *** [test] Error 1\n") is None


def test_the_durations_table_is_read_slowest_first():
    rows = first_run.parse_durations(PYTEST_OUTPUT)
    assert [r["seconds"] for r in rows] == [95.31, 12.04, 0.51]
    assert rows[0] == {"seconds": 95.31, "phase": "call",
                       "test": "tests/test_multihost.py::test_two_processes_equal_one"}
    assert rows[2]["phase"] == "teardown"
    assert first_run.parse_durations("1 passed in 0.1s\n") == []


def test_the_tail_shows_only_the_last_redraw_of_a_progress_bar():
    text = "start\nnaive:  10%|#   \rnaive:  50%|#####  \rnaive: 100%|##########\nACC 0.5\n\n"
    assert first_run.tail(text, lines=2) == "naive: 100%|##########\nACC 0.5"


def _step(name, wall, code=0):
    return {"name": name, "command": f"make {name}", "exit_code": code, "wall_s": wall, "cpu_s": wall}


def test_each_target_counts_the_steps_a_fresh_clone_runs():
    steps = [_step("install", 100.0), _step("demo", 150.0), _step("install_test", 200.0),
             _step("test", 301.0)]
    record = first_run.build_record(date="2026-11-26T00:00:00+00:00", commit="abc",
                                    machine_info={"cpu_count": 2}, load_before=(0.1, 0.2, 0.3),
                                    load_after=(1.0, 1.1, 1.2), steps=steps, settings={})
    targets = {t["steps"][-1]: t for t in record["targets"]}
    assert targets["demo"]["wall_s"] == 250.0 and targets["demo"]["met"] is True
    assert targets["test"]["wall_s"] == 601.0 and targets["test"]["met"] is False
    assert record["load_average"] == {"before": [0.1, 0.2, 0.3], "after": [1.0, 1.1, 1.2]}
    assert record["git_commit"] == "abc" and record["steps"] == steps


def test_a_target_whose_steps_failed_or_did_not_run_is_not_judged():
    steps = [_step("install", 100.0), _step("demo", 50.0, code=1)]
    targets = first_run.judge(steps)
    assert all(t["met"] is None and t["wall_s"] is None for t in targets)


def test_the_plan_leaves_out_what_is_skipped():
    assert [s.name for s in first_run.plan(False, False)] == ["install", "demo", "install_test", "test"]
    assert [s.name for s in first_run.plan(True, False)] == ["install", "install_test", "test"]
    assert [s.name for s in first_run.plan(False, True)] == ["install", "demo"]


def test_the_environment_is_a_new_users_with_the_virtualenv_first(monkeypatch, tmp_path):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/warm")
    monkeypatch.setenv("MISTRAL_CL_JAX_CACHE", "/warm")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = first_run.fresh_env(tmp_path / "venv", tmp_path / "cold")
    assert env["PATH"].split(":")[0] == str(tmp_path / "venv" / "bin")
    assert env["MISTRAL_CL_JAX_CACHE"] == str(tmp_path / "cold")
    assert "JAX_COMPILATION_CACHE_DIR" not in env and "PYTHONPATH" not in env
    assert "MISTRAL_CL_JAX_CACHE" not in first_run.fresh_env(tmp_path / "venv", None)


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q")
    (path / "Makefile").write_text("demo:\n\ttrue\n")
    _git(path, "add", "Makefile")
    _git(path, "commit", "-q", "-m", "one")
    return path


def test_a_committed_tree_has_no_uncommitted_changes_but_the_output_file(repo):
    out = repo / "first_run.json"
    out.write_text("{}")
    assert first_run.uncommitted_changes(repo, ignore=[out]) == []
    assert first_run.uncommitted_changes(repo) == ["first_run.json"]


def test_a_checkout_with_uncommitted_changes_is_refused_with_exit_code_2(repo, monkeypatch, capsys):
    (repo / "Makefile").write_text("demo:\n\tfalse\n")
    monkeypatch.setattr(first_run, "REPO", repo)
    assert first_run.main(["--out", str(repo / "out.json")]) == 2
    assert "uncommitted changes (Makefile)" in capsys.readouterr().err
    assert not (repo / "out.json").exists()
