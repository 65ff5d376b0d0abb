#!/usr/bin/env bash
# Train (or resume) release 4 of the shipped model in the background; safe to run again after a kill,
# a reboot or the end of a session: it continues from runs/release4/last.ckpt. Never run by CI.
#   nohup setsid nice -n 19 scripts/train_release4.sh >> runs/release4.log 2>&1 &
# On a fresh machine (no runs/), it builds the store and starts again from release 3's weights.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS=1
D=../shared/data
if [ ! -f runs/store_r4_n24/store.json ]; then
  e3relax preprocess --no-progress --workers 2 -o runs/store_r4_n24 --max-neighbors 24 \
    --structures $D/mp/structures.extxyz --max-atoms 40 \
    --pairs $D/mp_pairs/unrelaxed.extxyz $D/mp_pairs/relaxed.extxyz \
    --pairs $D/chgnet_pairs/unrelaxed.extxyz $D/chgnet_pairs/relaxed.extxyz \
    --pairs $D/perov5/val.csv \
    --pairs $D/mp_pairs2/unrelaxed.extxyz $D/mp_pairs2/relaxed.extxyz \
    --pairs $D/mp_pairs2/path/unrelaxed.extxyz $D/mp_pairs2/path/relaxed.extxyz \
    --pairs $D/chgnet_pairs2/unrelaxed.extxyz $D/chgnet_pairs2/relaxed.extxyz \
    --pairs $D/chgnet_pairs2/path/unrelaxed.extxyz $D/chgnet_pairs2/path/relaxed.extxyz
fi
# a fresh run starts from release 3 as shipped by commit b2ece14 (run.init_from; --set it to start
# from other weights, e.g. a run of the same recipe on another machine)
[ -f runs/release3.ckpt ] || git show b2ece14:e3relax_fast/pretrained/e3relax-small.ckpt > runs/release3.ckpt
resume=()
[ -f runs/release4/last.ckpt ] && resume=(--resume)
# two processes, one core each (DDP over gloo): NPROC=1 for one core
exec torchrun --standalone --nproc_per_node "${NPROC:-2}" -m e3relax_fast.cli train \
  --config configs/train/release4.yaml "${resume[@]}" "$@"
