#!/usr/bin/env bash
# A Cloud TPU pod slice: every worker (host) runs the same command; jax finds the other workers
# itself, so the CLI only needs --distributed, and the mesh spans every chip of the slice.
#
#   launch/tpu_pod.sh create                     # create the TPU VM slice
#   launch/tpu_pod.sh setup                      # copy this checkout to every worker and install it
#   launch/tpu_pod.sh run [CLI ARGS...]          # python3 -m mistral_cl.cli CLI ARGS... on every worker
#   launch/tpu_pod.sh run -- COMMAND [ARGS...]   # any command, on every worker
#   launch/tpu_pod.sh delete
#
# e.g. the continual main job, full fine-tuning of Mistral-7B sharded over the 16 chips of a v4-32:
#   launch/tpu_pod.sh run continual --distributed --mesh 1x16x1 --mode full \
#       --weights /path/to/Mistral-7B-v0.1 --strategies naive,replay --out runs/tpu-continual
# Every worker feeds its own rows of each batch and writes the checkpoint shards it owns (the run
# directory must be on storage all workers share); worker 0 writes the tables and plots.
# Settings (environment): TPU_NAME and ZONE (required), PROJECT (default: gcloud's),
# ACCELERATOR_TYPE (default v4-32), RUNTIME_VERSION (default tpu-ubuntu2204-base),
# REMOTE_DIR (default mistral-cl, in each worker's home directory).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 ]] || usage
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
accelerator=${ACCELERATOR_TYPE:-v4-32}
runtime=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
remote_dir=${REMOTE_DIR:-mistral-cl}
project=(${PROJECT:+--project="$PROJECT"})
tpu_vm() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" "${project[@]}"; }
on_all_workers() { tpu_vm ssh "$TPU_NAME" --worker=all --command="$1"; }

action=$1
shift
case $action in
    create)
        tpu_vm create "$TPU_NAME" --accelerator-type="$accelerator" --version="$runtime"
        ;;
    setup)
        archive=$(mktemp -t mistral-cl.XXXXXX.tar.gz)
        trap 'rm -f "$archive"' EXIT
        # Tracked and untracked-but-not-ignored files: exactly this working tree, without outputs.
        git ls-files -z --cached --others --exclude-standard | tar czf "$archive" --null -T -
        tpu_vm scp "$archive" "$TPU_NAME":mistral-cl.tar.gz --worker=all
        on_all_workers "mkdir -p $remote_dir && tar xzf mistral-cl.tar.gz -C $remote_dir \
            && cd $remote_dir && python3 -m pip install --quiet -e '.[tpu]'"
        ;;
    run)
        if [[ ${1:-} == "--" ]]; then
            shift
            [[ $# -ge 1 ]] || usage
            cmd=("$@")
        else
            cmd=(python3 -m mistral_cl.cli "$@")
        fi
        on_all_workers "cd $remote_dir && $(printf '%q ' "${cmd[@]}")"
        ;;
    delete)
        tpu_vm delete "$TPU_NAME" --quiet
        ;;
    *)
        usage
        ;;
esac
