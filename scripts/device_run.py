"""Moving a training run to a lent GPU machine and back (issue 23, item 7; scripts/device_train.sh).

    python scripts/device_run.py pack [--run runs/release4] [--out runs/device]       # here, before
    python scripts/device_run.py save-weights RUN_DIR OUT_DIR                         # there, after
    python scripts/device_run.py unpack OUT_DIR --into runs/release4/last.ckpt        # here, after

The device's working tree is capped at 64 MiB and what comes back at 16 MiB a file, so neither the
store (hundreds of MB of graphs) nor a resumable checkpoint (weights, EMA and three optimiser moments)
travels. ``pack`` writes a compact store (no graphs; float32 geometry, ~26 MB for release 4's) and the
run's EMA weights (float32) into ``--out``; the device trains from them (graphs rebuilt per batch) and
``save-weights`` writes its EMA weights in parts of at most 15 MB; ``unpack`` puts them into the CPU
run's ``last.ckpt`` as both its weights and its EMA, keeping its optimiser, schedule and data position,
so the CPU run resumes from what the GPU learned. Nothing here imports ase or pymatgen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e3relax_fast.data.store import PairStore, write_compact_store  # noqa: E402
from e3relax_fast.model.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402

PART_BYTES = 15 * 2 ** 20


def pack(run: Path, out: Path) -> None:
    payload, metadata = read_checkpoint(run / "last.ckpt")
    config = metadata["train_config"]
    store = PairStore(config["data"]["store"])
    write_compact_store(store, out / "store")
    weights = {k: v.float() for k, v in payload["model"].items()}  # the EMA weights
    save_checkpoint(out / "init.ckpt", weights, {**metadata, "device_run": {"from": str(run), "step": metadata["step"]}})
    print(f"packed {run} (step {metadata['step']}) into {out}: "
          f"{sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 2 ** 20:.1f} MB")


def save_weights(run: Path, out: Path) -> None:
    """The EMA weights of ``run``'s last checkpoint, float32, in parts of at most PART_BYTES."""
    payload, metadata = read_checkpoint(run / "last.ckpt")
    parts, current, size = [], {}, 0
    for name, value in payload["model"].items():
        tensor = value.detach().float().cpu().contiguous()
        if current and size + tensor.numel() * 4 > PART_BYTES:
            parts.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += tensor.numel() * 4
    parts.append(current)
    for k, part in enumerate(parts):
        torch.save(part, out / f"weights_part{k}.pt")
    (out / "weights.json").write_text(json.dumps({"parts": len(parts), "step": metadata["step"],
                                                  "model_config": metadata["model_config"]}))
    print(f"saved the EMA weights of step {metadata['step']} in {len(parts)} parts to {out}")


def unpack(folder: Path, into: Path) -> None:
    info = json.loads((folder / "weights.json").read_text())
    weights = {}
    for k in range(info["parts"]):
        weights.update(torch.load(folder / f"weights_part{k}.pt", weights_only=True))
    payload, metadata = read_checkpoint(into)
    if set(weights) != set(payload["model"]):
        raise ValueError(f"{folder} holds weights of another model than {into}")
    training = payload["training"]
    training["model"] = {k: v.clone() for k, v in weights.items()}
    metadata = {**metadata, "device_runs": metadata.get("device_runs", []) + [{"gpu_steps": info["step"]}]}
    save_checkpoint(into, weights, metadata, training)
    print(f"{into}: weights and EMA from {info['step']} GPU steps; optimiser, schedule and data position kept")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("--run", default="runs/release4")
    packing.add_argument("--out", default="runs/device")
    saving = commands.add_parser("save-weights")
    saving.add_argument("run")
    saving.add_argument("out")
    unpacking = commands.add_parser("unpack")
    unpacking.add_argument("folder")
    unpacking.add_argument("--into", required=True)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(Path(args.run), Path(args.out))
    elif args.command == "save-weights":
        save_weights(Path(args.run), Path(args.out))
    else:
        unpack(Path(args.folder), Path(args.into))
    return 0


if __name__ == "__main__":
    sys.exit(main())
