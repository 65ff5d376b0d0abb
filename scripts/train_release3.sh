#!/usr/bin/env bash
# Train (or resume) release 3 of the shipped model in the background; safe to run again after a kill
# or a reboot: it continues from runs/release3/last.ckpt. Never run by CI.
#   nohup setsid scripts/train_release3.sh > runs/release3.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS=1
if [ ! -f runs/store_r3/store.json ]; then
  e3relax preprocess --no-progress --workers 2 -o runs/store_r3 \
    --structures ../shared/data/mp/structures.extxyz --max-atoms 40 \
    --pairs ../shared/data/mp_pairs/unrelaxed.extxyz ../shared/data/mp_pairs/relaxed.extxyz \
    --pairs ../shared/data/chgnet_pairs/unrelaxed.extxyz ../shared/data/chgnet_pairs/relaxed.extxyz \
    --pairs ../shared/data/perov5/val.csv
fi
# the run starts from release 2 (the shipped file is release 3 since commit b2ece14)
[ -f runs/release2.ckpt ] || git show af7c6e5:e3relax_fast/pretrained/e3relax-small.ckpt > runs/release2.ckpt
resume=()
[ -f runs/release3/last.ckpt ] && resume=(--resume)
# two processes, one core each (DDP over gloo): NPROC=1 for one core
exec torchrun --standalone --nproc_per_node "${NPROC:-2}" -m e3relax_fast.cli train \
  --config configs/train/release3.yaml "${resume[@]}" "$@"
