#!/usr/bin/env bash
# `make test-container`: install and start dockerd (when none runs), build htcnns:cpu from nothing
# (container/build-cpu.sh), install the real clients (brats orchestrator, mlcube + mlcube-docker) in their own
# venv, and run container/tests against the image. Stops the daemon it started, by its PID. Needs root.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv_python="${VENV_PYTHON:-$root/.venv/bin/python}"
state="${HTCNNS_CONTAINER_STATE:-/var/tmp/htcnns-container}"
mkdir -p "$state"
started_pid=""
stop_daemon() {
  if [ -n "$started_pid" ]; then
    kill "$started_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$started_pid" 2>/dev/null || break; sleep 1; done
  fi
}
trap stop_daemon EXIT

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "== apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd (data root $state/docker)"
  dockerd --data-root "$state/docker" --iptables=false --ip6tables=false --bridge=none \
    >"$state/dockerd.log" 2>&1 &
  started_pid=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$state/dockerd.log"; exit 1; }
fi

start=$SECONDS
PYTHON="$venv_python" "$root/container/build-cpu.sh" htcnns:cpu
build_s=$((SECONDS - start))

clients="$state/clients"
if [ ! -x "$clients/bin/mlcube" ] || ! "$clients/bin/python" -c "import brats" 2>/dev/null; then
  echo "== real clients: brats, mlcube, mlcube-docker"
  python3 -m venv "$clients"
  "$clients/bin/pip" install --quiet brats mlcube mlcube-docker 2>&1 | grep -v "^WARNING: Location" || true
fi
"$clients/bin/pip" list 2>/dev/null | grep -iE "^(brats|mlcube|mlcube-docker) " || true

echo "== container tests (image built in ${build_s} s)"
HTCNNS_IMAGE=htcnns:cpu HTCNNS_CLIENTS_PYTHON="$clients/bin/python" \
  "$venv_python" -m pytest -q -p no:cacheprovider -rA "$root/container/tests"
