import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_benchmarks_readme_is_generated_from_the_recorded_results():
    result = subprocess.run([sys.executable, "benchmarks/readme.py", "--check"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
