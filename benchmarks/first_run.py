"""A new user's first run: `make demo` and `make test` on a fresh clone, in a fresh virtualenv.

    python benchmarks/first_run.py [--skip-demo] [--skip-test] [--keep] [--out PATH] [--allow-dirty]

Clones this checkout's HEAD commit into a temporary directory (with `../shared` linked beside it when
the checkout has one, for the data workbook), creates a virtualenv there with `python -m venv`, and
runs the README's two commands with that virtualenv first on PATH. Each step is timed on its own:

    install        make install         the package and the data, into the empty virtualenv
    demo           make demo            its pip step finds everything installed
    install_test   make install-test    the test extra (torch, transformers, ruff, pytest)
    test           make test            ruff and pytest; its pip step finds everything installed

A new user's `make demo` on a fresh clone costs install + demo; a new user's `make test` costs
install + install_test + test. The targets (5 and 10 minutes of wall time on 2 cores) are judged on
those sums, and every step's wall time, CPU time of its processes, exit code and output tail are
recorded as well, in benchmarks/results/first_run.json, with the date, the machine, the commit and the
load average. A missed target is recorded like a met one.

The JAX compilation cache starts cold: the demo gets MISTRAL_CL_JAX_CACHE set to a new, empty
directory, and the test step runs without it, so the suite applies its own setting (compile from
scratch, as on CI). JAX_COMPILATION_CACHE_DIR, XLA_FLAGS, PYTHONPATH and other variables that would
change what a new user sees are removed. pip's download cache is the user's, as it would be. pytest
runs with `--durations=20` (through PYTEST_ADDOPTS) so the record names the slowest tests.

The timing must be of a commit: with uncommitted changes in the checkout (other than the output file),
the script stops with exit code 2 unless `--allow-dirty` is given. It takes 20 minutes or more on 2
cores; run it on an otherwise idle machine. Exit code 0 when every step succeeded, 1 when one failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "first_run.json"
TARGETS_S = {"demo": 300.0, "test": 600.0}
# What each target counts: the steps a new user's command runs on a fresh clone.
TARGET_STEPS = {"demo": ("install", "demo"), "test": ("install", "install_test", "test")}
PYTEST_DURATIONS = 20
TAIL_LINES = 40
# Settings a new user would not have, which change what the commands do or how fast.
CLEARED = ("JAX_COMPILATION_CACHE_DIR", "MISTRAL_CL_JAX_CACHE", "XLA_FLAGS", "JAX_PLATFORMS", "PYTHONPATH",
           "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


@dataclass(frozen=True)
class Step:
    name: str
    command: tuple[str, ...]
    needs: tuple[str, ...] = ()  # steps that must have succeeded first


def plan(skip_demo: bool, skip_test: bool) -> list[Step]:
    """The steps to time, in order."""
    steps = [Step("install", ("make", "install"))]
    if not skip_demo:
        steps.append(Step("demo", ("make", "demo"), needs=("install",)))
    if not skip_test:
        steps.append(Step("install_test", ("make", "install-test"), needs=("install",)))
        steps.append(Step("test", ("make", "test"), needs=("install", "install_test")))
    return steps


# ------------------------------------------------------------------------------------------ checks


def uncommitted_changes(repo: Path, ignore: Sequence[Path] = ()) -> list[str]:
    """Paths with uncommitted changes in `repo` (modified, staged, deleted or untracked and not ignored),
    leaving out `ignore` (the output file, which this script itself rewrites)."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo,
                         capture_output=True, text=True, check=True).stdout
    skipped = {p.resolve() for p in ignore}
    paths = []
    for line in out.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        if (repo / path).resolve() not in skipped:
            paths.append(path)
    return paths


def head_commit(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


# --------------------------------------------------------------------------------- output parsing


_SUMMARY = re.compile(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in ([\d.]+)s\b")
_COUNT = re.compile(r"(\d+) ([a-z]+)")
_PLURAL = {"error": "errors", "warning": "warnings"}
_DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S.*?)\s*$")


def parse_pytest_summary(text: str) -> dict[str, Any] | None:
    """pytest's last summary line (`3 failed, 290 passed, 2 skipped in 512.34s (0:08:32)`, with or
    without the `=` rules) as counts and seconds; None when the output has none."""
    found = None
    for line in text.splitlines():
        match = _SUMMARY.match(line.strip())
        if match:
            found = match
    if found is None:
        return None
    counts = {_PLURAL.get(word, word): int(n) for n, word in _COUNT.findall(found.group(1))}
    return {"passed": counts.pop("passed", 0), "failed": counts.pop("failed", 0), **counts,
            "seconds": float(found.group(2))}


def parse_durations(text: str) -> list[dict[str, Any]]:
    """The rows of pytest's `slowest N durations` table: seconds, phase and test id, slowest first."""
    rows: list[dict[str, Any]] = []
    inside = False
    for line in text.splitlines():
        if "slowest" in line and "durations" in line:
            inside, rows = True, []
            continue
        if inside:
            match = _DURATION.match(line)
            if match:
                rows.append({"seconds": float(match.group(1)), "phase": match.group(2),
                             "test": match.group(3)})
            elif rows or line.startswith("="):
                inside = False
    return rows


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines as a terminal would show them (a progress bar's last redraw only)."""
    shown = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    while shown and not shown[-1].strip():
        shown.pop()
    return "\n".join(shown[-lines:])


# ------------------------------------------------------------------------------------------ record


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or
                            platform.machine(), "cpu_count": os.cpu_count(),
                            "python": platform.python_version()}
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        for key, name in (("MemTotal", "memory_gib"), ("MemAvailable", "memory_available_gib")):
            if key in fields:
                info[name] = round(int(fields[key].split()[0]) / 2**20, 1)
    return info


def judge(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target against the summed wall time of the steps it counts; not judged when one of those
    steps did not run or failed."""
    by_name = {s["name"]: s for s in steps}
    verdicts = []
    for target, limit in TARGETS_S.items():
        counted = TARGET_STEPS[target]
        ran = all(by_name.get(n, {}).get("exit_code") == 0 for n in counted)
        wall = sum(by_name[n]["wall_s"] for n in counted if n in by_name and "wall_s" in by_name[n])
        verdicts.append({"target": f"make {target} on a fresh clone <= {limit / 60:g} min wall",
                         "steps": list(counted), "wall_s": round(wall, 1) if ran else None,
                         "limit_s": limit, "met": (wall <= limit) if ran else None})
    return verdicts


def build_record(*, date: str, commit: str, machine_info: dict[str, Any], load_before: Sequence[float],
                 load_after: Sequence[float], steps: Sequence[dict[str, Any]],
                 settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of one first run: when, where, which commit, what each step took, and the
    targets with whether they were met."""
    return {"benchmark": "first_run", "date": date, "git_commit": commit, "machine": machine_info,
            "load_average": {"before": [round(x, 2) for x in load_before],
                             "after": [round(x, 2) for x in load_after]},
            "settings": settings, "steps": list(steps), "targets": judge(steps)}


# -------------------------------------------------------------------------------------------- run


def run_step(step: Step, cwd: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Runs one step, echoing its output and saving it to `log`; returns its measurements."""
    print(f"\n=== {step.name}: {' '.join(step.command)}", flush=True)
    load = os.getloadavg()[0]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("wb") as sink:
        proc = subprocess.Popen(step.command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            sink.write(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        code = proc.wait()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    text = log.read_bytes().decode("utf-8", errors="replace")
    result: dict[str, Any] = {"name": step.name, "command": " ".join(step.command), "exit_code": code,
                              "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                              "load_1min_before": round(load, 2),
                              "load_1min_after": round(os.getloadavg()[0], 2), "output_tail": tail(text)}
    if step.name == "test":
        result["pytest"] = parse_pytest_summary(text)
        result["slowest_tests"] = parse_durations(text)
    print(f"=== {step.name}: exit {code}, {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    return result


def fresh_env(venv: Path, jax_cache: Path | None) -> dict[str, str]:
    """The environment of a new user who activated `venv`."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTEST_ADDOPTS"] = f"--durations={PYTEST_DURATIONS}"
    if jax_cache is not None:
        env["MISTRAL_CL_JAX_CACHE"] = str(jax_cache)
    return env


def prepare(workdir: Path, commit: str) -> Path:
    """A clone of `commit` under `workdir`, with ../shared linked beside it if this checkout has one."""
    clone = workdir / REPO.name
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "fetch", "--quiet", str(REPO), commit], cwd=clone, check=True)
    subprocess.run(["git", "checkout", "--quiet", "--detach", commit], cwd=clone, check=True)
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (workdir / "shared").symlink_to(shared.resolve(), target_is_directory=True)
    return clone


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-demo", action="store_true", help="do not time `make demo`")
    parser.add_argument("--skip-test", action="store_true", help="do not time `make test`")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone, virtualenv and logs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where the record goes (default benchmarks/results/first_run.json)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="time HEAD even though the checkout has uncommitted changes")
    args = parser.parse_args(argv)

    if shutil.which("make") is None or shutil.which("git") is None:
        print("first_run: needs `git` and `make` on PATH", file=sys.stderr)
        return 2
    dirty = uncommitted_changes(REPO, ignore=[args.out])
    if dirty and not args.allow_dirty:
        print(f"first_run: the checkout has uncommitted changes ({', '.join(dirty[:5])}"
              f"{', ...' if len(dirty) > 5 else ''}); the clone would time HEAD without them. Commit "
              "them, or pass --allow-dirty.", file=sys.stderr)
        return 2

    commit, date = head_commit(REPO), datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="mistral-cl-first-run-"))
    steps: list[dict[str, Any]] = []
    try:
        clone = prepare(workdir, commit)
        venv = workdir / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        jax_cache = workdir / "jax-cache"
        jax_cache.mkdir()
        for step in plan(args.skip_demo, args.skip_test):
            failed = [n for n in step.needs if not any(s["name"] == n and s["exit_code"] == 0 for s in steps)]
            if failed:
                steps.append({"name": step.name, "command": " ".join(step.command), "exit_code": None,
                              "skipped": f"{', '.join(failed)} did not succeed"})
                continue
            env = fresh_env(venv, jax_cache if step.name == "demo" else None)
            steps.append(run_step(step, clone, env, workdir / f"{step.name}.log"))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    settings = {"python": sys.executable, "venv": "python -m venv, fresh",
                "jax_cache": "demo: MISTRAL_CL_JAX_CACHE = a new empty directory; test: unset (the suite's "
                             "own setting)",
                "pytest_addopts": f"--durations={PYTEST_DURATIONS}", "pip_cache": "the user's, not cleared",
                "uncommitted_changes_not_timed": dirty, "shared_linked": (REPO.parent / "shared").is_dir()}
    record = build_record(date=date, commit=commit, machine_info=machine(), load_before=load_before,
                          load_after=os.getloadavg(), steps=steps, settings=settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    for step in steps:
        print(f"  {step['name']:<13} exit {step['exit_code']}  {step.get('wall_s', '-')} s wall  "
              f"{step.get('cpu_s', '-')} s CPU")
    for verdict in record["targets"]:
        print(f"  {verdict['target']}: {verdict['wall_s']} s, met: {verdict['met']}")
    return 0 if steps and all(s["exit_code"] == 0 for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
