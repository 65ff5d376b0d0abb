"""``e3relax export``: a deployment artifact (TorchScript or AOTInductor) of a trained model."""

from __future__ import annotations

import argparse
import json
import sys
import time

HELP = "export a model for deployment: TorchScript (.ts.pt, torch.jit.load) or AOTInductor (.pt2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help="checkpoint or shipped model name (default: the shipped e3relax-small)")
    parser.add_argument("-o", "--output", required=True, help="model.ts.pt (torchscript) or model.pt2 (aoti)")
    parser.add_argument("--format", default="torchscript", choices=("torchscript", "aoti"),
                        help="torchscript: a .ts.pt for torch.jit.load (Python or C++); aoti: a .pt2 AOTInductor "
                             "package of compiled native code (docs/deploy.md)")
    parser.add_argument("--ops", default="compiled", choices=("compiled", "reference"),
                        help="compiled: the e3relax op library's kernels (it must be loaded where the model runs); "
                             "reference: pure PyTorch, loads with plain torch (torchscript only)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                        help="precision of the exported model; its inputs must be given in it (docs/deploy.md)")
    parser.add_argument("--device", default="cpu", help="device the AOTInductor package is compiled for")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..export import export_aoti, export_torchscript

    dtype = getattr(torch, args.dtype)
    suffix = ".ts.pt" if args.format == "torchscript" else ".pt2"
    if not args.output.endswith(suffix):
        raise ValueError(f"--format {args.format} writes a {suffix} file (e3relax predict -m tells the formats "
                         f"apart by it), got {args.output!r}")
    started = time.perf_counter()
    if args.format == "torchscript":
        metadata = export_torchscript(args.model, args.output, ops=args.ops, dtype=dtype)
    else:
        if args.ops != "compiled":
            raise ValueError("--format aoti exports the compiled ops only")
        print("compiling with AOTInductor (minutes on a CPU)...", file=sys.stderr)
        metadata = export_aoti(args.model, args.output, device=args.device, dtype=dtype)
    print(f"wrote {args.output} ({args.format}, ops {metadata['ops']}, {metadata['dtype']}, "
          f"{time.perf_counter() - started:.1f} s)")
    print(json.dumps({k: metadata[k] for k in ("graph", "num_layers", "outputs")}))
    return 0
