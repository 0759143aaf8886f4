#!/usr/bin/env bash
# One command to see Baseliner work: installs the virtualenv if needed (the project alone, none of the
# test or MLflow extras), then runs `baseliner demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINER_NO_APT=1 BASELINER_EXTRAS= scripts/bootstrap.sh
exec .venv/bin/baseliner demo "$@"
