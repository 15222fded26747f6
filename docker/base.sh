#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim and print its tag.
#
# Why: the Dockerfile's bases come from a registry (python:3.11-slim, nvidia/cuda). Where none can be
# pulled (an offline or firewalled machine, like the one this project is checked on), the image can
# still be built from an equivalent base made here: Debian bookworm (the distribution
# python:3.11-slim is built on) with its own python3, which is 3.11 as well, plus python3-venv
# for the venv the Dockerfile makes. `docker/check.sh` passes the tag this prints as the
# Dockerfile's CPU_BASE (and CUDA_BASE) build argument; nothing else in the Dockerfile changes.
#
# Differences from the real base, none of which the Dockerfile relies on: python3 lives in
# /usr/bin instead of /usr/local/bin, and its C headers are not installed (the builder stage
# installs python3-dev when Python.h is missing, as it must on a CUDA base too).
#
# The host's CA bundle is copied in and PIP_CERT points at it: where HTTPS goes through an
# intercepting proxy, that bundle holds the proxy's CA, which pip's own (certifi) bundle lacks.
#
# Usage: docker/base.sh [TAG]    (needs root, debootstrap and a running Docker engine)
set -euo pipefail

TAG="${1:-dualwatch/python-standin:3.11-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "$TAG"
    exit 0
fi

ROOTFS="$(mktemp -d /tmp/dualwatch-base.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >&2
cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
# what python:3.11-slim also leaves out: package lists and caches
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb

tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    - "$TAG" >&2
echo "$TAG"
