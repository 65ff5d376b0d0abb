"""``e3relax preprocess``: (unrelaxed, relaxed) pairs to a training store of plain arrays."""

from __future__ import annotations

import argparse
import itertools
import json

HELP = ("convert (unrelaxed, relaxed) pairs, and relaxed structures as perturbation pairs, to a training "
        "store, graphs built with the radius-graph op")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..data.pairs import pair_sources_help
    from ..data.perturb import PerturbConfig

    defaults = PerturbConfig()
    parser.add_argument("--pairs", nargs="+", action="append", default=[], metavar="SOURCE",
                        help=f"a pair source (repeatable): {pair_sources_help()}")
    parser.add_argument("--structures", action="append", default=[], metavar="PATH",
                        help="relaxed structures (any file or folder predict reads), stored as pairs whose "
                             "unrelaxed side is a perturbation (docs/training.md; repeatable)")
    parser.add_argument("--max-atoms", type=int, default=0,
                        help="leave out --structures entries with more atoms (0: keep all)")
    parser.add_argument("--strain", type=float, default=defaults.strain,
                        help="--structures: half-width of each symmetric strain entry")
    parser.add_argument("--volume", type=float, default=defaults.volume,
                        help="--structures: volume drawn from (1 +- this) times the relaxed volume")
    parser.add_argument("--rattle", type=float, nargs=2, default=(defaults.rattle_min, defaults.rattle_max),
                        metavar=("MIN", "MAX"), help="--structures: range of the rattle distance, Å")
    parser.add_argument("-o", "--output", required=True, help="store folder to create")
    parser.add_argument("--preset", default="paper", choices=("paper", "small"),
                        help="model preset whose graph settings to use (both share 6 Å, 50 neighbours)")
    parser.add_argument("--cutoff", type=float, help="graph radius, Å (default: the preset's)")
    parser.add_argument("--max-neighbors", type=int, help="nearest neighbours kept (default: the preset's)")
    parser.add_argument("--self-images", choices=("paper", "all"), help="self-image edges (default: the preset's)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of groups (prototype, else composition) for validation")
    parser.add_argument("--test-fraction", type=float, default=0.0, help="fraction of groups for a test split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: in this process)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.pairs import labelled, read_pairs
    from ..data.perturb import PerturbConfig, structure_pairs
    from ..data.store import GraphSettings, write_store
    from ..model import E3RelaxConfig

    preset = E3RelaxConfig.preset(args.preset)
    graph = GraphSettings(
        cutoff=args.cutoff if args.cutoff is not None else preset.graph_cutoff,
        max_neighbors=args.max_neighbors if args.max_neighbors is not None else preset.max_neighbors,
        self_images=args.self_images or preset.self_images,
    )
    if not args.pairs and not args.structures:
        raise ValueError("give at least one --pairs or --structures source")
    for source in args.pairs:
        if len(source) > 2:
            raise ValueError(f"--pairs takes one source or two extxyz files, got {len(source)}: {source}")
    if not 0 <= args.val_fraction + args.test_fraction < 1:
        raise ValueError("--val-fraction + --test-fraction must be in [0, 1)")
    fractions = {"val": args.val_fraction}
    if args.test_fraction:
        fractions["test"] = args.test_fraction
    how = PerturbConfig(args.strain, args.volume, *args.rattle)
    readers = [read_pairs(*source) for source in args.pairs]
    readers += [labelled(structure_pairs(path, how, args.seed, args.max_atoms), f"structures:{path}")
                for path in args.structures]
    meta = write_store(itertools.chain.from_iterable(readers), args.output, graph, split_fractions=fractions,
                       seed=args.seed, workers=args.workers,
                       sources=[" ".join(s) for s in args.pairs] + [f"structures:{p}" for p in args.structures],
                       progress=not args.no_progress, overwrite=args.overwrite,
                       perturbation=how.to_dict() if args.structures else None)
    print(f"wrote {meta['num_pairs']} pairs ({meta['num_atoms']} atoms, {meta['num_edges']} edges) to "
          f"{args.output}; splits {json.dumps(meta['split_counts'])}; {meta['num_failures']} failed "
          f"(see {args.output}/failures.csv)")
    return 0
