"""Timing and reporting shared by the benchmark scripts: median wall time, JSON lines with the machine."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from typing import Any, Callable

import torch


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far. VmHWM belongs to the process's own address space;
    ru_maxrss does not: Linux carries it over from the forked parent across exec, so a child started by
    a parent that once held more memory would report the parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__), timeout=10).stdout.strip()
    except OSError:
        commit = ""
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "commit": commit}


def write_json_lines(path: str | None, rows: list[dict]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def bench_parser(doc: str, count: int, batched: bool = True, count_help: str = "crystals (4-64 atoms)"):
    """The options every model benchmark shares: --smoke, --preset, --count, --json (and, for batched
    runs, --batch-size and --repeats)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few tiny inputs: checks the script, measures nothing")
    parser.add_argument("--preset", nargs="+", default=["small", "paper"], choices=["small", "paper"])
    parser.add_argument("--count", type=int, default=count, help=count_help)
    if batched:
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="append one JSON line per configuration to this file")
    return parser
