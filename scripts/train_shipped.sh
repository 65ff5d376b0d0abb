#!/usr/bin/env bash
# Train (or resume) the shipped small model in the background; safe to run again after a kill or a
# reboot: it continues from runs/shipped_small/last.ckpt. Never run by CI.
#   nohup setsid scripts/train_shipped.sh > runs/shipped_small.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS=1
if [ ! -f runs/store_shipped/store.json ]; then
  e3relax preprocess --no-progress -o runs/store_shipped \
    --pairs ../shared/data/chgnet_pairs/unrelaxed.extxyz ../shared/data/chgnet_pairs/relaxed.extxyz \
    --pairs ../shared/data/perov5/val.csv
fi
resume=()
[ -f runs/shipped_small/last.ckpt ] && resume=(--resume)
exec e3relax train --config configs/train/shipped_small.yaml "${resume[@]}" "$@"
