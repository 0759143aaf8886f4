#!/usr/bin/env bash
# One command to see Baseliner work: installs the virtualenv if needed, then runs `baseliner demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINER_NO_APT=1 scripts/bootstrap.sh
exec .venv/bin/baseliner demo "$@"
