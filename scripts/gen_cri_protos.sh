#!/usr/bin/env bash
# Regenerate the committed gRPC/protobuf code of the trimmed CRI definition under protos/cri/ (the only way to
# change it; protos/cri/README.md says where the definition comes from). Compiled under its installed name
# (baseliner/protos/cri/api.proto) through a temporary include root, with .venv's Python (or $PYTHON), like
# scripts/gen_protos.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/baseliner"
ln -s "$(pwd)/protos" "$root/baseliner/protos"
"${PYTHON:-.venv/bin/python}" -m grpc_tools.protoc -I "$root" \
  --python_out="$root" --pyi_out="$root" --grpc_python_out="$root" \
  "$root"/baseliner/protos/cri/api.proto
