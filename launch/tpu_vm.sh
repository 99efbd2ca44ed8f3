#!/usr/bin/env bash
# Run an rhmdiff config on a Cloud TPU VM pod slice: check it, create (or reuse) the slice, copy
# the code, install it on every worker, start the job detached on all workers with a shared
# (GCS) workdir, and print the command that follows its log.
#
#   launch/tpu_vm.sh --project P --zone us-central2-b --tpu rhmdiff-v4-32 \
#       --accelerator v4-32 --runtime tpu-ubuntu2204-base \
#       --config configs/rhm_L3.py:paper --workdir gs://BUCKET/runs/rhm_L3 \
#       [--override --config.train.lr=0.1 ...] [--ship_dirty] [--delete] [--dry_run]
#
# Before anything is created, `python -m rhmdiff.main ... --check` runs here (from the checkout's
# root, with the same config, overrides and workdir; PYTHON names the interpreter) and a bad
# value stops the script with its one-line error (an input that is not on this machine does
# not: the workers read it); after the install, the same check runs on worker 0, where the
# inputs and the gs:// workdir can be read, before the job starts. The code shipped is
# `git archive HEAD`; a working tree with uncommitted changes is refused unless --ship_dirty
# ships it as it is (tracked and untracked files that git does not ignore). The install uses
# constraints.txt. The job runs under nohup in its own session on every worker (it survives the
# ssh session), writing ~/rhmdiff/rhmdiff.log; the script prints the command that follows it.
# --delete waits for the job to end (on worker 0), then deletes the slice. --dry_run prints
# every command instead of running it (and what it would refuse instead of refusing). JAX on
# each worker finds the pod through Cloud TPU auto-detection (config.distributed=True makes
# rhmdiff call jax.distributed.initialize()).
set -euo pipefail
project="" zone="" tpu="rhmdiff" accelerator="v4-32" runtime="tpu-ubuntu2204-base"
config="" workdir="" delete=0 dry_run=0 ship_dirty=0 overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) project="${2:-}"; shift 2 ;;
    --zone) zone="${2:-}"; shift 2 ;;
    --tpu) tpu="${2:-}"; shift 2 ;;
    --accelerator) accelerator="${2:-}"; shift 2 ;;
    --runtime) runtime="${2:-}"; shift 2 ;;
    --config) config="${2:-}"; shift 2 ;;
    --workdir) workdir="${2:-}"; shift 2 ;;
    --override) overrides+=("${2:-}"); shift 2 ;;
    --ship_dirty) ship_dirty=1; shift ;;
    --delete) delete=1; shift ;;
    --dry_run) dry_run=1; shift ;;
    *) echo "tpu_vm.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for name in project zone config workdir; do
  [[ -n "${!name}" ]] || { echo "tpu_vm.sh: --$name is required" >&2; exit 2; }
done
root=$(cd -P "$(dirname "$0")/.." && pwd)
dirty=$(git -C "$root" status --porcelain 2>/dev/null | wc -l)
if [[ $dirty != 0 && $ship_dirty == 0 ]]; then
  why="the working tree has uncommitted changes ($dirty paths in git status): commit them, or ship it as it is with --ship_dirty"
  if [[ $dry_run == 1 ]]; then echo "tpu_vm.sh: would refuse: $why" >&2; else echo "tpu_vm.sh: $why" >&2; exit 2; fi
fi

main_args=("--config=$config" "--workdir=$workdir" --config.distributed=True ${overrides[@]+"${overrides[@]}"})
checked=0
(cd "$root" && "${PYTHON:-python}" -m rhmdiff.main "${main_args[@]}" --check > /dev/null) || checked=$?
# exit 1 is an input (corpus, images) not found here: they are read on the workers, which check again
[[ $checked == 0 || $checked == 1 ]] || exit "$checked"
[[ $checked == 0 ]] || echo "tpu_vm.sh: the inputs are checked again on worker 0" >&2

run() { if [[ $dry_run == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }
gcloud_tpu=(gcloud compute tpus tpu-vm --project="$project" --zone="$zone")
on_workers() { run "${gcloud_tpu[@]}" ssh "$tpu" "$@"; }

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
shipped() {  # the files as they are: tracked (unless deleted) and untracked ones that git does not ignore
  git -C "$root" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [[ -e "$root/$f" ]] && printf '%s\0' "$f"; done
}
if [[ $ship_dirty == 0 ]]; then
  run git -C "$root" archive --format=tar.gz -o "$archive" HEAD
elif [[ $dry_run == 1 ]]; then
  echo "tar -czf $(printf '%q' "$archive") -C $(printf '%q' "$root") --null -T <(the working tree's files: git ls-files --cached --others --exclude-standard)"
else
  shipped | tar -czf "$archive" -C "$root" --null -T -
fi
run "${gcloud_tpu[@]}" scp "$archive" "$tpu":rhmdiff.tar.gz --worker=all
on_workers --worker=all --command="rm -rf rhmdiff && mkdir rhmdiff && tar -xzf rhmdiff.tar.gz -C rhmdiff && cd rhmdiff && pip install -e '.[tpu,text]' -c constraints.txt"
main_cmd=(python -m rhmdiff.main "${main_args[@]}")
on_workers --worker=0 --command="cd rhmdiff && $(printf '%q ' "${main_cmd[@]}")--check > /dev/null"
on_workers --worker=all --command="cd rhmdiff && { setsid nohup $(printf '%q ' "${main_cmd[@]}")> rhmdiff.log 2>&1 < /dev/null & echo \$! > rhmdiff.pid; }"
follow=("${gcloud_tpu[@]}" ssh "$tpu" --worker=0 --command="tail -F rhmdiff/rhmdiff.log")
echo "tpu_vm.sh: the job runs detached on every worker; follow its log with: $(printf '%q ' "${follow[@]}")" >&2
if [[ $delete == 1 ]]; then
  on_workers --worker=0 --command='while kill -0 "$(cat rhmdiff/rhmdiff.pid)" 2>/dev/null; do sleep 60; done; tail -n 5 rhmdiff/rhmdiff.log'
  run "${gcloud_tpu[@]}" delete "$tpu" --quiet
fi
