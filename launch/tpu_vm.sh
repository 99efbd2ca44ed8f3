#!/usr/bin/env bash
# Run an rhmdiff config on a Cloud TPU VM pod slice: create (or reuse) it, copy the code,
# install on every worker, run on all workers with a shared (GCS) workdir, stream the logs.
#
#   launch/tpu_vm.sh --project P --zone us-central2-b --tpu rhmdiff-v4-32 \
#       --accelerator v4-32 --runtime tpu-ubuntu2204-base \
#       --config configs/rhm_L3.py:paper --workdir gs://BUCKET/runs/rhm_L3 \
#       [--override --config.train.lr=0.1 ...] [--delete] [--dry_run]
#
# --dry_run prints every command instead of running it. JAX on each worker finds the pod
# through Cloud TPU auto-detection (config.distributed=True makes rhmdiff call
# jax.distributed.initialize()).
set -euo pipefail
project="" zone="" tpu="rhmdiff" accelerator="v4-32" runtime="tpu-ubuntu2204-base"
config="" workdir="" delete=0 dry_run=0 overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) project="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --tpu) tpu="$2"; shift 2 ;;
    --accelerator) accelerator="$2"; shift 2 ;;
    --runtime) runtime="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --override) overrides+=("$2"); shift 2 ;;
    --delete) delete=1; shift ;;
    --dry_run) dry_run=1; shift ;;
    *) echo "tpu_vm.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for name in project zone config workdir; do
  [[ -n "${!name}" ]] || { echo "tpu_vm.sh: --$name is required" >&2; exit 2; }
done

run() { if [[ $dry_run == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }
gcloud_tpu=(gcloud compute tpus tpu-vm --project="$project" --zone="$zone")

if [[ $dry_run == 1 ]] || ! "${gcloud_tpu[@]}" describe "$tpu" > /dev/null 2>&1; then
  run "${gcloud_tpu[@]}" create "$tpu" --accelerator-type="$accelerator" --version="$runtime"
fi
if [[ $dry_run == 1 ]]; then
  archive="${TMPDIR:-/tmp}/rhmdiff.XXXXXX/rhmdiff.tar.gz"
else
  tmp_dir=$(mktemp -d "${TMPDIR:-/tmp}/rhmdiff.XXXXXX")  # unpredictable, private, removed on exit
  trap 'rm -rf "$tmp_dir"' EXIT
  archive="$tmp_dir/rhmdiff.tar.gz"
fi
run git archive --format=tar.gz -o "$archive" HEAD
run "${gcloud_tpu[@]}" scp "$archive" "$tpu":rhmdiff.tar.gz --worker=all
run "${gcloud_tpu[@]}" ssh "$tpu" --worker=all --command="mkdir -p rhmdiff && tar -xzf rhmdiff.tar.gz -C rhmdiff && cd rhmdiff && pip install -e '.[tpu,text]'"
main_cmd=(python -m rhmdiff.main "--config=$config" "--workdir=$workdir" --config.distributed=True "${overrides[@]}")
run "${gcloud_tpu[@]}" ssh "$tpu" --worker=all --command="cd rhmdiff && $(printf '%q ' "${main_cmd[@]}")"
if [[ $delete == 1 ]]; then
  run "${gcloud_tpu[@]}" delete "$tpu" --quiet
fi
