# HT-CNNs inference image; usage in container/README.md:
#   docker run --rm --gpus all --network none -v in:/input:ro -v out:/output IMAGE
#
# One file, two bases (plain Dockerfile syntax: the legacy builder and BuildKit both build it):
#   docker build -t htcnns:0.1.0 .          CUDA 12.8 base, CUDA torch from the PyTorch index (needs a registry)
#   make image-cpu                          htcnns:cpu from a local Debian bookworm base made by debootstrap and a
#                                           wheelhouse/ of CPU wheels, offline (container/build-cpu.sh)
# CUDA 12.8 runs on Hopper (H100, sm_90), Ampere, Ada and Blackwell GPUs with an NVIDIA driver >= 570.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS build
# PYTHON: the base's interpreter (installed with apt-get when the base lacks it). TORCH_INDEX: where the torch
# pinned in requirements.txt comes from (tests/test_container.py checks they agree). A wheelhouse/ folder in the
# build context, when present, replaces both indexes: everything is installed from it with --no-index.
ARG PYTHON=python3.12
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# The distribution's Python follows its security updates, so it is not pinned to one build.
# hadolint ignore=DL3008
RUN if ! "$PYTHON" -m venv --help >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends "$PYTHON" "$PYTHON-venv" \
        && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /build
# "wheelhous[e]" matches the optional wheelhouse/ folder; without one only the three files are copied.
COPY requirements.txt pyproject.toml README.md wheelhous[e] ./
COPY src ./src
RUN "$PYTHON" -m venv /opt/venv \
    && if ls ./*.whl >/dev/null 2>&1; then \
         /opt/venv/bin/pip install --no-index --find-links . -r requirements.txt \
         && /opt/venv/bin/pip install --no-index --find-links . --no-deps .; \
       else \
         /opt/venv/bin/pip install --index-url "$TORCH_INDEX" torch==2.13.0 \
         && /opt/venv/bin/pip install -r requirements.txt \
         && /opt/venv/bin/pip install --no-deps .; \
       fi \
    && /opt/venv/bin/pip uninstall -y pip \
    && chmod -R a+rX /opt/venv

FROM ${BASE_IMAGE}
ARG PYTHON=python3.12
ARG BASE_IMAGE
LABEL org.opencontainers.image.title="HT-CNNs" \
      org.opencontainers.image.description="Brain-tumour segmentation (BraTS labels) with a STAPLE ensemble of three networks" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.opencontainers.image.documentation="container/README.md"

# Nothing is written inside the image at run time: caches and temporary files go to a private folder under
# TMPDIR, or /dev/shm when TMPDIR is not writable (entrypoint.sh). USER answers getpass for uids without a passwd
# entry (docker run --user 12345:12345).
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HTCNNS_MODELS=/opt/htcnns/models \
    HTCNNS_IN_CONTAINER=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    USER=htcnns \
    LOGNAME=htcnns \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch \
    XDG_CACHE_HOME=/tmp/cache \
    PATH=/opt/venv/bin:$PATH

# hadolint ignore=DL3008
RUN if ! "$PYTHON" -c "import encodings" >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends "$PYTHON" \
        && rm -rf /var/lib/apt/lists/*; fi
COPY --from=build /opt/venv /opt/venv

# Weights are baked in (world-readable as committed: files 0644, folders 0755) and verified, sha256 against each
# manifest, while building. The entrypoint is 0755 in git, so no chmod layer copies either of them.
WORKDIR /opt/htcnns
COPY models ./models
RUN python3 -c "from pathlib import Path; from htcnns.inference.pipeline import load_models; load_models(Path('/opt/htcnns/models'), 'cpu')"
COPY entrypoint.sh /usr/local/bin/htcnns-entrypoint

# Unprivileged by default; any --user uid:gid works too (nothing needs a home folder or a writable image).
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/htcnns-entrypoint"]
