"""The sequential betting test behind sequential STRIP: its error bound, its certain decisions, its early stops."""

import math

import pytest
import torch

from backdoorlab.defenses.input_detectors.betting import WithoutReplacementMeanTest


def _feed(test: WithoutReplacementMeanTest, values: torch.Tensor, step: int) -> None:
    rows = torch.arange(len(values))
    for start in range(0, values.shape[1], step):
        test.update(rows, values[:, start : start + step])


def _shuffled(values: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return values.gather(1, torch.rand(values.shape, generator=gen).argsort(dim=1))


def test_wrong_side_rate_stays_below_alpha_on_skewed_populations():
    # every population has mean 0.09 < b = 0.1: mostly zeros and a few values at the top of the range, the shape
    # that broke a normal approximation; a mark 'above' is an error
    upper, size, rows = math.log2(10), 100, 4000
    base = torch.zeros(rows, size, dtype=torch.float64)
    base[:, :3] = 0.09 * size / 3  # three copies of 3 bits each
    test = WithoutReplacementMeanTest(rows, size, 0.1, upper, alpha=0.05)
    _feed(test, _shuffled(base, 0)[:, :90], 10)
    assert float(test.above.double().mean()) <= 0.05


def test_mean_above_the_boundary_is_found_early_and_rarely_wrongly():
    gen = torch.Generator().manual_seed(1)
    values = (torch.rand(500, 100, generator=gen) * 1.2).double()  # mean about 0.6 bits
    test = WithoutReplacementMeanTest(500, 100, 0.1, math.log2(10), alpha=0.005)
    _feed(test, values[:, :30], 10)
    assert float(test.above.double().mean()) > 0.95
    assert not test.below.any()


def test_certain_decisions_need_no_bet():
    test = WithoutReplacementMeanTest(2, 10, 0.5, 1.0, alpha=1e-9)
    test.update(torch.arange(2), torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]]))
    # row 0: 5 of 10 values sum to 5 = 10 * 0.5, the mean cannot fall below 0.5; row 1 cannot reach it
    assert test.above.tolist() == [True, False] and test.below.tolist() == [False, False]
    test.update(torch.arange(2), torch.zeros(2, 1))
    assert test.below.tolist() == [False, True]  # 4 values left cannot bring 5 bits
    assert test.seen.tolist() == [6, 6]
    assert torch.allclose(test.mean(torch.arange(2)), torch.tensor([5 / 6, 0.0], dtype=torch.float64))


def test_rejects_overfeeding_and_bad_parameters():
    test = WithoutReplacementMeanTest(1, 3, 0.5, 1.0)
    with pytest.raises(ValueError, match="more than size=3"):
        test.update(torch.arange(1), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="alpha"):
        WithoutReplacementMeanTest(1, 3, 0.5, 1.0, alpha=0.0)
