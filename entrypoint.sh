#!/usr/bin/env bash
# HT-CNNs container entrypoint: segment every case under the input folder into <output>/<case-id>.nii.gz.
#
# Two forms (see container/README.md):
#   IMAGE [segment options]            /input -> /output; docker run, BraTS orchestrator 2025 and later
#   IMAGE infer --data_path=DIR --output_path=DIR [--parameters_file=FILE] [--report_path=FILE] [segment options]
#                                      MLCube / MedPerf / BraTS orchestrator up to 2024; "--key value" works too
#   IMAGE evaluate --predictions=DIR --labels=DIR --output_path=FILE [--parameters_file=FILE]
#                                      MedPerf's metrics step: the BraTS 2023 lesion-wise metrics as YAML (JSON
#                                      syntax); the parameters file may name the challenge (challenge: BraTS-GLI)
# Segment options go to `htcnns segment` (e.g. --labels brats2021, --case-timeout 900, --overwrite).
#
# Environment (for testing and special set-ups):
#   HTCNNS_INPUT, HTCNNS_OUTPUT  replace /input and /output in the first form.
#   HTCNNS_REPORT                the JSON run report: a file name, or "none" (the default in both forms: the BraTS
#                                orchestrator reads every file of the output folder as a label map, so nothing
#                                but label maps is written there unless asked; --report_path in the infer form).
#   HTCNNS_QC                    a folder for the QC pictures, index.html and cases.csv (e.g. /output/qc, or a
#                                folder of its own mounted elsewhere); unset: none (same reason as above).
#   TMPDIR                       where a private scratch folder for caches and temporary files is made (default
#                                /tmp, else /dev/shm, which Docker always mounts writable, so --read-only works
#                                without --tmpfs); it is removed on exit. HOME is moved there when not writable.
#
# Exit codes:
#   0          every case segmented (or a valid output kept from an earlier run);
#   1          some case failed, the others were written (one error line each, and the report), or the report
#              could not be written;
#   2          nothing could run: bad arguments, no input folder or no cases, output folder not writable, no
#              writable TMPDIR, missing or tampered weights;
#   130 / 143  stopped by SIGINT / SIGTERM: finished outputs are complete, no partial file is left, a rerun resumes.
set -uo pipefail

die() { echo "ERROR $*" >&2; exit 2; }

input="${HTCNNS_INPUT:-/input}"
output="${HTCNNS_OUTPUT:-/output}"
report="${HTCNNS_REPORT:-none}"
parameters=""
options=()
command=()
# A uid without a passwd entry (docker run --user 12345:12345) has no name; libraries that ask getpass get this one.
export USER="${USER:-htcnns}" LOGNAME="${LOGNAME:-${USER:-htcnns}}"

# The MLCube forms' "--key=value" or "--key value" arguments: known keys into `given`, the rest into `options`.
declare -A given=()
read_keys() {
  local keys=" $1 " key
  shift
  while [ $# -gt 0 ]; do
    key="${1#--}" && key="${key%%=*}"
    if [[ "$1" == --* && "$keys" == *" $key "* ]]; then
      if [[ "$1" == *=* ]]; then
        given[$key]="${1#*=}"
      else
        [ $# -ge 2 ] || die "$1 needs a value"
        given[$key]="$2"
        shift
      fi
    else
      options+=("$1")
    fi
    shift
  done
}

if [ "${1:-}" = evaluate ]; then
  read_keys "predictions labels output_path parameters_file" "${@:2}"
  predictions="${given[predictions]:-}" labels="${given[labels]:-}" result="${given[output_path]:-}"
  parameters="${given[parameters_file]:-}" output="$(dirname "${result:-.}")"
  [ -n "$predictions" ] && [ -n "$labels" ] && [ -n "$result" ] \
    || die "evaluate needs --predictions=DIR --labels=DIR --output_path=FILE"
  challenge="BraTS-GLI"
  if [ -n "$parameters" ] && [ -f "$parameters" ]; then
    named="$(sed -n 's/^[[:space:]]*challenge:[[:space:]]*["'"'"']\{0,1\}\([A-Za-z-]*\).*/\1/p' "$parameters" | head -n 1)"
    challenge="${named:-$challenge}"
  fi
  command=(htcnns evaluate --pred "$predictions" --ref "$labels" --challenge "$challenge" --json "$result"
           "${options[@]}")
elif [ "${1:-}" = infer ]; then
  read_keys "data_path output_path parameters_file report_path" "${@:2}"
  input="${given[data_path]:-}" output="${given[output_path]:-}" parameters="${given[parameters_file]:-}"
  report="${given[report_path]:-${HTCNNS_REPORT:-none}}"
  [ -n "$input" ] || die "infer needs --data_path=DIR (the folder of cases)"
  [ -n "$output" ] || die "infer needs --output_path=DIR (the folder for the label maps)"
else
  options=("$@")
fi
if [ "${command[0]:-}" != htcnns ] && [ -n "$parameters" ]; then
  echo "INFO parameters file $parameters accepted; this image takes no parameters from it" >&2
fi
case "$report" in
  "") report_option=() ;;
  none) report_option=(--no-report) ;;
  *) report_option=(--report "$report") ;;
esac
if [ -n "${HTCNNS_QC:-}" ]; then qc_option=(--qc "$HTCNNS_QC"); else qc_option=(--no-qc); fi

if [ "${command[0]:-}" != htcnns ]; then
  command=(htcnns segment --input "$input" --output "$output" "${report_option[@]}" "${qc_option[@]}" "${options[@]}")
  if [ -d "$output" ] && [ ! -w "$output" ]; then
    die "the output folder $output is not writable by uid $(id -u); mount a writable host folder there" \
        "(-v DIR:$output, without :ro) that this uid may write, e.g. docker run --user \"\$(id -u):\$(id -g)\""
  fi
fi

# Caches and temporary files only in a private folder under TMPDIR, else /dev/shm (read-only image, any uid).
scratch="$(mktemp -d "${TMPDIR:-/tmp}/htcnns.XXXXXX" 2>/dev/null || mktemp -d /dev/shm/htcnns.XXXXXX 2>/dev/null)" \
  || die "no writable temporary folder at ${TMPDIR:-/tmp} or /dev/shm; give the container one" \
         "(docker run --tmpfs /tmp) or set TMPDIR"
trap 'rm -rf "$scratch"' EXIT
if [ -z "${HOME:-}" ] || [ ! -d "$HOME" ] || [ ! -w "$HOME" ]; then
  export HOME="$scratch"
fi
export TMPDIR="$scratch" MPLCONFIGDIR="$scratch/matplotlib" TORCH_HOME="$scratch/torch" \
  XDG_CACHE_HOME="$scratch/cache" CUDA_CACHE_PATH="$scratch/nv"

if [ "${command[1]}" = segment ] && ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "WARNING: no GPU visible; segmenting on the CPU (much slower). Run with --gpus all to use the GPU." >&2
fi

# Started as root (MLCube runs images with --user=0:0, see container/mlcube.yaml) on an output folder that a user
# owns: write as that user, so the label maps are theirs and no file in it belongs to root.
owner="$(stat -c %u:%g "$output" 2>/dev/null || true)"
if [ "$(id -u)" = 0 ] && [ -n "$owner" ] && [ "${owner%%:*}" != 0 ] && command -v setpriv >/dev/null; then
  chown "$owner" "$scratch"
  command=(setpriv --reuid="${owner%%:*}" --regid="${owner##*:}" --clear-groups "${command[@]}")
fi

# Run as a child, not with exec, so the scratch folder is removed on exit; forward stop signals to it.
"${command[@]}" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM HUP
trap 'kill -INT "$child" 2>/dev/null' INT
wait "$child"
status=$?
while kill -0 "$child" 2>/dev/null; do  # wait was cut short by a forwarded signal: wait for the real exit
  wait "$child"
  status=$?
done
exit "$status"
