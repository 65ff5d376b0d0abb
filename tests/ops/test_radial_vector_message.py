"""radial_vector_message: vector_message with its radial filter computed inside. Equal to the references
to rounding, equal bit for bit to radial_filter + vector_message where no multiply-add is fused, the
same for any thread count, registered properly, and refused under autograd (it has no backward)."""

import os
import subprocess
import sys

import pytest
import torch
from torch.library import opcheck

from e3relax_fast.ops import backend_report, message_graph, radial_vector_message, radial_vector_message_reference

pytestmark = pytest.mark.skipif(
    not dict((e.backend, e.available) for e in backend_report()["radial_vector_message"])["cpp"],
    reason="op library built without the kernel (E3RELAX_BUILD=none); tests/ops/test_library.py "
           "fails unless that was asked for")

CUTOFF = 30.0


def inputs(channels=20, nodes=40, degree=9, seed=0, dtype=torch.float64):
    """A random target-sorted graph; distances 0.5-8 Å plus zero, the cutoff and beyond (bias only)."""
    g = torch.Generator().manual_seed(seed)
    edges = nodes * degree
    target = torch.arange(nodes).repeat_interleave(degree)
    source = torch.randint(0, nodes, (edges,), generator=g)
    edge_index = torch.stack([source, target])
    distance = torch.rand(edges, generator=g, dtype=dtype) * 7.5 + 0.5
    distance[:4] = torch.tensor([0.0, CUTOFF, CUTOFF * 1.5, CUTOFF * 0.999], dtype=dtype)
    phi = torch.randn(nodes, 3 * channels, generator=g, dtype=dtype)
    weight = torch.randn(3 * channels, 128, generator=g, dtype=dtype) / 128 ** 0.5
    bias = torch.randn(3 * channels, generator=g, dtype=dtype)
    vec = torch.randn(nodes, 3, channels, generator=g, dtype=dtype)
    unit = torch.nn.functional.normalize(torch.randn(edges, 3, generator=g, dtype=dtype), dim=1)
    return phi, distance, weight, bias, vec, unit, edge_index


def fused(phi, distance, weight, bias, vec, unit, edge_index):
    return radial_vector_message(phi, distance, weight, bias, CUTOFF, 5, vec, unit, edge_index, backend="cpp")


@pytest.mark.parametrize("channels", [1, 20, 64, 128, 200])  # below, at and between the register blocks
def test_float64_equals_the_references_to_rounding(channels):
    args = inputs(channels=channels)
    with torch.no_grad():
        ours = fused(*args)
        phi, distance, weight, bias, vec, unit, edge_index = args
        reference = radial_vector_message_reference(phi, distance, weight, bias, CUTOFF, 5, vec, unit, edge_index)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_float32_is_as_close_as_the_references_own_rounding():
    args = inputs(channels=64)
    phi, distance, weight, bias, vec, unit, edge_index = args
    with torch.no_grad():
        exact = radial_vector_message_reference(phi, distance, weight, bias, CUTOFF, 5, vec, unit, edge_index)
        single = [t.float() if t.is_floating_point() else t for t in args]
        own = radial_vector_message_reference(*single[:4], CUTOFF, 5, *single[4:])
        ours = fused(*single)
    for a, b, c in zip(ours, own, exact):
        own_error = (b.double() - c).abs().max()
        assert (a.double() - c).abs().max() <= 2 * own_error + 1e-6


UNFUSED_EQUALITY = """
import torch, sys
sys.path.insert(0, {tests!r})
from test_radial_vector_message import CUTOFF, fused, inputs
from e3relax_fast.ops import radial_filter, vector_message
for dtype in (torch.float64, torch.float32):
    for channels in (20, 64, 128):
        phi, distance, weight, bias, vec, unit, edge_index = inputs(channels=channels, dtype=dtype)
        with torch.no_grad():
            one = fused(phi, distance, weight, bias, vec, unit, edge_index)
            w = radial_filter(distance, weight, bias, CUTOFF, 5, backend="cpp")
            two = vector_message(phi, w, vec, unit, edge_index, backend="cpp")
        assert all(torch.equal(a, b) for a, b in zip(one, two)), (dtype, channels)
print("equal")
"""


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_builds_without_fused_multiply_add_equal_the_two_ops_bit_for_bit(isa):
    """E3RELAX_CPU_ISA caps the kernel's instruction set, so each build runs on this machine."""
    env = {**os.environ, "E3RELAX_CPU_ISA": isa}
    code = UNFUSED_EQUALITY.format(tests=os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "equal" in result.stdout, result.stderr[-3000:]


def test_same_result_for_any_thread_count():
    args = inputs(channels=64, nodes=300)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            single = fused(*args)
        torch.set_num_threads(max(2, threads))
        with torch.no_grad():
            runs = [fused(*args) for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    for run in runs:
        assert all(torch.equal(a, b) for a, b in zip(single, run))


def test_a_precomputed_message_graph_and_empty_graphs():
    phi, distance, weight, bias, vec, unit, edge_index = inputs()
    with torch.no_grad():
        plain = fused(phi, distance, weight, bias, vec, unit, edge_index)
        with_message_graph = radial_vector_message(phi, distance, weight, bias, CUTOFF, 5, vec, unit, edge_index, "cpp",
                                         message_graph(edge_index, vec.shape[0]))
        assert all(torch.equal(a, b) for a, b in zip(plain, with_message_graph))
        none = fused(phi, distance[:0], weight, bias, vec, unit[:0], edge_index[:, :0])
    assert torch.equal(none[0], torch.zeros_like(none[0])) and torch.equal(none[1], torch.zeros_like(vec))


def test_refused_under_autograd_and_on_bad_arguments():
    phi, distance, weight, bias, vec, unit, edge_index = inputs()
    with pytest.raises(ValueError, match="no backward"):
        fused(phi.requires_grad_(True), distance, weight, bias, vec, unit, edge_index)
    phi = phi.detach()
    with torch.no_grad():
        with pytest.raises(ValueError, match="field 'weight' must be \\[3F, M\\]"):
            fused(phi, distance, weight[:-1], bias, vec, unit, edge_index)
        with pytest.raises(ValueError, match="share phi's dtype"):
            fused(phi, distance.float(), weight, bias, vec, unit, edge_index)


def test_opcheck():
    phi, distance, weight, bias, vec, unit, edge_index = inputs(channels=8, nodes=10, degree=3)
    rowptr, source = message_graph(edge_index, vec.shape[0])[:2]
    opcheck(torch.ops.e3relax.radial_vector_message.default,
            (phi, distance, weight, bias, CUTOFF, 5, vec, unit, rowptr, source),
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
