#!/usr/bin/env bash
# The README's two commands (`bash scripts/make.sh demo`, `bash scripts/make.sh test`): make, with
# make itself installed first, since a fresh Debian 12 has none (it comes with build-essential,
# which scripts/install-deps.sh installs for everything else).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v make >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q make
fi
exec make "$@"
