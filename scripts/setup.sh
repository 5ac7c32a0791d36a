#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment with the project and its dev tools (CPU torch),
# plus Debian's prometheus for the metrics integration test where apt is available.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints-cpu.txt -e '.[dev]'
if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
    >/dev/null 2>&1 || echo "setup: prometheus not installed; its integration test will be skipped" >&2
fi
