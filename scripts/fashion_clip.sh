#!/usr/bin/env bash
# Rebuild everything of builtin:fashion-clip from Fashion-MNIST (apt-get install dataset-fashion-mnist):
# the model, its FARE / TeCoA baselines, the sigma/alpha sweep, the three R-Adapt adapters and the table.
# Each stage is one ordinary command; docs/fashion-clip.md gives the times on 2 shared CPU cores.
#   bash scripts/fashion_clip.sh [STAGE...]   stages: train baselines sweep adapters table (default: all)
# SIGMA (the sweep's choice), ALPHA (of the guided anchor and R-Adapt+'s starting value; the white anchor runs at
# alpha 0, the sweep's choice), STEPS / TARGETS (APGD iterations and APGD-T target classes of the table: the CPU run
# used 10 / 1; scripts/gpu/fashion_table.sh runs 100 / 9) and OUT may be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RADAPT=${RADAPT:-.venv/bin/radapt}
WORK=${WORK:-/tmp/fashion-clip}
SIGMA=${SIGMA:-0.5}
ALPHA=${ALPHA:-0.25}
STEPS=${STEPS:-10}
TARGETS=${TARGETS:-1}
OUT=${OUT:-docs/fashion-clip}
W=adapters/zoo/weights
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(train baselines sweep adapters table)
mkdir -p "$WORK"
for stage in "${stages[@]}"; do
  case "$stage" in
    train)  # contrastive training on the 60,000 training images
      "$RADAPT" models train fashion-clip ;;
    baselines)  # vision tower adversarially fine-tuned at eps 4/255 on the last 8,192 training images
      "$RADAPT" models train fashion-clip-fare
      "$RADAPT" models train fashion-clip-tecoa ;;
    sweep)  # sigma x alpha of the white anchor on 500 test images disjoint from the table's (5000-5499)
      "$PY" -m adapters.zoo.fashion_data --image-folder "$WORK/val" --split test --offset 5000 --n 500
      echo 'a photo of a {}.' > "$WORK/prompt.txt"
      "$RADAPT" eval --model builtin:fashion-clip --dataset "$WORK/val" --templates "$WORK/prompt.txt" \
        --eps 4 --attack apgd-ce --steps 10 --sweep sigma=0,0.5,1,1.5 alpha=0,0.25,0.5,0.75 \
        --no-progress --out "$OUT/sweep" ;;
    adapters)  # the three paradigms at the chosen SIGMA / ALPHA; R-Adapt+ on the first 2,000 training images
      "$PY" -m adapters.zoo.fashion_data --image-folder "$WORK/train2k" --split train --n 2000
      "$RADAPT" adapter build --model builtin:fashion-clip --method white --sigma "$SIGMA" --alpha 0 \
        --out "$W/fashion-clip-white.adapter.safetensors"
      "$RADAPT" adapter build --model builtin:fashion-clip --method guided --robust-model builtin:fashion-clip-fare \
        --sigma "$SIGMA" --alpha "$ALPHA" --out "$W/fashion-clip-guided-fare.adapter.safetensors"
      "$RADAPT" adapter build --model builtin:fashion-clip --method data --images "$WORK/train2k" --n 2000 --train-alpha \
        --sigma "$SIGMA" --alpha "$ALPHA" --out "$W/fashion-clip-rplus.adapter.safetensors" ;;
    table)  # the paper's table in miniature, on the committed 1,000-image test slice
      "$PY" -m adapters.zoo.fashion_eval --steps "$STEPS" --targets "$TARGETS" --out "$OUT" ;;
    *) echo "unknown stage $stage (train baselines sweep adapters table)" >&2; exit 2 ;;
  esac
done
