# HT-CNNs inference image; usage in container/README.md:
#   docker run --rm --gpus all --network none -v in:/input:ro -v out:/output IMAGE
# CUDA 12.8 runs on Hopper (H100, sm_90), Ampere, Ada and Blackwell GPUs with an NVIDIA driver >= 570.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

# The CUDA build of the torch version pinned in requirements.txt (tests/test_container.py checks they agree).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

LABEL org.opencontainers.image.title="HT-CNNs" \
      org.opencontainers.image.description="Brain-tumour segmentation (BraTS labels) with a STAPLE ensemble of three networks" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.base.name="docker.io/nvidia/cuda:12.8.1-runtime-ubuntu24.04" \
      org.opencontainers.image.documentation="container/README.md"

# Nothing is written inside the image at run time: caches and temporary files go under TMPDIR (entrypoint.sh).
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HTCNNS_MODELS=/opt/htcnns/models \
    TMPDIR=/tmp \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch \
    XDG_CACHE_HOME=/tmp/cache

# The distribution's python3.12 follows Ubuntu's security updates, so it is not pinned to one build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/htcnns
COPY requirements.txt pyproject.toml README.md ./
COPY src ./src
RUN python3.12 -m venv /opt/venv \
    && /opt/venv/bin/pip install --index-url "$TORCH_INDEX" torch==2.13.0 \
    && /opt/venv/bin/pip install -r requirements.txt \
    && /opt/venv/bin/pip install --no-deps . \
    && chmod -R a+rX /opt/venv /opt/htcnns
ENV PATH=/opt/venv/bin:$PATH

# Weights are baked in, readable by any uid, and verified (sha256 against each manifest) while building.
COPY models ./models
RUN chmod -R a+rX /opt/htcnns/models \
    && python3 -c "from pathlib import Path; from htcnns.pipeline import load_models; load_models(Path('/opt/htcnns/models'), 'cpu')"

COPY --chmod=0755 entrypoint.sh /usr/local/bin/htcnns-entrypoint

# Unprivileged by default; any --user uid:gid works too (nothing needs a home folder or a writable image).
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/htcnns-entrypoint"]
