#!/usr/bin/env bash
# The fashion-clip table at full attack strength on one GPU: 1,000 test images, APGD-CE + APGD-T (9 target
# classes) at 100 iterations each, eps 1, 2, 4, 8 /255, six configurations. No dataset needed (the committed
# slice). Prints the Markdown table and the run time; results.json and the plots go to $OUT/fashion-clip-gpu.
#   bash scripts/gpu/fashion_table.sh            (STEPS=100 by default; STEPS=20 for a quicker run)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
[ -x .venv/bin/python ] && PY=.venv/bin/python
"$PY" -m adapters.zoo.fashion_eval --device cuda --batch-size 1000 --steps "${STEPS:-100}" \
  --out "${OUT:-/tmp}/fashion-clip-gpu"
