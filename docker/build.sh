#!/usr/bin/env bash
# Builds the varve:dev image (Dockerfile, FROM scratch) around a static
# binary built on this machine: nothing is pulled. The build context is a
# temporary directory holding only the binary.
#
#   docker/build.sh [image tag, default varve:dev]
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-varve:dev}"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 go build -trimpath -o "$ctx/varve" ./cmd/varve
# Quiet unless it fails (the legacy builder warns that it is deprecated).
if ! out="$(docker build -f Dockerfile -t "$tag" "$ctx" 2>&1)"; then
  printf '%s\n' "$out" >&2
  exit 1
fi
echo "built $tag ($(du -h "$ctx/varve" | cut -f1) binary)"
