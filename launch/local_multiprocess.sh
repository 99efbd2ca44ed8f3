#!/usr/bin/env bash
# Run rhmdiff.main as several CPU processes on this machine, each with its own fake devices,
# joined through a localhost coordinator: the same multi-process code path as a TPU pod or
# a multi-node GPU run, without a cluster (used by tests/test_launch.py).
#
#   launch/local_multiprocess.sh [--dry_run] [--num_processes 2] [--devices_per_process 2] \
#       [--port 12355] -- --config=configs/rhm_L3.py --workdir=runs/mp [--config.key=value ...]
set -euo pipefail
dry_run=0 num_processes=2 devices=2 port=12355
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) dry_run=1; shift ;;
    --num_processes) num_processes="$2"; shift 2 ;;
    --devices_per_process) devices="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "local_multiprocess.sh: unknown option $1 (rhmdiff.main arguments go after --)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "local_multiprocess.sh: give the rhmdiff.main arguments after --" >&2; exit 2; }
python="${PYTHON:-python}"
pids=()
for ((i = 0; i < num_processes; i++)); do
  cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=${devices}"
       "JAX_COORDINATOR_ADDRESS=localhost:${port}" "RHMDIFF_NUM_PROCESSES=${num_processes}"
       "RHMDIFF_PROCESS_ID=${i}" "$python" -m rhmdiff.main "$@")
  if [[ $dry_run == 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
  else
    "${cmd[@]}" > >(sed "s/^/[process $i] /") 2>&1 &
    pids+=($!)
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
