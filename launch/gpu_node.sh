#!/usr/bin/env bash
# One process driving every GPU of this node (8 on an HGX node), with settings that suit the
# FSDP/tensor-parallel steps of mistral-cl.
#
#   launch/gpu_node.sh [CLI ARGS...]          # python -m mistral_cl.cli CLI ARGS...
#   launch/gpu_node.sh -- COMMAND [ARGS...]   # any other command, e.g. a benchmark
#
# Install with `pip install -e ".[gpu]"`. The continual main job on an 8-GPU node, full fine-tuning of
# Mistral-7B with weights and optimizer state sharded over the 8 GPUs (ZeRO-3), or LoRA on a 4x2 mesh:
#   launch/gpu_node.sh continual --mesh 1x8x1 --mode full --weights /path/to/Mistral-7B-v0.1 \
#       --strategies naive,replay --out runs/gpu-continual
#   launch/gpu_node.sh continual --mesh 4x2x1 --mode lora --weights /path/to/Mistral-7B-v0.1
# Restrict the GPUs with CUDA_VISIBLE_DEVICES. Anything already in XLA_FLAGS is kept and, coming
# last, overrides the defaults below; so do NCCL_* and XLA_PYTHON_CLIENT_* variables already set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == "--" ]]; then
    shift
    [[ $# -ge 1 ]] || { echo "usage: $0 [CLI ARGS...] | -- COMMAND [ARGS...]" >&2; exit 2; }
    cmd=("$@")
else
    cmd=("${PYTHON:-python3}" -m mistral_cl.cli "$@")
fi

# Overlap collectives (FSDP all-gathers, gradient reduce-scatters, tensor-parallel all-reduces)
# with compute: the one XLA GPU flag NVIDIA's JAX images set by default.
export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${XLA_FLAGS:-}"
# Let XLA take 90% of each GPU up front (default 75%); the rest is for cuDNN/NCCL workspaces.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
# Fail loudly instead of silently falling back to CPU when CUDA cannot start.
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda,cpu}
# NCCL: quiet unless something is wrong; set NCCL_DEBUG=INFO to see the chosen rings/channels.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

if command -v nvidia-smi >/dev/null; then
    echo "gpu_node: $(nvidia-smi -L | wc -l) GPU(s) on $(hostname); running: ${cmd[*]}" >&2
fi
exec "${cmd[@]}"
