#!/usr/bin/env bash
# The same benchmarks on two checkouts, alternately (old, new, old, new), in one run on one machine: the
# before/after figures of a change that should not change speed. The old checkout needs its op library
# built in place (python setup.py build_ext --inplace); both run with this tree's virtual environment.
#   git worktree add /tmp/old <commit> && (cd /tmp/old && python setup.py build_ext --inplace)
#   bench/before_after.sh /tmp/old runs/before_after
# Pause long jobs first (kill -STOP <pid>): two cores shared with a training run time nothing.
set -euo pipefail
old=$(cd "$1" && pwd)
out=${2:-runs/before_after}
new=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
. "$new/.venv/bin/activate"
export OPENBLAS_NUM_THREADS=1
run() {  # run LABEL TREE: every benchmark once in TREE, its own code first on the path
  local label=$1 tree=$2
  cd "$tree"
  PYTHONPATH="$tree" python -c "import e3relax_fast, sys; assert e3relax_fast.__file__.startswith('$tree'), e3relax_fast.__file__"
  PYTHONPATH="$tree" python bench/bench_radius_graph.py --problem small fcc20k --cutoff 6 --repeats 5 \
    --skip ase matscipy pymatgen > "$out/radius_graph.$label.txt"
  local vector_message=bench/bench_vector_message.py
  [ -f "$vector_message" ] || vector_message=bench/bench_message_passing.py  # its name before commit f9fe367
  PYTHONPATH="$tree" python "$vector_message" --atoms 20000 --channels 128 --repeats 3 \
    > "$out/vector_message.$label.txt"
  PYTHONPATH="$tree" python bench/bench_screening.py --preset small --count 300 --matmul-precision float32 \
    > "$out/screening.$label.txt"
}
run old1 "$old"
run new1 "$new"
run old2 "$old"
run new2 "$new"
echo "results in $out"
