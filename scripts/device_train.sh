#!/usr/bin/env bash
# Continue the current training run on a lent GPU machine for a few minutes and bring its weights back
# (issue 23, item 7). Minutes there are worth days on our two cores. Three steps:
#   here:   python scripts/device_run.py pack --run runs/release4 --out runs/device
#           (a compact store without graphs and the run's EMA weights, ~48 MB; the ase wheel for fresh
#           perturbed inputs, which the device image lacks: python3 -m pip download --no-deps
#           --only-binary=:all: -d .whl ase==3.29.0, with /.whl/ in .git/info/exclude)
#   there:  run(command="bash scripts/device_train.sh", carry=["runs/device", ".whl"], timeout_s=560)
#           (after scripts/device_check.sh, which builds the op library for the GPU)
#   here:   python scripts/device_run.py unpack /work/.device/<files_at> --into runs/release4/last.ckpt
#           then scripts/train_release4.sh resumes the CPU run from what the GPU learned.
# Settings (environment): BUDGET_S (training seconds, default 420), DEVICE (cuda), BATCH (256 structures
# a step: a GPU wants more than 64), LR (4e-4), CONFIG (configs/train/release4.yaml), RUN (runs/device),
# COMPILE (false: torch.compile would spend minutes of the budget).
# Tested on the CPU with a tiny budget (tests/test_device_run.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device_out}"
RUN="${RUN:-runs/device}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import ase" 2>/dev/null && ls .whl/ase-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/ase-*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! ls e3relax_fast/_C*.so >/dev/null 2>&1; then
  echo "::: build"
  E3RELAX_BUILD="${E3RELAX_BUILD:-cuda}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
    python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
fi
rm -rf /tmp/device_run
echo "::: train for ${BUDGET_S:-420} s"
timeout -s INT "${BUDGET_S:-420}" python3 - "${CONFIG:-configs/train/release4.yaml}" "$RUN" <<'PY' 2>&1 | tee "$OUT/train.log" | tail -5
import os, sys
from e3relax_fast.train import TrainConfig, train
config_path, run = sys.argv[1:3]
overrides = [f"data.store={run}/store", f"run.init_from={run}/init.ckpt", "run.dir=/tmp/device_run",
             f"run.device={os.environ.get('DEVICE', 'cuda')}", "data.num_workers=" + os.environ.get("WORKERS", "12"),
             "data.max_structures_per_batch=" + os.environ.get("BATCH", "256"), "optim.lr=" + os.environ.get("LR", "4e-4"),
             "optim.schedule=plateau", "optim.warmup_steps=0", "run.max_steps=0", "run.steps_per_epoch=1000000",
             "run.checkpoint_every=200", "run.log_every=20", "run.progress=false",
             # compiling takes minutes of a budget of a few: eager unless asked (COMPILE=true)
             "run.compile=" + os.environ.get("COMPILE", "false")]
from e3relax_fast.data.store import PairStore, source_name
store = PairStore(f"{run}/store")
present = {source_name(s, k) for s, k in zip(store.sources, store.kinds)}
# sources the recipe draws that the packed store lacks (pairs not generated yet) are drawn with weight 0
overrides += [f"data.source_weights.{name}=0" for name in TrainConfig.from_yaml(config_path, overrides).data.source_weights
              if name not in present]
try:
    print(train(TrainConfig.from_yaml(config_path, overrides)))
except KeyboardInterrupt:  # the budget's end: the trainer saved last.ckpt first
    print("budget reached: last.ckpt saved")
PY
python3 scripts/device_run.py save-weights /tmp/device_run "$OUT"
cp /tmp/device_run/metrics.jsonl "$OUT/metrics.jsonl"
