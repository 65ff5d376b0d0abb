"""Training throughput (forward + backward + AdamW step, layer-wise loss) of E3Relax on the CPU.

    python bench/bench_train.py [--smoke] [--preset small paper] [--backend torch cpp] [--steps 5] [--json FILE]
    python bench/bench_train.py --recipes configs/train/release3.yaml configs/train/release4.yaml \
        --workload mp [--steps 60] [--rounds 2] [--json FILE]
    python bench/bench_train.py --optimizer [--preset small] [--steps 30] [--json FILE]

Presets and backends: real pairs (tests/data: CHGNet-labelled prototypes and Perov-5, 2-24 atoms) in a
temporary store, batches of 32 structures as the paper trains, through the same ``Trainer.train_step``
that ``e3relax train`` runs, each configuration in its own process. Reports structures/s and peak RSS
growth per preset and backend, with the ratio against the reference (``torch``) backend measured in the
same run.

Recipes: whole training configs compared on one workload, each through ``Trainer.train`` (the data
order, fresh perturbed inputs and their graphs, the step, the EMA; no validation), one thread, each in
its own process, in turn and then in reverse order (``--rounds``), so a machine that slows down or
speeds up during the run favours neither. ``--workload mp``: the Materials Project structures of
``../shared/data/mp`` (at most 40 atoms, the first 2,000) as perturbation pairs, as release 3 and 4
train on them, in a store per graph setting the recipes ask for. Reports structures/s of each recipe and
its ratio to the first.

Optimizer: the AdamW update alone (amsgrad, as the trainer runs it) of a preset's weights, as
PyTorch's per-tensor loop and fused (``run.fused_optimizer``), in turn, three times, one thread: CPU
milliseconds per update and the ratio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import environment, peak_rss_bytes, write_json_lines  # noqa: E402

from e3relax_fast.data.pairs import read_pairs  # noqa: E402
from e3relax_fast.data.store import write_store  # noqa: E402
from e3relax_fast.ops import backend_report  # noqa: E402
from e3relax_fast.train import TrainConfig, Trainer  # noqa: E402

DATA = os.path.join(HERE, "..", "tests", "data")


def make_store(path: str) -> None:
    records = itertools.chain(read_pairs(os.path.join(DATA, "pairs_unrelaxed.extxyz"),
                                         os.path.join(DATA, "pairs_relaxed.extxyz")),
                              read_pairs(os.path.join(DATA, "perov5_sample.csv")))
    records = list(records)
    for record in records:
        record.split = "train"
    records[-1].split = "val"
    write_store(records, path, progress=False)


def steps_per_second(trainer: Trainer, batches: list, steps: int) -> float:
    trainer.train_step(batches[0], int(batches[0].ptr[-1]), batches[0].num_structures)  # warm-up
    start = time.perf_counter()
    for k in range(steps):
        batch = batches[k % len(batches)]
        trainer.train_step(batch, int(batch.ptr[-1]), batch.num_structures)
    return steps / (time.perf_counter() - start)


def measure(store: str, preset: str, backend: str, batch_size: int, steps: int, run_dir: str) -> dict:
    """Runs in a fresh subprocess, so that the peak RSS growth is this configuration's own."""
    config = TrainConfig().replace(
        model={"hidden_channels": 128 if preset == "small" else 512},
        data={"store": store, "max_structures_per_batch": batch_size},
        run={"dir": run_dir, "backend": backend, "progress": False})
    trainer = Trainer(config)
    rng = np.random.default_rng(0)
    batches = [trainer.data.store.batch(rng.choice(trainer.data.train_indices, batch_size)) for _ in range(4)]
    rss_before = peak_rss_bytes()
    rate = steps_per_second(trainer, batches, steps) * batch_size
    return {"structures_per_s": rate,
            "peak_rss_growth_mb": (peak_rss_bytes() - rss_before) / 2**20}


MP_STRUCTURES = os.path.join(HERE, "..", "..", "shared", "data", "mp", "structures.extxyz")


def make_mp_store(path: str, graph: tuple[float, int, str], count: int = 2000) -> None:
    """``count`` MP structures of at most 40 atoms as perturbation pairs (5% of them in a validation split,
    which the trainer needs but the timing never runs)."""
    from e3relax_fast.data.perturb import PerturbConfig, structure_pairs
    from e3relax_fast.data.store import GraphSettings

    records = itertools.islice(structure_pairs(MP_STRUCTURES, PerturbConfig(), 0, 40), count)
    write_store(records, path, GraphSettings(*graph), split_fractions={"val": 0.05}, progress=False,
                perturbation=PerturbConfig().to_dict(), sources=[f"structures:{MP_STRUCTURES}"])


def measure_recipe(recipe: str, store: str, steps: int, run_dir: str) -> dict:
    """Runs in a fresh subprocess: ``steps`` optimiser steps of ``Trainer.train`` after 5 to warm up."""
    from e3relax_fast.train import TrainConfig

    torch.set_num_threads(1)
    overrides = [f"data.store={store}", "run.init_from=''", "data.source_weights={}", "data.score_sources=[]",
                 f"run.dir={run_dir}",
                 "run.progress=false", "run.steps_per_epoch=1000000", "run.checkpoint_every=1000000",
                 f"run.max_steps={steps + 5}", "optim.warmup_steps=1", "data.num_workers=0"]
    trainer = Trainer(TrainConfig.from_yaml(recipe, overrides).replace(run={"max_steps": 5}))
    trainer.train()
    trainer.config = trainer.config.replace(run={"max_steps": steps + 5})
    trainer.state["stopped"] = ""
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
    if trainer.state["step"] != steps + 5:
        raise RuntimeError(f"the timed run stopped at step {trainer.state['step']}, not {steps + 5}")
    structures = steps * trainer.config.data.max_structures_per_batch
    # CPU seconds as well as wall seconds: on a machine that other work shares, the CPU time a step
    # takes moves much less than its wall time (the cores are time-sliced; caches and memory are not)
    return {"structures_per_s": structures / elapsed, "structures_per_cpu_s": structures / cpu_elapsed,
            "batch": trainer.config.data.max_structures_per_batch,
            "max_neighbors": trainer.config.model.max_neighbors}


def compare_recipes(args) -> list[dict]:
    """Each recipe in its own process, in order then reversed, ``args.rounds`` times; mean rates."""
    from e3relax_fast.train import TrainConfig

    rates: dict[str, list[float]] = {recipe: [] for recipe in args.recipes}
    cpu_rates: dict[str, list[float]] = {recipe: [] for recipe in args.recipes}
    details: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for recipe in args.recipes:
            model = TrainConfig.from_yaml(recipe).model
            graph = (model.graph_cutoff, model.max_neighbors, model.self_images)
            if graph not in stores:
                stores[graph] = os.path.join(tmp, f"store{len(stores)}")
                make_mp_store(stores[graph], graph, 64 if args.smoke else 2000)
            details[recipe] = {"store": stores[graph]}
        steps = 2 if args.smoke else args.steps
        for round_index in range(1 if args.smoke else args.rounds):
            for recipe in (args.recipes if round_index % 2 == 0 else args.recipes[::-1]):
                spec = json.dumps({"recipe": recipe, "store": details[recipe]["store"], "steps": steps,
                                   "run_dir": os.path.join(tmp, f"run{round_index}-{len(rates[recipe])}-{abs(hash(recipe))}")})
                proc = subprocess.run([sys.executable, __file__, "--recipe-child", spec], capture_output=True, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"})
                if proc.returncode != 0:
                    raise RuntimeError(f"{recipe} failed:\n{proc.stderr[-2000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                rates[recipe].append(result["structures_per_s"])
                cpu_rates[recipe].append(result["structures_per_cpu_s"])
                details[recipe].update(result)
    rows = []
    first, cpu_first = float(np.mean(rates[args.recipes[0]])), float(np.mean(cpu_rates[args.recipes[0]]))
    for recipe in args.recipes:
        rate, cpu_rate = float(np.mean(rates[recipe])), float(np.mean(cpu_rates[recipe]))
        print(f"{recipe}: {rate:.1f} structures/s (runs: {', '.join(f'{r:.1f}' for r in rates[recipe])}), "
              f"{rate / first:.2f}x {args.recipes[0]}; {cpu_rate:.1f} structures per CPU-second (runs: "
              f"{', '.join(f'{r:.1f}' for r in cpu_rates[recipe])}), {cpu_rate / cpu_first:.2f}x; "
              f"batch {details[recipe]['batch']}, {details[recipe]['max_neighbors']} neighbours")
        rows.append({"bench": "train_recipe", "recipe": recipe, "workload": args.workload, "structures_per_s": rate,
                     "runs": rates[recipe], "ratio_vs_first": rate / first, "structures_per_cpu_s": cpu_rate,
                     "cpu_runs": cpu_rates[recipe], "cpu_ratio_vs_first": cpu_rate / cpu_first, "steps": steps,
                     "smoke": args.smoke, **environment()})
    return rows


def compare_optimizers(args) -> list[dict]:
    """CPU-ms per AdamW update of each preset's weights, per-tensor loop against fused, in turn."""
    from e3relax_fast.model import E3Relax, E3RelaxConfig

    torch.set_num_threads(1)
    presets, steps = (["small"], 2) if args.smoke else (args.preset, args.steps)
    rows = []
    for preset in presets:
        torch.manual_seed(0)
        weights = list(E3Relax(getattr(E3RelaxConfig, preset)()).parameters())
        for weight in weights:
            weight.grad = torch.randn_like(weight)
        optimizers = {"loop": torch.optim.AdamW(weights, lr=1e-9, amsgrad=True, foreach=False),
                      "fused": torch.optim.AdamW(weights, lr=1e-9, amsgrad=True, fused=True)}
        cpu_ms = {name: [] for name in optimizers}
        for _ in range(1 if args.smoke else 3):
            for name, optimizer in optimizers.items():
                optimizer.step()  # the moments exist before the clock starts
                start = time.process_time()
                for _ in range(steps):
                    optimizer.step()
                cpu_ms[name].append((time.process_time() - start) / steps * 1000)
        loop, fused = (float(np.median(cpu_ms[name])) for name in ("loop", "fused"))
        print(f"{preset} ({sum(w.numel() for w in weights):,} weights in {len(weights)} tensors): AdamW loop "
              f"{loop:.1f} CPU-ms, fused {fused:.1f} CPU-ms an update: {loop / fused:.2f}x")
        rows.append({"bench": "train_optimizer", "preset": preset, "loop_cpu_ms": loop, "fused_cpu_ms": fused,
                     "runs": cpu_ms, "ratio": loop / fused, "smoke": args.smoke, **environment()})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--preset", nargs="+", default=["small", "paper"], choices=["small", "paper"])
    parser.add_argument("--backend", nargs="+", default=["torch", "cpp"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json")
    parser.add_argument("--recipes", nargs="+", help="training configs to compare (instead of presets)")
    parser.add_argument("--workload", default="mp", choices=["mp"], help="--recipes: the pairs to train on")
    parser.add_argument("--rounds", type=int, default=2, help="--recipes: passes over the recipes, alternating order")
    parser.add_argument("--optimizer", action="store_true", help="time the AdamW update alone: loop against fused")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--recipe-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.optimizer:
        write_json_lines(args.json, compare_optimizers(args))
        return 0
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return 0
    if args.recipe_child:
        print(json.dumps(measure_recipe(**json.loads(args.recipe_child))))
        return 0
    if args.recipes:
        write_json_lines(args.json, compare_recipes(args))
        return 0
    presets, steps = (["small"], 1) if args.smoke else (args.preset, args.steps)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        make_store(store)
        for preset in presets:
            reference_rate = None
            for backend in args.backend:
                availability = next(a for a in backend_report()["vector_message"] if a.backend == backend)
                if not availability.available:
                    print(f"{preset}/{backend}: skipped (vector_message: {availability.reason})")
                    continue
                spec = json.dumps({"store": store, "preset": preset, "backend": backend, "batch_size": args.batch_size,
                                   "steps": steps, "run_dir": os.path.join(tmp, f"run-{preset}-{backend}")})
                proc = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{preset}/{backend}: failed\n{proc.stderr[-2000:]}")
                    continue
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                rate = result["structures_per_s"]
                reference_rate = reference_rate or (rate if backend == "torch" else None)
                ratio = rate / reference_rate if reference_rate else float("nan")
                print(f"{preset}/{backend}: {rate:.1f} structures/s ({ratio:.2f}x the torch reference), "
                      f"peak RSS +{result['peak_rss_growth_mb']:.0f} MB")
                rows.append({"bench": "train", "preset": preset, "backend": backend, "structures_per_s": rate,
                             "ratio_vs_torch": ratio, "batch_size": args.batch_size, "steps": steps,
                             "peak_rss_growth_mb": result["peak_rss_growth_mb"], "smoke": args.smoke,
                             **environment()})
    write_json_lines(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
