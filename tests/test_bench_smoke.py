"""The benchmark scripts run end to end in --smoke mode, agree on pair counts, and write JSON."""

import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench")


@pytest.mark.parametrize("script", ["bench_radius_graph.py", "bench_predict.py", "bench_train.py",
                                    "bench_vector_message.py", "bench_export.py",
                                    "bench_screening.py", "bench_radial_filter.py"])
def test_bench_smoke(script, tmp_path):
    out = tmp_path / "results.jsonl"
    result = subprocess.run([sys.executable, os.path.join(BENCH, script), "--smoke", "--json", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(row["smoke"] for row in rows)
    if script == "bench_radius_graph.py":
        assert all(row["pairs_agree"] for row in rows)
        assert {row["impl"] for row in rows} >= {"e3relax:torch", "vesin"}


def test_bench_train_optimizer_smoke(tmp_path):
    out = tmp_path / "results.jsonl"
    result = subprocess.run([sys.executable, os.path.join(BENCH, "bench_train.py"), "--optimizer", "--smoke",
                             "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["bench"] == "train_optimizer" and row["smoke"]
    assert row["loop_cpu_ms"] > 0 and row["fused_cpu_ms"] > 0 and row["ratio"] == row["loop_cpu_ms"] / row["fused_cpu_ms"]
