#!/usr/bin/env bash
# HT-CNNs container entrypoint: segment every case under the input folder into <output>/<case-id>.nii.gz.
#
#   docker run --gpus all --network none -v in:/input:ro -v out:/output IMAGE
#
# Paths can be overridden for testing: HTCNNS_INPUT (default /input), HTCNNS_OUTPUT (default /output).
# Extra arguments are passed to `htcnns segment` (e.g. --labels brats2021, --fusion majority).
# Exit codes: 0 every case segmented; 1 at least one case failed (the others were written);
#             2 unusable setup (no input folder, no cases, broken weights).
set -euo pipefail

input="${HTCNNS_INPUT:-/input}"
output="${HTCNNS_OUTPUT:-/output}"

# Caches and temporary files only under a writable temporary folder (read-only image, arbitrary uid).
scratch="$(mktemp -d "${TMPDIR:-/tmp}/htcnns.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export HOME="${HOME:-$scratch}"
[ -w "$HOME" ] || export HOME="$scratch"
export MPLCONFIGDIR="$scratch/matplotlib" TORCH_HOME="$scratch/torch" XDG_CACHE_HOME="$scratch/cache"

if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "WARNING: no GPU visible; segmenting on the CPU (much slower). Run with --gpus all to use the GPU." >&2
fi

exec htcnns segment --input "$input" --output "$output" "$@"
