# dualwatch's training image, in two flavours from this one file (BuildKit, Docker's default builder):
#   docker build -t dualwatch .                                        cpu: CPU torch + CPU paddle
#   docker build --build-arg FLAVOUR=cuda -t dualwatch:cuda .          cuda: CUDA torch + paddlepaddle-gpu
#   docker run --rm --gpus all dualwatch:cuda                          (the cuda flavour on a GPU host)
# Pip reads its settings from the environment, so a mirror or proxy needs no edit here:
#   --build-arg PIP_INDEX_URL=https://mirror.example/simple   (instead of PyPI)
#   --build-arg PIP_EXTRA_INDEX_URL=...  --build-arg PIP_FIND_LINKS=...  --build-arg PIP_TRUSTED_HOST=...
# The CPU torch wheel comes from https://download.pytorch.org/whl/cpu, which constraints.txt names
# (--extra-index-url). For a mirror, edit that line, or name the mirror in PIP_EXTRA_INDEX_URL (or a
# folder of wheels in PIP_FIND_LINKS) and add --build-arg PIP_RETRIES=0 where the original is out of
# reach. The cuda flavour drops that line (docker/requirements.py): PyPI's torch is the CUDA build.

ARG FLAVOUR=cpu
# Bases pinned by digest (linux/amd64), so a rebuild gets the same system; refresh a pin with
#   docker pull python:3.11-slim-bookworm && docker inspect --format '{{index .RepoDigests 0}}' python:3.11-slim-bookworm
# Where no registry can be reached, docker/base.sh builds an equivalent base locally (pass its tag).
ARG CPU_BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
# CUDA 13.0, what PyPI's torch 2.13 is built for; its runtime, the driver hooks (NVIDIA_* variables)
# and Ubuntu 24.04's python3 (3.12).
ARG CUDA_BASE=nvidia/cuda:13.0.1-runtime-ubuntu24.04@sha256:c3fde347d52d578c84fd644bc177bc7ec333feaf11550d990da4084d7612e4c7

FROM ${CPU_BASE} AS base-cpu

FROM ${CUDA_BASE} AS base-cuda
# The CUDA image has no Python, and its `ubuntu` user holds uid 1000, which the image's user takes.
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* && (userdel --remove ubuntu 2>/dev/null || true)

# What both the builder and the runtime stand on: the flavour's base, tini, the user, the venv's PATH.
FROM base-${FLAVOUR} AS base
# tini as PID 1: it forwards `docker stop`'s SIGTERM to the job and reaps it, so the writer flushes
# and the container exits 143 at once instead of being killed (137) after 10 s.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 dualwatch
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The dependencies: a C compiler and the venv with every dependency, in one cached layer.
FROM base AS deps
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && (python3 -c 'import os, sysconfig; os.stat(sysconfig.get_paths()["include"] + "/Python.h")' \
        || apt-get install -y --no-install-recommends python3-dev) \
    && rm -rf /var/lib/apt/lists/*
ARG FLAVOUR
ARG EXTRAS=all
# Paddle's own index: PyPI has no paddlepaddle-gpu 3.x (cu129: the CUDA 12.9 build).
ARG PADDLE_GPU_INDEX=https://www.paddlepaddle.org.cn/packages/stable/cu129/
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_RETRIES
WORKDIR /src
# Only what names the dependencies: a source edit leaves this layer (gigabytes) cached.
# setup.py reads README.md for the long description; an empty one stands in until the source comes.
COPY setup.py constraints.txt ./
COPY dualwatch/_version.py dualwatch/
COPY docker/requirements.py docker/
RUN touch README.md && python3 -m venv /opt/venv \
    && pip install "setuptools>=61" wheel \
    && python3 docker/requirements.py "$FLAVOUR" "$EXTRAS" /tmp/pip --paddle-index "$PADDLE_GPU_INDEX" \
    && pip install -r /tmp/pip/requirements.txt
# The C parts (optional in setup.py: a user without a compiler still installs), compiled apart from
# the Python source, so that editing a .py file reuses them: setuptools skips an extension whose
# build is newer than its C source. Also PyPA's build and installer, which make and install a
# wheel in half the time pip takes (this stage's venv only: the runtime copies the deps' venv).
FROM deps AS kernel
RUN pip install build installer
COPY dualwatch/*.c dualwatch/
RUN python3 setup.py -q build_ext

# The builder: the source, then dualwatch's wheel with the kernel, installed under /overlay as it
# will lie in the runtime's venv; `ls` fails the build if a C part did not compile.
FROM kernel AS builder
COPY . .
RUN python3 -m build --wheel --no-isolation --skip-dependency-check --outdir /wheels . \
    && python3 -m installer --destdir /overlay /wheels/*.whl \
    && cd /overlay/opt/venv/lib/python3*/site-packages/dualwatch && ls _hoststats.*.so _scalarcodec.*.so _edgehost.*.so

# The runtime: the deps' venv (no compiler), then dualwatch over it.
FROM base AS runtime
# /app/runs made here, owned by the user, so that a named volume mounted on it (-v NAME:/app/runs)
# is writable by the user
RUN mkdir -p /app/runs && chown -R dualwatch:dualwatch /app
COPY --from=deps /opt/venv /opt/venv
USER dualwatch
WORKDIR /app
# VisualDL (the VisualDL training guide's port) and TensorBoard
EXPOSE 8040 6006
ENTRYPOINT ["tini", "--"]
# in WORKDIR /app, the demo writes its runs to /app/runs (its default --logdir is `runs`)
CMD ["dualwatch", "demo"]
# last, so that a source edit rebuilds nothing after it
COPY --from=builder /overlay/ /
