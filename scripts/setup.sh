#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment with the project and its dev tools (CPU torch),
# plus Debian's prometheus and chromium for integration tests where apt is available.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints-cpu.txt -e '.[dev]'
# Debian's prometheus (the metrics scrape test) and chromium (the playground's browser tests, driven by
# Playwright from the dev extra with this executable: no browser download)
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") \
    >/dev/null 2>&1 || echo "setup: ${missing[*]} not installed; their integration tests will be skipped" >&2
fi
