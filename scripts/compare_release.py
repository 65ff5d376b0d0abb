"""Does a candidate beat the shipped model on every validation source? (the release rule; never run by CI)

    python scripts/compare_release.py SHIPPED_summary.csv CANDIDATE_summary.csv \
        [--sources chgnet_pairs chgnet_pairs2 mp:perturbed mp_pairs mp_pairs2 perov5] [--metric coord_mae]

Both files are summaries written by ``e3relax evaluate`` (``<output>_summary.csv``) on the same
validation pairs, each model on a store of its own graph and with the same ``--symprec``; evaluate
both ways (the input's symmetry imposed and ``--symprec none``) and run this on each pair of files.
Prints, per source, the metric's mean over Dummy's mean for both models and whether the candidate's is
lower; exits 0 when it is lower on every source named, 1 otherwise (a tie is not a win). The trainer's
own validation figures are a guide, not this rule's input: they differ from evaluate's by a few
hundredths (the model card says so).
"""

import argparse
import sys

import pandas as pd

#: The sources release 3 and release 4 are judged on (configs/train/release4.yaml, data.score_sources).
DEFAULT_SOURCES = ("chgnet_pairs", "chgnet_pairs2", "mp:perturbed", "mp_pairs", "mp_pairs2", "perov5")


def ratios(summary: str, metric: str) -> pd.Series:
    """Per group: the model's mean ``metric`` over Dummy's, from an evaluate summary CSV."""
    table = pd.read_csv(summary)
    table = table[table["metric"] == metric]
    model = table[table["method"] == "model"].set_index("group")["mean"]
    dummy = table[table["method"] == "dummy"].set_index("group")["mean"]
    if model.empty or dummy.empty:
        raise SystemExit(f"{summary}: no model and Dummy rows of {metric!r} (an `e3relax evaluate -m` summary?)")
    return model / dummy


def compare(shipped: str, candidate: str, sources: list[str], metric: str) -> pd.DataFrame:
    """One row per source: ``shipped``, ``candidate`` (ratios to Dummy) and ``better`` (strictly lower)."""
    table = pd.DataFrame({"shipped": ratios(shipped, metric), "candidate": ratios(candidate, metric)})
    missing = [s for s in sources if s not in table.index or table.loc[s].isna().any()]
    if missing:
        raise SystemExit(f"sources missing from one of the summaries: {', '.join(missing)}")
    table = table.loc[list(sources)]
    table["better"] = table["candidate"] < table["shipped"]
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shipped", help="evaluate summary CSV of the shipped model")
    parser.add_argument("candidate", help="evaluate summary CSV of the candidate, same pairs and --symprec")
    parser.add_argument("--sources", nargs="+", default=list(DEFAULT_SOURCES))
    parser.add_argument("--metric", default="coord_mae")
    args = parser.parse_args(argv)
    table = compare(args.shipped, args.candidate, args.sources, args.metric)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    verdict = bool(table["better"].all())
    behind = ", ".join(table.index[~table["better"]])
    print("candidate beats the shipped model on every source" if verdict else f"not better on: {behind}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
