"""The fused, banded C++ radial_filter: equal to the reference (which materialises the whole basis) to
rounding, exact gradients, registered properly, deterministic across thread counts."""

import pytest
import torch
from torch.library import opcheck

from e3relax_fast.ops import backend_report, radial_filter, radial_filter_reference

pytestmark = pytest.mark.skipif(
    not dict((e.backend, e.available) for e in backend_report()["radial_filter"])["cpp"],
    reason="op library built without the kernel (E3RELAX_BUILD=none); tests/ops/test_library.py "
           "fails unless that was asked for")

CUTOFF = 30.0


def inputs(num_edges=300, channels=24, num_basis=128, seed=0, dtype=torch.float64, far=False):
    g = torch.Generator().manual_seed(seed)
    # edge lengths as in E3Relax (0.5-8 Å) plus the corners: zero, the band edges, at and beyond the cutoff
    distance = torch.rand(num_edges, generator=g, dtype=dtype) * 7.5 + 0.5
    corners = torch.tensor([0.0, 1e-9, CUTOFF / (num_basis - 1) * 4.5, CUTOFF * 0.999, CUTOFF, CUTOFF * 1.5],
                           dtype=dtype)
    distance = torch.cat([distance, corners] + ([torch.rand(50, generator=g, dtype=dtype) * CUTOFF] if far else []))
    weight = torch.randn(channels, num_basis, generator=g, dtype=dtype) / num_basis ** 0.5
    bias = torch.randn(channels, generator=g, dtype=dtype)
    return distance, weight, bias


@pytest.mark.parametrize("num_basis", [2, 16, 128])
@pytest.mark.parametrize("seed", range(3))
def test_float64_matches_the_full_basis_to_rounding(num_basis, seed):
    distance, weight, bias = inputs(num_basis=num_basis, seed=seed, far=True)
    fused = radial_filter(distance, weight, bias, CUTOFF, 5, backend="cpp")
    reference = radial_filter_reference(distance, weight, bias, CUTOFF, 5)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-13)
    beyond = distance >= CUTOFF
    assert int(beyond.sum()) >= 2 and torch.equal(fused[beyond], bias.expand(int(beyond.sum()), -1))  # bias alone


def test_float32_is_as_close_as_the_references_own_rounding():
    distance, weight, bias = inputs()
    exact = radial_filter_reference(distance, weight, bias, CUTOFF, 5)
    own_error = (radial_filter_reference(distance.float(), weight.float(), bias.float(), CUTOFF, 5).double()
                 - exact).abs().max()
    fused = radial_filter(distance.float(), weight.float(), bias.float(), CUTOFF, 5, backend="cpp")
    assert (fused.double() - exact).abs().max() <= 2 * own_error + 1e-7


def test_gradcheck_distance_weight_and_bias():
    distance, weight, bias = inputs(num_edges=20, channels=5, num_basis=32)
    distance = distance[:-2]  # beyond the cutoff the function is flat: fine, but not worth the probes
    args = [t.clone().requires_grad_(True) for t in (distance, weight, bias)]
    assert torch.autograd.gradcheck(lambda d, w, b: torch.ops.e3relax.radial_filter(d, w, b, CUTOFF, 5), args)


def test_gradients_equal_the_references():
    distance, weight, bias = inputs(far=True)
    grad_out = torch.randn(distance.shape[0], weight.shape[0], dtype=torch.float64)
    results = []
    for backend in ("cpp", "torch"):
        args = [t.clone().requires_grad_(True) for t in (distance, weight, bias)]
        radial_filter(*args, CUTOFF, 5, backend=backend).backward(grad_out)
        results.append([a.grad for a in args])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_opcheck():
    distance, weight, bias = inputs(num_edges=40, channels=6, num_basis=16)
    args = (distance.requires_grad_(True), weight.requires_grad_(True), bias.requires_grad_(True), CUTOFF, 5)
    opcheck(torch.ops.e3relax.radial_filter.default, args)
    opcheck(torch.ops.e3relax.radial_filter_forward.default, tuple(a.detach() if torch.is_tensor(a) else a for a in args))


def test_empty_edges_and_bad_arguments():
    _, weight, bias = inputs()
    empty = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    out = radial_filter(empty, weight, bias, CUTOFF, 5, backend="cpp")
    assert out.shape == (0, weight.shape[0])
    out.sum().backward()
    with pytest.raises(ValueError, match="field 'bias'"):
        radial_filter(empty, weight, bias[:-1], CUTOFF, 5, backend="cpp")
    with pytest.raises(ValueError, match="cutoff"):
        radial_filter(empty, weight, bias, -1.0, 5, backend="cpp")


def test_bit_identical_across_thread_counts():
    distance, weight, bias = inputs(num_edges=20000, channels=64)
    grad_out = torch.randn(distance.shape[0], weight.shape[0], dtype=torch.float64)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 1):
            torch.set_num_threads(count)
            args = [t.clone().requires_grad_(True) for t in (distance, weight, bias)]
            out = radial_filter(*args, CUTOFF, 5, backend="cpp")
            out.backward(grad_out)
            results.append([out] + [a.grad for a in args])
    finally:
        torch.set_num_threads(threads)
    for run in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, results[0]))
