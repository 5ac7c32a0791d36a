#!/usr/bin/env bash
# The fashion-clip table at a stronger attack on one GPU: 1,000 test images (the committed slice: no dataset
# needed), APGD-CE + APGD-T with all 9 target classes (AutoAttack's), eps 1, 2, 4, 8 /255, six configurations.
# Prints the Markdown table and the run time; results.json and the plots go to $OUT/fashion-clip-gpu.
#   bash scripts/gpu/fashion_table.sh                 STEPS=30 (default; about 7,000 batched APGD iterations)
#   STEPS=100 bash scripts/gpu/fashion_table.sh       AutoAttack's iteration count (about 3x longer)
# The CPU table in docs/fashion-clip.md used STEPS=10 with 1 target class.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
[ -x .venv/bin/python ] && PY=.venv/bin/python
"$PY" -m adapters.zoo.fashion_eval --device cuda --batch-size 1000 --steps "${STEPS:-30}" --targets "${TARGETS:-9}" \
  --no-progress --out "${OUT:-/tmp}/fashion-clip-gpu"
