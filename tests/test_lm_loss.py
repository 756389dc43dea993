"""The fused LM head + loss equals the plain head and cross-entropy: loss and both gradients, with the CPU
kernel's softmax (mswelu.ops.cpu_kernels) and with the PyTorch one."""

from __future__ import annotations

import pytest
import torch

from mswelu.models.build import lm_loss
from mswelu.models.configuration import MsweluConfig
from mswelu.models.modeling import MsweluForCausalLM
from mswelu.ops.lm_loss import linear_cross_entropy, next_token_loss, split_window

pytestmark = pytest.mark.usefixtures("kernels_or_torch")


def _plain(hidden, weight, targets):
    return next_token_loss(hidden @ weight.T, targets)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_fused_equals_plain_in_fp64(chunk_rows: int) -> None:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 11, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(40, 8, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 40, (3, 11), generator=g)
    targets[0, :4] = -100  # ignored positions are neither scored nor counted
    ref = _plain(hidden, weight, targets)
    ref_grads = torch.autograd.grad(ref * 2.5, (hidden, weight))  # a non-unit output gradient
    out = linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows)
    grads = torch.autograd.grad(out * 2.5, (hidden, weight))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_gradcheck() -> None:
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (5,), generator=g)
    assert torch.autograd.gradcheck(
        lambda h, w: linear_cross_entropy(h, w, targets, chunk_rows=2), (hidden, weight)
    )


def test_fused_under_bf16_autocast_is_as_close_to_fp64_as_the_plain_head() -> None:
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(64, 32, generator=g, requires_grad=True)
    weight = (0.2 * torch.randn(500, 32, generator=g)).requires_grad_()
    targets = torch.randint(0, 500, (64,), generator=g)
    exact = _plain(hidden.double(), weight.double(), targets)
    exact_grads = torch.autograd.grad(exact, (hidden, weight))
    errors = {}
    for name, fn in (
        ("plain", lambda: next_token_loss(torch.nn.functional.linear(hidden, weight), targets)),
        ("fused", lambda: linear_cross_entropy(hidden, weight, targets, chunk_rows=16)),
    ):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn()
        assert loss.dtype == torch.float32
        grads = torch.autograd.grad(loss, (hidden, weight))
        errors[name] = [abs(float(loss.detach()) - float(exact.detach()))] + [
            float((a - b).abs().max() / b.abs().max()) for a, b in zip(grads, exact_grads, strict=True)
        ]
    for fused, plain in zip(errors["fused"], errors["plain"], strict=True):
        assert fused <= 2 * plain + 1e-6, errors


def test_no_grad_evaluation_and_bad_shapes() -> None:
    hidden, weight = torch.randn(4, 3), torch.randn(6, 3)
    targets = torch.tensor([0, 5, -100, 2])
    with torch.no_grad():
        torch.testing.assert_close(
            linear_cross_entropy(hidden, weight, targets), _plain(hidden, weight, targets)
        )
    with pytest.raises(ValueError, match="do not match"):
        linear_cross_entropy(hidden, weight, targets[:3])
    with pytest.raises(ValueError, match="weight must be"):
        linear_cross_entropy(hidden, weight.T, targets)
    with pytest.raises((IndexError, RuntimeError), match="out of (range|bounds)"):
        linear_cross_entropy(hidden, weight, torch.tensor([0, 6, 1, 2]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_default_chunks_over_a_large_vocabulary(dtype) -> None:
    """The default chunking (by bytes, equal chunks; several chunks here) gives the plain head's loss and
    gradients, with a loss-gradient scale other than 1 and ignored rows."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 300, 16, generator=g, requires_grad=True)
    weight = (0.3 * torch.randn(60_000, 16, generator=g)).requires_grad_()
    targets = torch.randint(0, 60_000, (2, 300), generator=g)
    targets[1, 5:9] = -100
    results = []
    for fn in (_plain, linear_cross_entropy):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = fn(hidden, weight, targets)
        results.append((loss, *torch.autograd.grad(loss * 0.5, (hidden, weight))))
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-4}
    for ours, ref in zip(*reversed(results), strict=True):
        torch.testing.assert_close(ours, ref, **tol)


def test_model_shift_labels_give_the_logits_loss_and_its_gradients() -> None:
    torch.manual_seed(0)
    cfg = MsweluConfig(vocab_size=97, d_model=32, n_layers=2, d_state=4, max_seq_len=16)
    model = MsweluForCausalLM(cfg).double()
    window = torch.randint(0, 97, (2, 13))
    x, y = split_window(window)
    plain = next_token_loss(model(input_ids=x).logits, y)
    plain_grads = torch.autograd.grad(plain, list(model.parameters()))
    out = model(input_ids=x, shift_labels=y)
    assert out.logits is None
    fused_grads = torch.autograd.grad(lm_loss(model, x, y), list(model.parameters()))
    # (the model's logits are fp32 by contract; the fused path stays fp64 here: compare at fp32 precision)
    torch.testing.assert_close(out.loss.float(), plain, rtol=1e-6, atol=1e-6)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    # labels (shifted in the model: the last position unscored) are the same loss on a window one longer
    labelled = model(input_ids=window, labels=window)
    torch.testing.assert_close(
        labelled.loss.float(), next_token_loss(labelled.logits[:, :-1], y), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ValueError, match="not both"):
        model(input_ids=x, shift_labels=y, labels=x)
    with pytest.raises(TypeError, match="targets"):
        model(input_ids=x, targets=y)  # a misspelt or retired keyword is an error, never ignored


def test_per_token_terms_are_the_plain_cross_entropy_and_sum_to_the_fused_loss() -> None:
    """:func:`linear_token_losses`: each token's term is the plain head's cross-entropy (fp64, 0 where
    ignored); under bf16 autocast they add up to the fused loss to fp32 rounding (the same chunks and row
    loss), so an evaluation's per-document sums give the mean its other evaluations report."""
    import torch.nn.functional as F

    from mswelu.ops.lm_loss import linear_token_losses

    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(4, 9, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(50, 8, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 50, (4, 9), generator=g)
    targets[1, :3] = -100
    terms = linear_token_losses(hidden, weight, targets)
    plain = F.cross_entropy((hidden @ weight.T).reshape(-1, 50), targets.reshape(-1), reduction="none")
    assert terms.shape == targets.shape
    torch.testing.assert_close(terms.double(), plain.view(4, 9), rtol=1e-6, atol=1e-6)  # fp32 terms
    assert bool((terms[1, :3] == 0).all())
    h32, w32 = hidden.float(), weight.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mean = linear_cross_entropy(h32, w32, targets)
        bf16_terms = linear_token_losses(h32, w32, targets)
    valid = int((targets != -100).sum())
    assert float(bf16_terms.sum()) / valid == pytest.approx(float(mean), rel=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        linear_token_losses(hidden, weight, targets[:, :-1])
