from __future__ import annotations

import math

import numpy as np
import pytest

from bilevel_optuna.objectives import MarkovSource


def _h(p: float) -> float:
    """Binary entropy in bits."""
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


@pytest.mark.parametrize("p, q", [(0.3, 0.1), (0.5, 0.5), (0.9, 0.2), (0.01, 0.7)])
def test_two_state_chain_matches_closed_form(p: float, q: float) -> None:
    # Stationary distribution (q, p) / (p + q); entropy rate = sum_i pi_i H(row i).
    source = MarkovSource(transitions=np.array([[1 - p, p], [q, 1 - q]]))
    expected = q / (p + q) * _h(p) + p / (p + q) * _h(q)
    assert source.entropy_rate == pytest.approx(expected, rel=1e-12)
    assert source.stationary == pytest.approx([q / (p + q), p / (p + q)], rel=1e-12)


def test_iid_source_has_the_entropy_of_its_distribution() -> None:
    probs = np.array([0.5, 0.25, 0.125, 0.125])
    source = MarkovSource(transitions=probs)
    assert source.order == 0
    assert source.entropy_rate == pytest.approx(1.75, rel=1e-12)


def test_order_two_chain_that_ignores_the_older_symbol() -> None:
    # P(b | a1, a2) = Q(b | a2): the order-2 chain is the order-1 chain Q in disguise.
    q = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    as_order2 = np.broadcast_to(q[None, :, :], (3, 3, 3)).copy()
    assert MarkovSource(transitions=as_order2).entropy_rate == pytest.approx(
        MarkovSource(transitions=q).entropy_rate, rel=1e-12
    )


def test_cyclic_chain_has_zero_entropy_rate() -> None:
    cycle = np.roll(np.eye(4), 1, axis=1)  # 0 -> 1 -> 2 -> 3 -> 0
    source = MarkovSource(transitions=cycle)
    assert source.entropy_rate == pytest.approx(0.0, abs=1e-12)
    sample = source.sample(3, 12, np.random.default_rng(0))
    assert np.all(np.diff(sample, axis=1) % 4 == 1)


@pytest.mark.parametrize("vocab_size, order", [(16, 2), (8, 1), (4, 3), (16, 3)])
def test_sampled_log_loss_converges_to_entropy_rate(vocab_size: int, order: int) -> None:
    source = MarkovSource(vocab_size=vocab_size, order=order, seed=1)
    sample = source.sample(400, 200, np.random.default_rng(2))
    assert sample.shape == (400, 200)
    assert sample.min() >= 0 and sample.max() < vocab_size
    # About 80k symbols: the sample mean of -log2 p is within a few standard errors.
    assert source.log_loss(sample) == pytest.approx(source.entropy_rate, abs=0.03)


def test_stationary_distribution_is_invariant() -> None:
    source = MarkovSource(vocab_size=5, order=2, seed=3)
    pi = source.stationary
    joint = pi.reshape(25, 1) * source.transitions.reshape(25, 5)
    moved = joint.reshape(5, 25).sum(axis=0)  # drop the oldest symbol
    assert moved == pytest.approx(pi, abs=1e-14)
    assert pi.sum() == pytest.approx(1.0)


def test_large_context_space_uses_iteration_and_agrees() -> None:
    source = MarkovSource(vocab_size=16, order=3, seed=0)  # 4096 contexts: power iteration
    pi = source.stationary
    assert source._shift(pi) == pytest.approx(pi, abs=1e-15)
    sample = source.sample(300, 200, np.random.default_rng(0))
    assert source.log_loss(sample) == pytest.approx(source.entropy_rate, abs=0.03)


def test_design_calibration_source() -> None:
    # DESIGN.md: an order-2 source over 16 symbols with entropy rate 1.771 bits per symbol.
    assert MarkovSource(vocab_size=16, order=2, seed=0).entropy_rate == pytest.approx(
        1.771, abs=5e-4
    )


def test_same_seed_same_source_and_sample() -> None:
    a = MarkovSource(vocab_size=6, order=2, seed=5)
    b = MarkovSource(vocab_size=6, order=2, seed=5)
    assert np.array_equal(a.transitions, b.transitions)
    assert np.array_equal(
        a.sample(4, 10, np.random.default_rng(1)), b.sample(4, 10, np.random.default_rng(1))
    )
    assert not np.array_equal(
        a.transitions, MarkovSource(vocab_size=6, order=2, seed=6).transitions
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vocab_size": 1}, "vocab_size"),
        ({"order": -1}, "order"),
        ({"concentration": 0.0}, "concentration"),
        ({"vocab_size": 100, "order": 4}, "at most 1e6"),
        ({"transitions": np.array([[0.5, 0.6], [0.5, 0.5]])}, "sum to 1"),
        ({"transitions": np.ones((2, 3)) / 3}, "shape"),
        ({"transitions": np.eye(2)}, "stationary"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MarkovSource(**kwargs)  # type: ignore[arg-type]
