#!/usr/bin/env bash
# Train (or resume) release 4 of the shipped model in the background; safe to run again after a kill,
# a reboot or the end of a session: it continues from runs/release4/last.ckpt. Never run by CI.
#   nohup setsid nice -n 19 scripts/train_release4.sh >> runs/release4.log 2>&1 &
# The store holds ../shared/data's sources and the pairs generated so far under runs/pairs_gen
# (scripts/make_pairs.sh). At a start it is rebuilt once MIN_NEW (400) more pairs of a source are there
# than it holds, and the run goes on on it with --new-data (docs/training.md, "Continuing on more
# data"). A source the store holds no pairs of is drawn with weight 0. BUILD_ONLY=1: build, do not train;
# while a run trains, BUILD_ONLY=1 builds beside it and the next start swaps the new store in.
# On a fresh machine (no runs/), it builds the store and continues the run from the snapshot committed
# at snapshots/release4.ckpt (SNAPSHOT= names another), or, where there is none, starts from release 3.
# Before a session ends, snapshot the run so that the next machine can go on from it:
#   python scripts/snapshot_run.py runs/release4 -o snapshots/release4.ckpt && git add snapshots/release4.ckpt
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS=1
D=../shared/data
STORE=runs/store_r4b_n24
# a run already training holds runs/release4/run.lock (the trainer's flock): rebuilding the store it
# reads would pull it from under that run, so refuse before touching anything; BUILD_ONLY=1 then builds
# the new store beside it, as $STORE.new, and the next start swaps it in (no build while no one trains)
training=
if [ -f runs/release4/run.lock ] && ! flock -n runs/release4/run.lock true; then training=1; fi
if [ -n "$training" ] && [ -z "${BUILD_ONLY:-}" ]; then
  echo "runs/release4 is being trained ($(cat runs/release4/run.lock)): not starting a second run" >&2
  exit 1
fi
# the built store $STORE.new takes the place of $STORE
swap_in_new_store() {
  rm -rf $STORE.old
  if [ -d $STORE ]; then mv $STORE $STORE.old; fi
  mv $STORE.new $STORE
  rm -rf $STORE.old
}
if [ -z "$training" ] && [ -f $STORE.new/generated.txt ]; then
  # a store built beside the last run (generated.txt is written once its build is complete)
  swap_in_new_store
  echo "swapped in the store built beside the last run: $(tr '\n' ' ' < $STORE/generated.txt)"
fi
GENERATED=(mp_pairs3)  # the folders of runs/pairs_gen the recipe draws from
# no generated file yet (a fresh machine): 0, and a success, since under pipefail a failed cat would
# end the script at the first assignment that uses it
lines() { { cat runs/pairs_gen/$1/seed*.jsonl 2>/dev/null || true; } | wc -l; }
# the store's generated.txt: "<name> <lines>" per generated source, as counted when it was built
built() { awk -v name="$1" '$1 == name {print $2}' $STORE/generated.txt 2>/dev/null || true; }
rebuild=
[ -f $STORE/store.json ] || rebuild=1
for name in "${GENERATED[@]}"; do
  # a rebuild (~15 minutes, before any training starts) once MIN_NEW more pairs of a source are there, not at every start
  have=$(built $name)
  if [ $(( $(lines $name) - ${have:-0} )) -ge "${MIN_NEW:-400}" ]; then rebuild=1; fi
done
if [ -n "$rebuild" ]; then
  rm -rf $STORE.new
  pairs=() stamp=""
  for name in "${GENERATED[@]}"; do
    stamp+="$name $(lines $name)"$'\n'
    # `if`, not `[ ] && ...`: with no generated file (a fresh machine) the glob stays literal, and a
    # loop ending on a failed `&&` list fails the script under `set -e`, silently, before any training
    for file in runs/pairs_gen/$name/seed*.jsonl; do if [ -s "$file" ]; then pairs+=(--pairs "$file"); fi; done
  done
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
  printf "%s" "$stamp" > $STORE.new/generated.txt
  if [ -n "$training" ]; then
    echo "built $STORE.new beside the run that trains on $STORE: the next start swaps it in"
    exit 0
  fi
  swap_in_new_store
fi
[ -z "$training" ] || { echo "no new store to build beside the run (fewer than ${MIN_NEW:-400} new pairs)"; exit 0; }
overrides=()
for name in "${GENERATED[@]}"; do
  [ "$(built $name)" -gt 0 ] 2>/dev/null \
    || overrides+=(--set "data.source_weights.$name=0" --set "data.source_weights.$name:path=0")
done
[ -z "${BUILD_ONLY:-}" ] || exit 0
# a fresh run starts from release 3 as shipped by commit b2ece14 (run.init_from; --set it to start
# from other weights, e.g. a run of the same recipe on another machine)
[ -f runs/release3.ckpt ] || git show b2ece14:e3relax_fast/pretrained/e3relax-small.ckpt > runs/release3.ckpt
SNAPSHOT="${SNAPSHOT:-snapshots/release4.ckpt}"
resume=()
if [ -f runs/release4/last.ckpt ]; then
  # --new-data: the store or the draws may have changed since the checkpoint (an exact resume if not)
  resume=(--resume --new-data)
elif [ -f "$SNAPSHOT" ]; then
  # a fresh machine: the run goes on from the snapshot the last session committed
  # (scripts/snapshot_run.py), not from release 3 again
  resume=(--continue-from "$SNAPSHOT")
fi
# two processes, one core each (DDP over gloo): NPROC=1 for one core
exec torchrun --standalone --nproc_per_node "${NPROC:-2}" -m e3relax_fast.cli train \
  --config configs/train/release4.yaml "${resume[@]}" "${overrides[@]}" "$@"
