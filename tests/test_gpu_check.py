"""The prepared GPU check (`benchmarks/gpu_check.sh`) runs on CPU in its dry mode, so it cannot rot
before a GPU is lent."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


def _env() -> dict[str, str]:
    """The test environment, less its eight simulated devices: the check runs as on a one-device CPU."""
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.pop("XLA_FLAGS", "")).strip()
    if flags:  # other flags (the tests' compile settings) still apply
        env["XLA_FLAGS"] = flags
    return env


@pytest.mark.slow
def test_the_dry_run_passes_every_section_on_cpu_and_prints_its_table(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry", "--out", str(out)], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry"] and result["device"]["backend"] == "cpu"
    sections = result["sections"]
    assert list(sections) == ["matmul_peak", "lora_step", "attention_parity", "continual"]
    assert all(s["ok"] for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    step = sections["lora_step"]
    assert step["finite"] and step["tokens_per_s"] > 0 and 0 < step["mfu"]
    attention = {(c["attention"], c["dtype"]): c for c in sections["attention_parity"]["attention"]}
    assert attention[("jax.nn cudnn", "bfloat16")]["skipped"] == "needs a GPU"
    assert attention[("jax.nn xla", "float32")]["ok"]
    assert [r["strategy"] for r in sections["continual"]["rows"]] == ["replay"]
    assert "section continual" in done.stdout and "tiny LoRA step" in done.stdout


def test_without_a_gpu_the_real_check_refuses_to_run_and_points_to_the_dry_run():
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--dry" in done.stderr


def test_the_plan_has_the_row_the_real_check_compares_its_memory_with():
    sizes = gpu_check.Sizes.real(gpu_check.parse_args([]))
    plan = gpu_check.planned_peak(sizes)
    assert plan is not None and 5 < plan["peak_gib"] < 80


def test_random_weights_have_the_planned_dtypes_and_lora_starts_at_zero():
    trainable, frozen = gpu_check.random_lora_model(gpu_check.Sizes.dry().model_config(), "none")
    attention = frozen.backbone.layers.attention
    assert attention.wq.base.weight.dtype.name == "bfloat16"
    assert trainable.backbone.layers.attention.wq.a.dtype.name == "float32"
    assert not trainable.backbone.layers.attention.wq.b.any()
    assert (frozen.backbone.norm.weight == 1).all()
