"""``e3relax merge``: join the reports (and single-file outputs) of ``e3relax predict --shard I/N`` runs,
checking that every shard is there and that no id was done twice."""

from __future__ import annotations

import argparse
import re

HELP = "join the reports and outputs of predict --shard runs, checking that every shard is present"

_SHARD = re.compile(r"_shard(\d+)of(\d+)_report\.csv$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reports", nargs="+", help="the shards' reports (OUT_shard<I>of<N>_report.csv)")
    parser.add_argument("-o", "--output", required=True, help="merged report CSV")
    parser.add_argument("--structures", nargs="*", default=[],
                        help="the shards' .extxyz or .db outputs, joined into --structures-output")
    parser.add_argument("--structures-output", help="merged .extxyz or .db")


def check_shards(reports: list[str]) -> None:
    """Raise ``ValueError`` unless the reports are shards 0..N-1 of one N, each once."""
    found = []
    for path in reports:
        match = _SHARD.search(path)
        if not match:
            raise ValueError(f"{path}: not a shard report (expected a name ending _shard<I>of<N>_report.csv)")
        found.append((int(match.group(1)), int(match.group(2))))
    counts = {n for _, n in found}
    if len(counts) != 1:
        raise ValueError(f"the reports come from different shard counts: {sorted(counts)}")
    (count,) = counts
    missing = sorted(set(range(count)) - {i for i, _ in found})
    if missing or len(found) != count:
        raise ValueError(f"shards {missing or 'repeated'} of {count} are missing or given twice")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..io import read_structures
    from ..io.structures import StructureWriter

    check_shards(args.reports)
    table = pd.concat([pd.read_csv(path, dtype=str, keep_default_na=False) for path in args.reports])
    repeated = table["id"][table["id"].duplicated()].tolist()
    if repeated:
        raise ValueError(f"ids reported by more than one shard: {repeated[:5]}")
    table.to_csv(args.output, index=False)
    if args.structures:
        if not args.structures_output:
            raise ValueError("--structures needs --structures-output")
        with StructureWriter(args.structures_output) as writer:
            for record in read_structures(args.structures):
                if record.structure is None:
                    raise ValueError(record.error)
                writer.write(record.id, record.structure)
        written = int(table["status"].isin(["ok", "refused"]).sum())  # a refused row writes the input geometry
        if writer.count != written:
            raise ValueError(f"the outputs hold {writer.count} structures, the reports {written} ok or refused rows")
    failed = int((table["status"] == "error").sum())
    print(f"merged {len(args.reports)} shards: {len(table)} rows ({failed} failed) -> {args.output}")
    return 0
