#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment with the project and its dev tools (CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints-cpu.txt -e '.[dev]'
