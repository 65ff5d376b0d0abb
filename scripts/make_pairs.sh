#!/usr/bin/env bash
# Make more CHGNet-labelled pairs, with three relaxation-path frames each, in the background with the
# generators in ../shared/tools (never in CI):
#   nohup setsid scripts/make_pairs.sh mp 4000 >> runs/pairs_gen/make_pairs.log 2>&1 &          # MP substitutions
#   nohup setsid scripts/make_pairs.sh prototypes 4000 >> runs/pairs_gen/make_pairs.log 2>&1 &  # AFLOW prototypes
# Each call takes the first seed with no output file yet (mp: from 504, prototypes: from 304; the shared
# sets used 101, 202, 303 and 501-503, so no call repeats their structures) and writes
# runs/pairs_gen/mp_pairs3/seed<N>.jsonl or runs/pairs_gen/chgnet_pairs3/seed<N>.jsonl (the folder names
# the source in stores and logs, like ../shared/data's; PAIRS_DIR moves runs/pairs_gen). Pass SEED as
# the third argument to resume an mp file (make_mp_pairs.py draws pair k from the seed and k). A
# prototypes file is never resumed: make_pairs.py restarts its random sequence, so it would repeat the
# file's structures under new ids; a new call takes a new seed.
# `e3relax preprocess --pairs FILE.jsonl` reads them with their path frames grouped with their pair.
# The generators get their own venv (runs/genvenv): CHGNet 0.4.2 (it loads the CHGNet 0.3.0 weights
# the shared pairs were labelled with, shipped inside the wheel) needs ase 3.23, and torch stays pinned
# to the local CPU wheel. One thread per process; run several calls to use more cores.
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:?usage: scripts/make_pairs.sh mp|prototypes COUNT [SEED]}"
count="${2:-4000}"
case "$kind" in
  mp) first=504 folder="${PAIRS_DIR:-runs/pairs_gen}/mp_pairs3" ;;
  prototypes) first=304 folder="${PAIRS_DIR:-runs/pairs_gen}/chgnet_pairs3" ;;
  *) echo "unknown kind '$kind': mp or prototypes" >&2; exit 2 ;;
esac
venv="${GEN_VENV:-runs/genvenv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import chgnet" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.13.0
  "$venv/bin/pip" install -q "chgnet==0.4.2" "ase==3.23.0" "torch==2.13.0"
fi
mkdir -p "$folder"
seed="${3:-}"
if [ -z "$seed" ]; then
  seed=$first
  while [ -e "${folder}/seed${seed}.jsonl" ]; do seed=$((seed + 1)); done
fi
out="${folder}/seed${seed}.jsonl"
if [ "$kind" = prototypes ] && [ -s "$out" ]; then
  echo "$out holds pairs already: make_pairs.py cannot resume it without repeating them; omit SEED" >&2
  exit 2
fi
touch "$out"
echo "$(date -u +%FT%TZ) ${kind} seed ${seed}: ${count} pairs -> ${out}"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
if [ "$kind" = mp ]; then
  exec nice -n 19 "$venv/bin/python" ../shared/tools/make_mp_pairs.py ../shared/data/mp/structures.extxyz \
    "$out" "$seed" "$count" --max-atoms 16 --frames 3
fi
exec nice -n 19 "$venv/bin/python" ../shared/tools/make_pairs.py "$out" "$seed" "$count" 3
