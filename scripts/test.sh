#!/usr/bin/env bash
# The project's test command: installs what the tests need (Debian packages included), then runs
# lint, type checks and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/mypy models service sensor
exec .venv/bin/python -m pytest -q "$@"
