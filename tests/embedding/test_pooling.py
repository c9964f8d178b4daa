import pytest
import torch

from steerable_alignment.embedding import last_token_pool, mean_pool, pool

HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],  # 2 real tokens, 1 pad (right)
        [[-1.0, 0.0], [5.0, 1.0], [0.0, 8.0]],  # 3 real tokens
    ]
)  # (B=2, L=3, D=2)
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])


def test_mean_pooling_ignores_padding():
    expected = torch.tensor([[(1 + 3) / 2, (2 + 4) / 2], [(-1 + 5 + 0) / 3, (0 + 1 + 8) / 3]])
    torch.testing.assert_close(mean_pool(HIDDEN, MASK), expected)
    torch.testing.assert_close(pool(HIDDEN, MASK, "mean"), expected)


def test_last_token_pooling_takes_the_last_real_token():
    torch.testing.assert_close(
        last_token_pool(HIDDEN, MASK), torch.tensor([[3.0, 4.0], [0.0, 8.0]])
    )
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])  # left padding: the last position is real
    torch.testing.assert_close(
        pool(HIDDEN, left, "last_token"), torch.tensor([[100.0, 100.0], [0.0, 8.0]])
    )


def test_pooling_returns_float32_from_half_precision():
    out = pool(HIDDEN.to(torch.bfloat16), MASK, "mean")
    assert out.dtype == torch.float32


def test_unknown_pooling_fails():
    with pytest.raises(ValueError, match="pooling"):
        pool(HIDDEN, MASK, "max")
