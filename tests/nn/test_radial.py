import torch

from e3relax_fast.nn import GaussianRBF, PolynomialEnvelope


def test_envelope_p5_is_the_papers_polynomial_and_vanishes_smoothly():
    t = torch.linspace(0, 1.2, 121, dtype=torch.float64, requires_grad=True)
    env = PolynomialEnvelope(5)(t)
    expected = torch.where(t < 1, 1 - 21 * t**5 + 35 * t**6 - 15 * t**7, torch.zeros_like(t))
    torch.testing.assert_close(env, expected, rtol=0, atol=1e-12)
    one = torch.tensor([1.0 - 1e-6], dtype=torch.float64, requires_grad=True)
    value = PolynomialEnvelope(5)(one)
    (slope,) = torch.autograd.grad(value.sum(), one)
    assert abs(float(value.detach())) < 1e-12 and abs(float(slope)) < 1e-8


def test_gaussians_are_centred_on_the_grid_with_the_papers_width():
    rbf = GaussianRBF(num_basis=128, cutoff=30.0).double()
    centres = torch.arange(128, dtype=torch.float64) / 127 * 30.0
    features = rbf(centres[:10])
    # Each centre distance peaks in its own Gaussian at the envelope's value.
    assert torch.equal(features.argmax(dim=1), torch.arange(10))
    torch.testing.assert_close(features.diagonal(), PolynomialEnvelope(5)(centres[:10] / 30.0))
    # One grid step away the Gaussian has fallen to exp(-1/2).
    ratio = features[0, 1] / features[1, 1]
    torch.testing.assert_close(ratio, torch.exp(torch.tensor(-0.5, dtype=torch.float64)) *
                               PolynomialEnvelope(5)(centres[0:1] / 30)[0] / PolynomialEnvelope(5)(centres[1:2] / 30)[0])
    assert torch.count_nonzero(rbf(torch.tensor([30.0, 45.0], dtype=torch.float64))) == 0
