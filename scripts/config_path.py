"""How far a reader must walk to follow a training config: the functions that touch it during a run.

Runs ``train()`` for two steps (one epoch, its validation and checkpoints) on the test fixtures' pairs with
a profiler that records every function of the package that receives the config or one of its sections
as an argument, or is a method of an object that holds the config or a section of it as an attribute its
code reads (``self.config.run``, or ``self.run`` where that is the section). Prints, in
first-call order, those stops and three counts: stops, modules, and returns to a module already left
(the reader's back-and-forth). Measures whichever ``e3relax_fast`` is first on the path, so the same
script compares two checkouts:

    python scripts/config_path.py                      # this tree
    PYTHONPATH=/tmp/old python scripts/config_path.py  # another checkout (git worktree add /tmp/old <commit>)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


def config_parts(config) -> set[int]:
    """Ids of the config and of every dataclass section inside it (model, data, optim, run, augment, ...)."""
    found, todo = set(), [config]
    while todo:
        item = todo.pop()
        if id(item) in found:
            continue
        found.add(id(item))
        todo.extend(getattr(item, f.name) for f in dataclasses.fields(item)
                    if dataclasses.is_dataclass(getattr(item, f.name)))
    return found


def trace_stops(config, package_dir: str, run) -> list[tuple[str, str]]:
    """``(module, qualified name)`` of each function that touches ``config`` while ``run()`` runs, in
    first-call order."""
    parts, stops, seen = config_parts(config), [], set()

    def profile(frame, event, arg):
        if event != "call" or not frame.f_code.co_filename.startswith(package_dir):
            return
        code = frame.f_code
        arguments = [frame.f_locals.get(name) for name in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]]
        held = vars(arguments[0]) if arguments and hasattr(arguments[0], "__dict__") else {}
        holder = any(id(value) in parts and name in code.co_names for name, value in held.items())
        if holder or any(id(value) in parts for value in arguments):
            module = os.path.relpath(code.co_filename, os.path.dirname(package_dir))
            key = (module, code.co_qualname)
            if key not in seen:
                seen.add(key)
                stops.append(key)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return stops


def returns_to_left_modules(modules: list[str]) -> int:
    """How often the walk comes back to a module it had left before."""
    walk = [module for module, _ in itertools.groupby(modules)]
    return sum(1 for k, module in enumerate(walk) if module in walk[:k])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    import e3relax_fast
    from e3relax_fast.data.pairs import read_pairs
    from e3relax_fast.data.store import write_store
    from e3relax_fast.train import TrainConfig, train

    package_dir = os.path.dirname(os.path.abspath(e3relax_fast.__file__))
    with tempfile.TemporaryDirectory() as tmp:
        records = itertools.chain(read_pairs(DATA / "pairs_unrelaxed.extxyz", DATA / "pairs_relaxed.extxyz"),
                                  read_pairs(DATA / "perov5_sample.csv"))
        write_store(records, Path(tmp) / "store", split_fractions={"val": 0.25}, seed=10, progress=False)
        overrides = [f"data.store={tmp}/store", f"run.dir={tmp}/run", "run.max_steps=2", "run.steps_per_epoch=2",
                     "run.progress=false", "run.backend=torch", "model.hidden_channels=16", "model.num_layers=2",
                     "run.init_from=''"]
        config = TrainConfig.from_yaml(str(ROOT / "configs" / "train" / "release3.yaml"), overrides)
        stops = trace_stops(config, package_dir, lambda: train(config))
    for module, name in stops:
        print(f"{module:40s} {name}")
    modules = [module for module, _ in stops]
    print(f"\n{e3relax_fast.__file__}: {len(stops)} stops in {len(set(modules))} modules, "
          f"{returns_to_left_modules(modules)} returns to a module already left")


if __name__ == "__main__":
    main()
