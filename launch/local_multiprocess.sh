#!/usr/bin/env bash
# Run rhmdiff.main as several CPU processes on this machine, each with its own fake devices,
# joined through a localhost coordinator: the same multi-process code path as a TPU pod or
# a multi-node GPU run, without a cluster (used by tests/test_launch.py).
#
#   launch/local_multiprocess.sh [--dry_run] [--num_processes 2] [--devices_per_process 2] \
#       [--port PORT] -- --config=configs/rhm_L3.py --workdir=runs/mp [--config.key=value ...]
#
# First (also with --dry_run) `python -m rhmdiff.main ARGS --check` runs once: a bad value or a
# workdir the run would refuse stops the script with its one-line error before any process
# starts. PORT defaults to a free port below Linux's ephemeral range (32768-60999), so no
# outgoing connection can take it between this choice and the coordinator's bind. When one
# process fails, the others are stopped; the exit status is the first failure's (143 when
# preempted: rerun to resume).
set -euo pipefail
dry_run=0 num_processes=2 devices=2 port=""
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) dry_run=1; shift ;;
    --num_processes) num_processes="${2:-}"; shift 2 ;;
    --devices_per_process) devices="${2:-}"; shift 2 ;;
    --port) port="${2:-}"; shift 2 ;;
    --) shift; break ;;
    *) echo "local_multiprocess.sh: unknown option $1 (rhmdiff.main arguments go after --)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "local_multiprocess.sh: give the rhmdiff.main arguments after --" >&2; exit 2; }
is_count "$num_processes" || { echo "local_multiprocess.sh: --num_processes must be a positive integer, got '$num_processes'" >&2; exit 2; }
is_count "$devices" || { echo "local_multiprocess.sh: --devices_per_process must be a positive integer, got '$devices'" >&2; exit 2; }
python="${PYTHON:-python}"
env JAX_PLATFORMS=cpu "$python" -m rhmdiff.main "$@" --check > /dev/null
if [[ -z "$port" ]]; then
  port=$("$python" - <<'PY'
import random, socket
for port in random.sample(range(20000, 32000), 200):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    print(port)
    break
PY
)
fi
[[ "$port" =~ ^[0-9]+$ ]] || { echo "local_multiprocess.sh: --port must be a number, got '$port'" >&2; exit 2; }
pids=()
stop_all() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; }
trap 'stop_all; exit 143' TERM INT
for ((i = 0; i < num_processes; i++)); do
  cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=${devices}"
       "JAX_COORDINATOR_ADDRESS=localhost:${port}" "RHMDIFF_NUM_PROCESSES=${num_processes}"
       "RHMDIFF_PROCESS_ID=${i}" "$python" -m rhmdiff.main "$@")
  if [[ $dry_run == 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
  else
    "${cmd[@]}" > >(sed -u "s/^/[process $i] /") 2>&1 &
    pids+=($!)
  fi
done
[[ $dry_run == 1 ]] && exit 0
status=0 running=("${pids[@]}")
while (( ${#running[@]} > 0 )); do
  code=0 finished=""
  wait -n -p finished "${running[@]}" || code=$?
  [[ -n "$finished" ]] || break  # no child left to wait for
  left=()
  for pid in "${running[@]}"; do [[ $pid == "$finished" ]] || left+=("$pid"); done
  running=("${left[@]}")
  if (( code != 0 && status == 0 )); then
    status=$code
    (( code == 143 )) || stop_all  # a failure: the others would wait for it forever
  fi
done
exit $status
