# HT-CNNs inference image: docker run --gpus all --network none -v in:/input:ro -v out:/output IMAGE
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

LABEL org.opencontainers.image.title="HT-CNNs" \
      org.opencontainers.image.description="Brain-tumour segmentation (BraTS labels) with a STAPLE ensemble of three networks" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HTCNNS_MODELS=/opt/htcnns/models \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch

# The distribution's python3.12 follows Ubuntu's security updates, so it is not pinned to one build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/htcnns
COPY requirements.txt pyproject.toml README.md ./
COPY src ./src
RUN python3.12 -m venv /opt/venv \
    && /opt/venv/bin/pip install --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0 \
    && /opt/venv/bin/pip install -r requirements.txt \
    && /opt/venv/bin/pip install --no-deps .
COPY models ./models
COPY entrypoint.sh /usr/local/bin/htcnns-entrypoint
ENV PATH=/opt/venv/bin:$PATH

USER 65534:65534
ENTRYPOINT ["/usr/local/bin/htcnns-entrypoint"]
