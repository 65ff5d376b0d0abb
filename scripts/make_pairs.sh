#!/usr/bin/env bash
# Make more CHGNet-labelled pairs in the background with shared/tools/make_pairs.py (never in CI).
#   nohup setsid scripts/make_pairs.sh 3000 > runs/pairs_gen/make_pairs.log 2>&1 &
# Each call starts a fresh seed file runs/pairs_gen/seed<N>.jsonl: make_pairs.py restarts its random
# sequence when resumed, so re-running a seed would repeat its structures under new ids.
# The generator gets its own venv (runs/genvenv): CHGNet 0.4.2 (it loads the CHGNet 0.3.0 weights the
# shared pairs were labelled with, shipped inside the wheel) needs ase 3.23, and torch stays pinned to
# the local CPU wheel. One thread per process; run several calls to use more cores.
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-3000}"
venv="${GEN_VENV:-runs/genvenv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import chgnet" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.13.0
  "$venv/bin/pip" install -q "chgnet==0.4.2" "ase==3.23.0" "torch==2.13.0"
fi
mkdir -p runs/pairs_gen
seed=303
while [ -e "runs/pairs_gen/seed${seed}.jsonl" ]; do seed=$((seed + 1)); done
touch "runs/pairs_gen/seed${seed}.jsonl"
echo "seed ${seed}: ${count} pairs -> runs/pairs_gen/seed${seed}.jsonl"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
exec nice -n 10 "$venv/bin/python" ../shared/tools/make_pairs.py "runs/pairs_gen/seed${seed}.jsonl" "$seed" "$count"
