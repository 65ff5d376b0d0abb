#!/usr/bin/env bash
# Train (or resume) release 4 of the shipped model in the background; safe to run again after a kill,
# a reboot or the end of a session: it continues from runs/release4/last.ckpt. Never run by CI.
#   nohup setsid nice -n 19 scripts/train_release4.sh >> runs/release4.log 2>&1 &
# The store holds ../shared/data's sources and the pairs generated so far under runs/pairs_gen
# (scripts/make_pairs.sh). At each start it is rebuilt if those files grew since it was built, and the
# run goes on on it with --new-data (docs/training.md, "Continuing on more data"). A source with no
# generated pairs yet is drawn with weight 0. BUILD_ONLY=1: build (or check) the store, do not train.
# On a fresh machine (no runs/), it builds the store and starts again from release 3's weights.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS=1
D=../shared/data
STORE=runs/store_r4b_n24
generated=()
overrides=()
for name in mp_pairs3 chgnet_pairs3; do
  found=()
  for file in runs/pairs_gen/$name/seed*.jsonl; do
    [ -s "$file" ] && found+=("$file")
  done
  generated+=("${found[@]}")
  [ ${#found[@]} -gt 0 ] || overrides+=(--set "data.source_weights.$name=0" --set "data.source_weights.$name:path=0")
done
# what the store is built from: a generator appends whole lines, so line counts identify its content
stamp="$( (for file in "${generated[@]}"; do echo "$file $(wc -l < "$file")"; done) | sort)"
rebuilt=()
if [ ! -f $STORE/store.json ] || [ "$(cat $STORE/generated.txt 2>/dev/null)" != "$stamp" ]; then
  rm -rf $STORE.new
  pairs=()
  for file in "${generated[@]}"; do pairs+=(--pairs "$file"); done
  # the shared sources first, in release 4's order, so their pairs keep their validation inputs
  e3relax preprocess --no-progress --workers 2 -o $STORE.new --max-neighbors 24 \
    --structures $D/mp/structures.extxyz --max-atoms 40 \
    --pairs $D/mp_pairs/unrelaxed.extxyz $D/mp_pairs/relaxed.extxyz \
    --pairs $D/chgnet_pairs/unrelaxed.extxyz $D/chgnet_pairs/relaxed.extxyz \
    --pairs $D/perov5/val.csv \
    --pairs $D/mp_pairs2/unrelaxed.extxyz $D/mp_pairs2/relaxed.extxyz \
    --pairs $D/mp_pairs2/path/unrelaxed.extxyz $D/mp_pairs2/path/relaxed.extxyz \
    --pairs $D/chgnet_pairs2/unrelaxed.extxyz $D/chgnet_pairs2/relaxed.extxyz \
    --pairs $D/chgnet_pairs2/path/unrelaxed.extxyz $D/chgnet_pairs2/path/relaxed.extxyz \
    "${pairs[@]}"
  echo "$stamp" > $STORE.new/generated.txt
  rm -rf $STORE.old
  [ -d $STORE ] && mv $STORE $STORE.old
  mv $STORE.new $STORE
  rm -rf $STORE.old
  rebuilt=(--new-data)
fi
[ -z "${BUILD_ONLY:-}" ] || exit 0
# a fresh run starts from release 3 as shipped by commit b2ece14 (run.init_from; --set it to start
# from other weights, e.g. a run of the same recipe on another machine)
[ -f runs/release3.ckpt ] || git show b2ece14:e3relax_fast/pretrained/e3relax-small.ckpt > runs/release3.ckpt
resume=()
[ -f runs/release4/last.ckpt ] && resume=(--resume "${rebuilt[@]}")
# two processes, one core each (DDP over gloo): NPROC=1 for one core
exec torchrun --standalone --nproc_per_node "${NPROC:-2}" -m e3relax_fast.cli train \
  --config configs/train/release4.yaml "${resume[@]}" "${overrides[@]}" "$@"
