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
    """Raise ``ValueError`` unless the reports are shards 0..N-1 of one N, each once, of one run (the
    same inputs, model and settings, by the ``<report>.run.json`` that predict writes)."""
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
    given = [i for i, _ in found]
    for index in range(count):
        if given.count(index) == 0:
            raise ValueError(f"shard {index} of {count} is missing: give all {count} shard reports")
        if given.count(index) > 1:
            twice = [path for path, i in zip(reports, given) if i == index]
            raise ValueError(f"shard {index} of {count} is given twice ({', '.join(twice)})")
    _check_one_run(reports)


def _check_one_run(reports: list[str]) -> None:
    """Refuse shards whose run records name other inputs, another model or other settings."""
    import json
    import os

    first = None
    for path in reports:
        if not os.path.exists(path + ".run.json"):
            raise ValueError(f"{path}.run.json is missing: merge checks that every shard ran on the same inputs "
                             "and model (e3relax predict writes it beside the report)")
        with open(path + ".run.json") as handle:
            record = json.load(handle)
        record.pop("shard", None)
        if first is None:
            first = (path, record)
        elif record != first[1]:
            what = [key for key in ("inputs", "model", "settings") if record.get(key) != first[1].get(key)]
            raise ValueError(f"{path} comes from another run than {first[0]}: its {' and '.join(what)} differ")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..io import read_structures
    from ..io.writers import StructureWriter

    check_shards(args.reports)
    table = pd.concat([pd.read_csv(path, dtype=str, keep_default_na=False) for path in args.reports])
    place = table["input_order"].str.split(":", expand=True).astype(int)  # "<file>:<frame>" of the whole input
    table = (table.assign(_file=place[0].to_numpy(), _frame=place[1].to_numpy())
             .sort_values(["_file", "_frame"], kind="stable").drop(columns=["_file", "_frame"]))
    repeated = table["id"][table["id"].duplicated()].tolist()
    if repeated:
        raise ValueError(f"ids reported by more than one shard: {repeated[:5]}")
    table.to_csv(args.output, index=False)
    if args.structures:
        if not args.structures_output:
            raise ValueError("--structures needs --structures-output")
        structures = {}
        for record in read_structures(args.structures):
            if record.structure is None:
                raise ValueError(record.error)
            structures[record.id] = record.structure
        with StructureWriter(args.structures_output) as writer:
            for structure_id in table["id"]:  # the report's order: the whole input's
                if structure_id in structures:
                    writer.write(structure_id, structures.pop(structure_id))
        written = int(table["status"].isin(["ok", "refused"]).sum())  # a refused row writes the input geometry
        if writer.count != written:
            raise ValueError(f"the outputs hold {writer.count} structures, the reports {written} ok or refused rows")
    failed = int((table["status"] == "error").sum())
    print(f"merged {len(args.reports)} shards: {len(table)} rows ({failed} failed) -> {args.output}")
    return 0
