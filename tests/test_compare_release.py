"""scripts/compare_release.py: the release rule (better than the shipped model on every source, from
`e3relax evaluate` summaries) says yes only when every named source is strictly better."""

import pandas as pd
import pytest

from .conftest import load_script

compare_release = load_script("compare_release")


def summary(path, model_means: dict[str, float], dummy_means: dict[str, float]):
    rows = [{"group": g, "method": "model", "metric": "coord_mae", "unit": "Å", "count": 10, "mean": v,
             "median": v, "p90": v} for g, v in model_means.items()]
    rows += [{"group": g, "method": "dummy", "metric": "coord_mae", "unit": "Å", "count": 10, "mean": v,
              "median": v, "p90": v} for g, v in dummy_means.items()]
    rows += [{"group": g, "method": "model", "metric": "volume_error", "unit": "relative", "count": 10, "mean": 9.0,
              "median": 9.0, "p90": 9.0} for g in model_means]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_the_rule_needs_every_source_strictly_better(tmp_path, capsys):
    dummy = {"a": 0.2, "b": 0.1}
    shipped = summary(tmp_path / "shipped.csv", {"a": 0.16, "b": 0.05}, dummy)
    better = summary(tmp_path / "better.csv", {"a": 0.15, "b": 0.049}, dummy)
    tied = summary(tmp_path / "tied.csv", {"a": 0.10, "b": 0.05}, dummy)
    assert compare_release.main([shipped, better, "--sources", "a", "b"]) == 0
    assert "beats the shipped model on every source" in capsys.readouterr().out
    assert compare_release.main([shipped, tied, "--sources", "a", "b"]) == 1  # b is a tie: not a win
    assert "not better on: b" in capsys.readouterr().out
    table = compare_release.compare(shipped, better, ["b"], "coord_mae")
    assert table.loc["b", "shipped"] == pytest.approx(0.5) and table.loc["b", "candidate"] == pytest.approx(0.49)


def test_a_source_missing_from_either_summary_is_an_error(tmp_path):
    shipped = summary(tmp_path / "shipped.csv", {"a": 0.16}, {"a": 0.2})
    candidate = summary(tmp_path / "candidate.csv", {"a": 0.15, "b": 0.05}, {"a": 0.2, "b": 0.1})
    with pytest.raises(SystemExit, match="missing.*b"):
        compare_release.main([shipped, candidate, "--sources", "a", "b"])
    with pytest.raises(SystemExit, match="no model and Dummy rows"):
        compare_release.main([shipped, candidate, "--sources", "a", "--metric", "rmsd"])
