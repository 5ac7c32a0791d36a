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
command -v chromium >/dev/null 2>&1 || missing+=("chromium fonts-liberation")
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null 2>&1 || true
  for pkg in "${missing[@]}"; do  # one at a time: one that fails does not take the other with it
    # shellcheck disable=SC2086  # "$pkg" may name a package with the fonts it needs
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkg >/dev/null 2>&1 \
      || echo "setup: $pkg not installed; its integration tests will be skipped" >&2
  done
fi
