#!/usr/bin/env bash
# The project's test command: installs what the tests need (Debian packages included), then runs
# lint, type checks and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check .
# mypy reads the folders under their installed names (baseliner.*) through a tree of links.
typecheck=$(mktemp -d)
trap 'rm -rf "$typecheck"' EXIT
mkdir "$typecheck/baseliner"
for pkg in models service sensor protos; do ln -s "$(pwd)/$pkg" "$typecheck/baseliner/$pkg"; done
MYPYPATH=$typecheck .venv/bin/mypy -p baseliner.models -p baseliner.service -p baseliner.sensor
.venv/bin/python -m pytest -q "$@"
