#!/usr/bin/env bash
# Runs NPROC processes of one command on this machine, as if each were a host of a multi-host job.
# Each process sees DEVICES_PER_PROC simulated CPU devices and joins the others through a coordinator
# on 127.0.0.1, so the multi-host code path (global mesh, per-process batches, gloo collectives) can
# be tested without a cluster.
#
#   launch/local_multiprocess.sh NPROC DEVICES_PER_PROC [CLI ARGS...]      # python -m mistral_cl.cli ...
#   launch/local_multiprocess.sh NPROC DEVICES_PER_PROC -- COMMAND [ARGS...]
#
# Every process gets MISTRAL_CL_COORDINATOR, MISTRAL_CL_NUM_PROCESSES and MISTRAL_CL_PROCESS_ID
# (read by `sharding.initialize`, i.e. the CLI's --distributed). Process 0 prints to this terminal;
# the others log to $MISTRAL_CL_LOG_DIR/process_<i>.log (a fresh temporary directory by default),
# shown if they fail. The first failure stops every process; the exit status is that failure's.
# MISTRAL_CL_PORT picks the coordinator port (default: a free one); XLA_FLAGS are passed on.
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 2 ]] || usage
nproc=$1 devices=$2
shift 2
[[ $nproc =~ ^[1-9][0-9]*$ && $devices =~ ^[1-9][0-9]*$ ]] || usage
if [[ ${1:-} == "--" ]]; then
    shift
    [[ $# -ge 1 ]] || usage
    cmd=("$@")
else
    cmd=("${PYTHON:-python3}" -m mistral_cl.cli "$@")
fi

port=${MISTRAL_CL_PORT:-$("${PYTHON:-python3}" -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
log_dir=${MISTRAL_CL_LOG_DIR:-$(mktemp -d -t mistral-cl-procs.XXXXXX)}
mkdir -p "$log_dir"

# Inherited XLA flags are kept, except a device count of their own (pytest sets one).
xla_flags="$(sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g' <<<"${XLA_FLAGS:-}")"
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT TERM

for ((i = 0; i < nproc; i++)); do
    export MISTRAL_CL_COORDINATOR=127.0.0.1:$port MISTRAL_CL_NUM_PROCESSES=$nproc MISTRAL_CL_PROCESS_ID=$i
    export JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$devices $xla_flags"
    if ((i == 0)); then
        "${cmd[@]}" &
    else
        "${cmd[@]}" >"$log_dir/process_$i.log" 2>&1 &
    fi
    pids+=($!)
done

status=0
for ((n = 0; n < nproc; n++)); do
    wait -n || {
        status=$?
        # wait -n does not say which process failed; show every log once the others are stopped.
        stop_all
        wait || true
        for ((i = 1; i < nproc; i++)); do
            echo "----- process $i ($log_dir/process_$i.log) -----" >&2
            tail -n 40 "$log_dir/process_$i.log" >&2 || true
        done
        echo "local_multiprocess: a process exited with status $status; stopped the others" >&2
        exit "$status"
    }
done
