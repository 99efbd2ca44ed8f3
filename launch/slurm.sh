#!/usr/bin/env bash
# Submit launch/slurm.sbatch: N nodes x G GPUs, one process per GPU.
#
#   launch/slurm.sh --nodes 1 --gpus_per_node 4 --time 24:00:00 \
#       --config configs/rhm_L3.py:paper --workdir /shared/runs/rhm_L3 [--override ...] [--dry_run]
#
# Before sbatch (also with --dry_run), `python -m rhmdiff.main ... --check` runs here with the
# same config, overrides and workdir (PYTHON names the interpreter; default python): a bad
# value or a workdir the job would refuse stops the script with its one-line error, and no job
# is submitted. The job gets SIGTERM 120 s before its time limit (and on preemption): rhmdiff
# saves a checkpoint and exits 143, and slurm.sbatch requeues the job (scontrol requeue), which
# resumes from that checkpoint. RHMDIFF_REQUEUE=0 in the environment turns that off.
set -euo pipefail
nodes=1 gpus=4 time_limit="24:00:00" config="" workdir="" dry_run=0 overrides=() partition=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="${2:-}"; shift 2 ;;
    --gpus_per_node) gpus="${2:-}"; shift 2 ;;
    --time) time_limit="${2:-}"; shift 2 ;;
    --partition) partition="${2:-}"; shift 2 ;;
    --config) config="${2:-}"; shift 2 ;;
    --workdir) workdir="${2:-}"; shift 2 ;;
    --override) overrides+=("${2:-}"); shift 2 ;;
    --dry_run) dry_run=1; shift ;;
    *) echo "slurm.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for name in config workdir; do
  [[ -n "${!name}" ]] || { echo "slurm.sh: --$name is required" >&2; exit 2; }
done
for name in nodes gpus; do
  [[ "${!name}" =~ ^[1-9][0-9]*$ ]] || { echo "slurm.sh: --${name/gpus/gpus_per_node} must be a positive integer, got '${!name}'" >&2; exit 2; }
done
[[ "$time_limit" =~ ^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$ ]] || { echo "slurm.sh: --time must be SLURM's [D-]HH:MM:SS, got '$time_limit'" >&2; exit 2; }
args=("--config=$config" "--workdir=$workdir" ${overrides[@]+"${overrides[@]}"})
"${PYTHON:-python}" -m rhmdiff.main "${args[@]}" --check > /dev/null
cmd=(sbatch --nodes="$nodes" --ntasks-per-node="$gpus" --gpus-per-node="$gpus" --time="$time_limit")
[[ -n "$partition" ]] && cmd+=(--partition="$partition")
cmd+=("$(dirname "$0")/slurm.sbatch" "${args[@]}")
if [[ $dry_run == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; else "${cmd[@]}"; fi
