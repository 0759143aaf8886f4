#!/usr/bin/env bash
# Regenerate the committed gRPC/protobuf code under protos/v1/ (the only way to change it).
# The .proto files are compiled under their installed name (baseliner/protos/v1/...), so the generated
# modules import each other as baseliner.protos.v1.*: a temporary include root links baseliner/protos to
# the protos folder. It runs the Python of .venv (scripts/bootstrap.sh), or $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/baseliner"
ln -s "$(pwd)/protos" "$root/baseliner/protos"
"${PYTHON:-.venv/bin/python}" -m grpc_tools.protoc -I "$root" \
  --python_out="$root" --pyi_out="$root" --grpc_python_out="$root" \
  "$root"/baseliner/protos/v1/*.proto
