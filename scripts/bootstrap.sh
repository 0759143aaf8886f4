#!/usr/bin/env bash
# Install everything Baseliner and its tests need on a fresh Debian 12 machine, idempotently:
# Debian packages (BCC, Prometheus, iproute2), kernel headers for BCC, tracefs, the container runtimes the
# tests run real containers in (scripts/runtimes.sh: containerd with CRI, dockerd, podman, docker-compose and
# a locally built base image; about 2.5 minutes the first time), and a virtualenv at .venv with the project
# installed in editable mode.
#   scripts/bootstrap.sh            # everything (needs root for the Debian part)
#   BASELINER_NO_APT=1 scripts/bootstrap.sh   # only the virtualenv
#   BASELINER_EXTRAS= scripts/bootstrap.sh    # the project without extras (what scripts/demo.sh needs)
# BASELINER_EXTRAS (comma-separated, default dev,mlflow) names the project's extras to install.
#   BASELINER_NO_RUNTIMES=1 scripts/bootstrap.sh   # everything but the container runtimes
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

log() { printf '[bootstrap] %s\n' "$*" >&2; }

APT_PACKAGES=(bpfcc-tools python3-bpfcc libbpfcc prometheus iproute2 chromium chromium-driver redis-server)
if [[ -z "${BASELINER_NO_APT:-}" && $(id -u) -eq 0 ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [[ -x scripts/kernel_headers.sh ]]; then
    scripts/kernel_headers.sh
  fi
  if [[ -z "${BASELINER_NO_RUNTIMES:-}" ]]; then
    scripts/runtimes.sh
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
# One stamp per set of extras installed; installing with extras also installs the project without them.
extras=${BASELINER_EXTRAS-dev,mlflow}
stamp=".venv/.baseliner-installed[$extras]"
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  if [[ -n $extras ]]; then
    log "installing the project with its extras [$extras] into .venv (first run only)"
    spec=".[$extras]"
  else
    log "installing the project into .venv, without the test and MLflow extras (first run only)"
    spec="."
  fi
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # not quiet: pip's progress (each package collected, then the install) shows on the terminal
  .venv/bin/pip install -e "$spec" >&2
  touch "$stamp" ".venv/.baseliner-installed[]"
fi

# Debian's bcc module is pure Python: make it importable from the venv.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [[ -d /usr/lib/python3/dist-packages/bcc && ! -e $site/bcc ]]; then
  ln -s /usr/lib/python3/dist-packages/bcc "$site/bcc"
fi
log "ready: $ROOT/.venv"
