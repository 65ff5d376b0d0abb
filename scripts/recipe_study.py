"""Training recipes compared at equal CPU time (issue 23, item 3; docs/training.md, "Recipe study").

    python scripts/recipe_study.py --cpu-minutes 15 --parallel 2 -o runs/study [--variants NAME ...]

Every variant starts from the same weights (release 3, ``runs/release3.ckpt``) and trains in its own
single-threaded process until it has used ``--cpu-minutes`` of CPU time (``run.max_cpu_minutes``). A
budgeted schedule needs its length in steps: a 30-step calibration run measures the variant's CPU time
per step first and the budget is divided by it. Each variant's EMA model is then validated on the
store's validation split (never a test split) and the table of per-source ratios over Dummy (lower is
better) is printed and written to ``<out>/study.csv``. Run it with nothing else on the cores, or
accept that CPU time, not wall time, is what is equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASE4_DRAWS = "configs/train/release4.yaml"

#: What release4.yaml's draws were when the study ran (session 9), before the run drew Perov-5 once a
#: pass and generated pairs (mp_pairs3) from step ~20,000: the study's variants keep them.
STUDY_DRAWS = ["data.source_weights.perov5=0.5", "data.source_weights.mp_pairs3=0",
               "data.source_weights.mp_pairs3:path=0", "data.score_sources=[]"]

#: The faster step of release 4: 64 structures a step (rate x sqrt 2) on a 24-neighbour graph.
FAST = ["data.max_structures_per_batch=64", "optim.lr=2.8e-4", "model.max_neighbors=24", "data.store=runs/store_r4_n24"]
#: Random initial weights (seed run.seed) instead of release 3's.
SCRATCH = ["run.init_from=''"]

#: name -> (config file, overrides). All on the release-4 store (its sources and validation split).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    # release 3 as trained: constant rate 3e-4 (the plateau never fired), every pair once per pass
    "release3": ("configs/train/release3.yaml", ["data.store=runs/store_r4", "data.augment.source_contains=_pairs"]),
    # + the release-4 draws per source
    "release3+draws": (RELEASE4_DRAWS, STUDY_DRAWS + ["optim.schedule=plateau", "optim.lr=3e-4"]),
    # + warm-up and cosine decay over the budget (the release-4 recipe as first started)
    "budget": (RELEASE4_DRAWS, STUDY_DRAWS),
    # + the faster step: 64 structures a step (rate x sqrt 2) on a 24-neighbour graph
    "fast": (RELEASE4_DRAWS, STUDY_DRAWS + FAST),
    # from random weights (session 12): the architecture variants cannot start from release 3's
    # weights, so they are compared with the same recipe from the same (random) start
    "fast-scratch": (RELEASE4_DRAWS, STUDY_DRAWS + FAST + SCRATCH),
    # one lattice-node block and embedding shared by the three lattice vectors (model.lattice_nodes)
    "lattice-shared-scratch": (RELEASE4_DRAWS, STUDY_DRAWS + FAST + SCRATCH + ["model.lattice_nodes=shared"]),
    # a wider model, F = 192 instead of 128
    "wide-scratch": (RELEASE4_DRAWS, STUDY_DRAWS + FAST + SCRATCH + ["model.hidden_channels=192"]),
}

# eager steps: a compiled child would spend minutes of its budget compiling (release4.yaml compiles since
# session 10; the study of session 9 ran eager)
COMMON = ["run.init_from=runs/release3.ckpt", "run.compile=false", "run.progress=false", "run.steps_per_epoch=1000000",
          "run.max_epochs=1000000", "run.early_stopping_patience=1000000", "run.checkpoint_every=1000000",
          "run.log_every=50", "data.num_workers=0"]


def child(name: str, cpu_minutes: float, out: str) -> dict:
    """One variant in this process: calibrate, train for the CPU budget, validate."""
    import torch

    from e3relax_fast.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    path, overrides = VARIANTS[name]
    base = COMMON + overrides + [f"run.dir={out}/{name}"]
    calibration = TrainConfig.from_yaml(ROOT / path, base + ["run.max_steps=30", "optim.schedule=plateau",
                                                             f"run.dir={out}/{name}/calibration"])
    trainer = Trainer(calibration)
    start = time.process_time()
    trainer.train()
    cpu_per_step = (time.process_time() - start) / 30
    steps = int(cpu_minutes * 60 / cpu_per_step)
    planned = TrainConfig.from_yaml(ROOT / path, base).optim  # the variant's own schedule, warm-up shortened
    config = calibration.replace(optim={"schedule": planned.schedule, "warmup_steps": min(planned.warmup_steps, steps // 10)},
                            run={"dir": f"{out}/{name}", "max_steps": steps, "max_cpu_minutes": cpu_minutes})
    trainer = Trainer(config)
    start = time.process_time()
    summary = trainer.train()
    cpu_minutes_used = (time.process_time() - start) / 60
    metrics = trainer.validate()
    return {"variant": name, "steps": summary["step"], "cpu_minutes": cpu_minutes_used,
            "structures": summary["step"] * config.data.max_structures_per_batch, **metrics}


def run_variant(name: str, cpu_minutes: float, out: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--cpu-minutes", str(cpu_minutes), "-o", out],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"variant {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-minutes", type=float, default=15.0, help="CPU time per variant")
    parser.add_argument("--parallel", type=int, default=2, help="variants at once (one core each)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("-o", "--out", default="runs/study")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.cpu_minutes, args.out)))
        return 0
    import pandas as pd

    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda name: run_variant(name, args.cpu_minutes, args.out), args.variants))
    table = pd.DataFrame(rows).set_index("variant")
    ratios = table[[c for c in table.columns if c.startswith("val_ratio/")] + ["val_score"]]
    ratios.columns = [c.removeprefix("val_ratio/") for c in ratios.columns]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    table.to_csv(Path(args.out) / "study.csv")
    print(table[["steps", "structures", "cpu_minutes"]].round(1).to_markdown())
    print(ratios.round(3).to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
