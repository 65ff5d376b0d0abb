#!/usr/bin/env bash
# The GPU checks of one session on a lent device machine (H100/H200; the `device` tool), prepared so
# that they run as one command well inside its 10-minute limit:
#   run(command="bash scripts/device_check.sh", timeout_s=540)
# What it does, each step logged under $OUT (the tool's folder that comes back):
#   1. builds the op library with CUDA against the machine's own torch (E3RELAX_BUILD=cuda, sm_90);
#   2. runs every CUDA-marked test and the CUDA source checks;
#   3. times the radius graph (ours on the GPU against our CPU kernel; competitors that are not installed
#      there are skipped) and the model's forward on the GPU, float32 and bfloat16 products.
# The machine's image has torch, triton, numpy, yaml, tqdm and pytest but no ase, pymatgen or vesin,
# which these steps do not need.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 E3RELAX_BUILD=cuda TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.version.cuda)" >> "$OUT/gpu.txt" 2>&1

echo "::: build"
if ! python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  exit 1
fi
python3 -m e3relax_fast.cli info > "$OUT/info.txt" 2>&1 || python3 -c "import e3relax_fast" 2>&1 | tail -5

echo "::: tests"
python3 -m pytest -q -p no:cacheprovider -m cuda tests/ops 2>&1 | tee "$OUT/tests_cuda.log" | tail -15
python3 -m pytest -q -p no:cacheprovider tests/ops/test_radius_graph_targets.py tests/ops/test_cuda_sources.py \
  2>&1 | tee "$OUT/tests_shared.log" | tail -5

echo "::: radius graph"
timeout 150 python3 bench/bench_radius_graph.py --problem small fcc100k --cutoff 6 --repeats 5 \
  --json "$OUT/radius_graph.jsonl" 2>&1 | tee "$OUT/radius_graph.log" | grep -v "^ *$"

echo "::: model forward"
timeout 150 python3 - <<'PY' 2>&1 | tee "$OUT/forward.log"
import sys, time, torch
sys.path.insert(0, "bench")
from problems import small_crystals
from e3relax_fast import E3Relax, E3RelaxConfig
from e3relax_fast.testing import flat_batch
batch = [t.cuda() for t in flat_batch(small_crystals(1000).crystals, dtype=torch.float32)]
for preset in ("small", "paper"):
    for reduced in (False, True):
        torch.manual_seed(0)
        model = E3Relax(E3RelaxConfig.preset(preset)).cuda().eval()
        if reduced:
            model.reduce_matmul_precision()
        with torch.no_grad():
            model(*batch); torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(3):
                model(*batch)
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / 3
        print(f"{preset} {'bfloat16' if reduced else 'float32'} products: 1000 crystals "
              f"({batch[0].shape[0]} atoms) in {seconds:.3f} s, {1000 / seconds:.0f} structures/s, "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
PY
