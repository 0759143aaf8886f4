#!/usr/bin/env bash
# Build the Baseliner image (deploy/Dockerfile) on a machine without an image registry: from the Debian 12 base
# scripts/runtimes.sh made locally with debootstrap, with the project and its dependencies installed from
# wheels that the host's pip builds into deploy/wheels/ (the build container then needs no PyPI access, only
# Debian's mirror for BCC and Python). Root; idempotent (the wheels are rebuilt, docker's layer cache kept).
#   scripts/build_image.sh [TAG]        # default baseliner:0.1.0
#   BASE=debian:bookworm-slim scripts/build_image.sh   # a registry's base instead
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-baseliner:0.1.0}
BASE=${BASE:-localhost/baseliner/debian:bookworm}
PY=${PYTHON:-.venv/bin/python}
log() { printf '[build_image] %s\n' "$*" >&2; }

if [[ $BASE == localhost/baseliner/* ]] && ! docker image inspect "$BASE" >/dev/null 2>&1; then
  scripts/runtimes.sh
fi
log "wheels of the project and its dependencies -> deploy/wheels/"
rm -f deploy/wheels/*.whl
"$PY" -m pip wheel -q --wheel-dir deploy/wheels .
log "docker build $TAG from $BASE"
docker build -q --network host --build-arg "BASE=$BASE" -f deploy/Dockerfile -t "$TAG" . >/dev/null
rm -f deploy/wheels/*.whl
log "built $TAG"
