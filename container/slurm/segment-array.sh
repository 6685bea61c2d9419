#!/usr/bin/env bash
# HT-CNNs on Slurm: one job array, each task segments one shard of the input folder with the Apptainer image.
#
#   sbatch --array=0-7 container/slurm/segment-array.sh IN OUT htcnns-0.1.0.sif [segment options]
#
# IN   host folder of cases (mounted read-only at /input); every task sees all of it and picks its own cases.
# OUT  host folder; task i of N writes OUT/shard-i/<case-id>.nii.gz and OUT/shard-i/htcnns-report.json.
#      Each shard needs its own folder: a run clears leftover temporary files in its output folder.
# Extra arguments go to `htcnns segment` (e.g. --case-timeout 1800 --labels brats2021).
#
# Shards are 0-based: the task's index is SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, so --array=0-7 and
# --array=1-8 both give shards 0/8 .. 7/8. Use a contiguous range (no step, no list); a throttle (%4) is fine.
# The shard is passed explicitly (--shard i/N): --containall gives the container a clean environment, without
# the SLURM_* variables. Afterwards merge the shard reports (container/CLUSTERS.md):
#
#   sbatch --dependency=afterany:<array job id> --wrap "apptainer exec --containall --bind OUT \
#       htcnns-0.1.0.sif htcnns report merge OUT/shard-*/htcnns-report.json -o OUT/merged.json"
#
# Exit status of a task is that of `htcnns segment`: 0 all cases written or kept, 1 some case failed (the others
# are written; see the report), 2 nothing could run, 130/143 stopped (rerun the same array to resume).
#SBATCH --job-name=htcnns
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=htcnns-%A_%a.out
#SBATCH --signal=B:TERM@120
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: sbatch --array=0-(N-1) $0 IN OUT IMAGE.sif [segment options]" >&2
  exit 2
fi
input="$(realpath "$1")" output="$(realpath -m "$2")" image="$3"
shift 3
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ] || [ -z "${SLURM_ARRAY_TASK_COUNT:-}" ]; then
  echo "ERROR not a Slurm array task: submit with sbatch --array=0-(N-1)" >&2
  exit 2
fi
index=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))
count=$SLURM_ARRAY_TASK_COUNT
if [ "${SLURM_ARRAY_TASK_STEP:-1}" != 1 ] || [ "$index" -lt 0 ] || [ "$index" -ge "$count" ]; then
  echo "ERROR array task $SLURM_ARRAY_TASK_ID is not in a contiguous range; submit with --array=0-$((count - 1))" >&2
  exit 2
fi
shard_output="$output/shard-$index"
mkdir -p "$shard_output"
echo "htcnns shard $index/$count: $input -> $shard_output (job ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID})"

# The image's entrypoint runs `htcnns segment --input /input --output /output [options]`; HTCNNS_REPORT asks it
# for the run report (it writes none by default, for the BraTS orchestrator). Drop --nv to run on the CPU.
# Run in the background and wait, so the TERM that --signal sends before the time limit reaches Apptainer and
# the run stops cleanly between files (a rerun of the array resumes).
apptainer run --nv --containall \
  --bind "$input":/input:ro --bind "$shard_output":/output \
  --env HTCNNS_REPORT=/output/htcnns-report.json \
  "$image" --shard "$index/$count" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do  # wait was cut short by the forwarded TERM: wait for the real exit
  status=0
  wait "$child" || status=$?
done
exit "$status"
