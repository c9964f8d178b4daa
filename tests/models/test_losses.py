import math

import torch

from steerable_alignment.models.losses import (
    btl_log_probs,
    choice_nll,
    dpl_log_probs,
    gaussian_kl,
)


def test_btl_hand_computed_value():
    # r_a = 0, r_b = log 3 -> P(b ≻ a) = 3 / (1 + 3) = 0.75.
    log_probs = btl_log_probs(torch.tensor([0.0]), torch.tensor([math.log(3.0)]))
    assert torch.allclose(log_probs.exp(), torch.tensor([[0.25, 0.75]]))


def test_btl_antisymmetry():
    generator = torch.Generator().manual_seed(0)
    r_a, r_b = torch.randn(2, 50, generator=generator)
    forward = btl_log_probs(r_a, r_b).exp()
    swapped = btl_log_probs(r_b, r_a).exp()
    # P(a ≻ b) = 1 − P(b ≻ a), and swapping the options swaps the choices.
    assert torch.allclose(forward.sum(-1), torch.ones(50))
    assert torch.allclose(forward[:, 1], swapped[:, 0])


def test_dpl_matches_closed_form():
    generator = torch.Generator().manual_seed(1)
    mean_a, mean_b = torch.randn(2, 100, dtype=torch.float64, generator=generator)
    std_a, std_b = torch.rand(2, 100, dtype=torch.float64, generator=generator) + 0.1
    z = (mean_b - mean_a) / torch.sqrt(std_a**2 + std_b**2)
    expected = torch.tensor([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in z.tolist()])
    got = dpl_log_probs(mean_a, std_a, mean_b, std_b).exp()
    assert torch.allclose(got[:, 1], expected.double(), atol=1e-12)
    assert torch.allclose(got.sum(-1), torch.ones(100, dtype=torch.float64))


def test_dpl_known_value_and_finite_tail():
    # μ_b − μ_a = 1 and s_a² + s_b² = 1 -> Φ(1).
    half = torch.tensor([math.sqrt(0.5)])
    p = dpl_log_probs(torch.tensor([0.0]), half, torch.tensor([1.0]), half).exp()
    assert abs(float(p[0, 1]) - 0.8413447460685429) < 1e-6
    # A far tail keeps a finite log-likelihood and gradient (log_ndtr).
    mean_b = torch.tensor([40.0], requires_grad=True)
    log_p = dpl_log_probs(torch.tensor([0.0]), half, mean_b, half)[0, 0]
    log_p.backward()
    assert torch.isfinite(log_p) and torch.isfinite(mean_b.grad).all()


def test_choice_nll_hand_computed_with_mask():
    log_probs = torch.log(torch.tensor([[[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]]]))  # (1, 3, 2)
    choices = torch.tensor([[1, 0, 1]])
    mask = torch.tensor([[True, True, False]])
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert torch.allclose(choice_nll(log_probs, choices, mask), torch.tensor([expected]))


def test_gaussian_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(2)
    mean_q, mean_p = torch.randn(2, 4, 8, generator=generator)
    std_q, std_p = torch.rand(2, 4, 8, generator=generator) + 0.2
    q = torch.distributions.Normal(mean_q, std_q)
    p = torch.distributions.Normal(mean_p, std_p)
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mean_q, std_q, mean_p, std_p), expected, atol=1e-6)
    assert torch.allclose(gaussian_kl(mean_q, std_q, mean_q, std_q), torch.zeros(4), atol=1e-6)


def test_dpl_probit_is_float32_under_bf16_autocast_and_for_bf16_inputs():
    # log_ndtr has no bfloat16 CPU kernel: the probit must run in float32 regardless.
    gen = torch.Generator().manual_seed(0)
    mean_a, mean_b = torch.randn(2, 64, generator=gen).unbind(0)
    std_a, std_b = (torch.rand(2, 64, generator=gen) + 0.1).unbind(0)
    expected = dpl_log_probs(mean_a, std_a, mean_b, std_b)
    inputs = [t.to(torch.bfloat16) for t in (mean_a, std_a, mean_b, std_b)]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = dpl_log_probs(*inputs)
        got_fp32_inputs = dpl_log_probs(mean_a, std_a, mean_b, std_b)
    assert got.dtype == got_fp32_inputs.dtype == torch.float32
    torch.testing.assert_close(got_fp32_inputs, expected)  # autocast changes nothing
    torch.testing.assert_close(
        got, expected, atol=0.05, rtol=0.05
    )  # only the bf16 inputs' rounding
    assert torch.isfinite(dpl_log_probs(*[t * 1e3 for t in inputs[:1]], *inputs[1:])).all()
