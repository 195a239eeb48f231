#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): the Mistral-7B LoRA step's tokens/s, MFU and peak
# memory against the plan, the GPU attention path against the CPU reference, and a short continual run.
# Under 8 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh            # on a GPU; JSON to $OUT/gpu_check.json when OUT is set
#   bash benchmarks/gpu_check.sh --dry      # anywhere, every shape shrunk (the test suite runs this)
#
# Other arguments go to gpu_check.py (--out, --batch, --seq, --remat, --steps; see --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
