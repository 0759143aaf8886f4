#!/usr/bin/env bash
# Regenerate the committed gRPC/protobuf code under protos/baseliner/v1/ (the only way to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -I . \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  protos/baseliner/v1/*.proto
