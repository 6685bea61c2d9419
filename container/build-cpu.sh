#!/usr/bin/env bash
# Build the CPU image htcnns:cpu from nothing but Debian's and PyPI's packages (no image registry needed):
#   1. base image htcnns-base:bookworm: `debootstrap --variant=minbase bookworm` + `docker import` (kept when present);
#   2. wheelhouse/: `pip download -r requirements.txt` (the CPU torch wheel where pip finds one, e.g. /opt/wheels);
#   3. `docker build` of the project's one Dockerfile with the Debian base and its python3.11, offline.
# Needs root (debootstrap), a running dockerd and `docker` on PATH. Usage: container/build-cpu.sh [TAG]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tag="${1:-htcnns:cpu}"
base="${HTCNNS_BASE_IMAGE:-htcnns-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
python="${PYTHON:-python3}"
start=$SECONDS

if ! docker image inspect "$base" >/dev/null 2>&1; then
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/htcnns-rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  echo "== base image $base: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
         "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar --numeric-owner -C "$rootfs" -c . | docker import - "$base" >/dev/null
fi

echo "== wheelhouse for $("$python" --version)"
"$python" -m pip download --quiet --disable-pip-version-check --dest "$root/wheelhouse" \
  -r "$root/requirements.txt" setuptools 2>&1 | grep -v "^WARNING: Location" || true
ls "$root"/wheelhouse/torch-*.whl >/dev/null

echo "== docker build $tag"
docker build --network host --build-arg BASE_IMAGE="$base" --build-arg PYTHON=python3.11 -t "$tag" "$root"
echo "== built $tag in $((SECONDS - start)) s: $(docker image inspect "$tag" --format '{{.Size}}' | \
  awk '{printf "%.2f GB", $1 / 1e9}')"
