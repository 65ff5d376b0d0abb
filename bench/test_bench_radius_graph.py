"""pytest-benchmark view of the radius-graph workloads (run explicitly: python -m pytest bench)."""

import pytest

from bench_radius_graph import runners_for
from problems import small_crystals

PROBLEM = small_crystals(200)


@pytest.mark.parametrize("label", ["e3relax:cpp", "e3relax:torch", "vesin", "pymatgen", "matscipy"])
def test_radius_graph_small_crystals(benchmark, label):
    runners = runners_for(PROBLEM, skip=())
    if label not in runners:
        pytest.skip(f"{label} is not installed")
    benchmark.group = PROBLEM.name
    pairs = benchmark(runners[label])
    assert pairs > 0
