"""Out-of-range graph indices handed to the compiled ops raise ValueError naming the field instead of
reading outside a tensor (they segfaulted). Each case runs in a child process, so a crash is a
failed test and not a dead test session."""

import subprocess
import sys

import pytest

from e3relax_fast.ops import _library

pytestmark = pytest.mark.skipif(not _library.status().loaded, reason="the op library is not built")

CASE = r"""
import torch, e3relax_fast
from e3relax_fast.ops import message_graph
n, f = 4, 8
edge_index = torch.tensor([[1, 2, 3, 0], [0, 1, 2, 3]])
rowptr, source, target, perm, source_ptr = message_graph(edge_index, n)
phi, vec = torch.randn(n, 3 * f, dtype=torch.float64), torch.randn(n, 3, f, dtype=torch.float64)
w, unit = torch.randn(4, 3 * f, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
graph = dict(rowptr=rowptr, source=source, target=target, perm=perm, source_ptr=source_ptr)
graph[FIELD] = graph[FIELD].clone()
graph[FIELD][INDEX] = VALUE
try:
    if OP == "vector_message":
        torch.ops.e3relax.vector_message(phi, w, vec, unit, graph["rowptr"], graph["source"], graph["target"],
                                         graph["perm"], graph["source_ptr"])
    else:
        torch.ops.e3relax.radial_vector_message(phi, torch.rand(4, dtype=torch.float64) + 1,
                                                torch.randn(3 * f, 16, dtype=torch.float64),
                                                torch.randn(3 * f, dtype=torch.float64), 30.0, 5, vec, unit,
                                                graph["rowptr"], graph["source"])
except ValueError as err:
    print("ValueError:", err)
"""


@pytest.mark.parametrize("op, field, index, value", [
    ("vector_message", "source", 0, 1 << 40), ("vector_message", "source", 1, -3),
    ("vector_message", "target", 2, 99), ("vector_message", "perm", 0, 4),
    ("vector_message", "rowptr", 2, 100), ("vector_message", "source_ptr", -1, 2),
    ("radial_vector_message", "source", 0, 1 << 40), ("radial_vector_message", "rowptr", 1, 9),
])
def test_out_of_range_indices_raise_naming_the_field(op, field, index, value):
    code = CASE.replace("FIELD", repr(field)).replace("INDEX", str(index)).replace("VALUE", str(value))
    code = code.replace("OP ==", f"{op!r} ==")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"crashed with {done.returncode}: {done.stderr[-400:]}"
    assert f"field '{field}'" in done.stdout, done.stdout + done.stderr[-400:]


def test_the_checks_can_be_switched_off():
    code = CASE.replace("FIELD", "'source'").replace("INDEX", "0").replace("VALUE", "1").replace("OP ==", "'vector_message' ==")
    done = subprocess.run([sys.executable, "-c", code + "\nprint('ran')"], capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "E3RELAX_SKIP_INDEX_CHECKS": "1"})
    assert done.returncode == 0 and "ran" in done.stdout  # an in-range change: runs either way
