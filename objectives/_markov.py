"""A seeded order-k Markov source over a small alphabet, with its entropy rate computed exactly.

The entropy rate is the floor of the language-model task's val_bpb: no predictor that sees the
last ``order`` symbols can do better on average than the source's own conditional distribution.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from bilevel_optuna._checks import check_int

__all__ = ["MarkovSource"]

_DIRECT_SOLVE_MAX_STATES = 1024
_POWER_ITERATION_MAX_STEPS = 100_000


def _entropy_bits(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits along the last axis (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, -probs * np.log2(probs), 0.0)
    return np.asarray(terms.sum(axis=-1), dtype=np.float64)


class MarkovSource:
    """A stationary order-k Markov chain over ``vocab_size`` symbols.

    Each of the ``vocab_size ** order`` contexts gets its own next-symbol distribution, drawn from
    a symmetric Dirichlet with the given ``concentration`` (smaller is more predictable), unless
    ``transitions`` gives them explicitly. Sequences start from the stationary distribution, so
    every position is distributed alike.

    Args:
        vocab_size: Number of symbols.
        order: How many previous symbols the next one depends on (0 for i.i.d.).
        concentration: Dirichlet concentration of the drawn distributions.
        seed: Seed of the drawn distributions.
        transitions: Explicit next-symbol probabilities, shape ``(V,) * order + (V,)``; overrides
            the four arguments above.

    Example:

        .. code-block:: python

            source = MarkovSource(vocab_size=16, order=2, seed=0)
            source.entropy_rate  # bits per symbol, the floor of val_bpb
            source.sample(4, 33, np.random.default_rng(0)).shape  # (4, 33)
    """

    def __init__(
        self,
        *,
        vocab_size: int = 16,
        order: int = 2,
        concentration: float = 0.1,
        seed: int = 0,
        transitions: np.ndarray | None = None,
    ) -> None:
        if transitions is None:
            check_int("vocab_size", vocab_size, minimum=2)
            check_int("order", order, minimum=0)
            if vocab_size**order > 1_000_000:
                raise ValueError(
                    f"vocab_size ** order must be at most 1e6 but got {vocab_size}**{order}; "
                    "use a smaller alphabet or order."
                )
            if not (concentration > 0 and math.isfinite(concentration)):
                raise ValueError(f"concentration must be positive but got {concentration}.")
            rng = np.random.default_rng(seed)
            table = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size**order)
        else:
            arr = np.asarray(transitions, dtype=np.float64)
            vocab_size = arr.shape[-1]
            order = arr.ndim - 1
            if vocab_size < 2 or any(n != vocab_size for n in arr.shape):
                raise ValueError(
                    "transitions must have shape (V,) * order + (V,) with V >= 2 but got "
                    f"{arr.shape}."
                )
            if np.any(arr < 0) or not np.allclose(arr.sum(axis=-1), 1.0, atol=1e-9):
                raise ValueError(
                    "transitions must be non-negative and sum to 1 over the last axis."
                )
            table = arr.reshape(vocab_size**order, vocab_size)
        self.vocab_size = int(vocab_size)
        self.order = int(order)
        self.concentration = float(concentration)
        self.seed = seed
        self._table = table  # (V**order, V): next-symbol distribution per context index
        self._cdf = np.cumsum(table, axis=1)
        self._stationary = self._solve_stationary()
        self.entropy_rate = float(np.dot(self._stationary, _entropy_bits(table)))

    @property
    def transitions(self) -> np.ndarray:
        """Next-symbol probabilities, shape ``(V,) * order + (V,)``."""
        return self._table.reshape((self.vocab_size,) * (self.order + 1)).copy()

    @property
    def stationary(self) -> np.ndarray:
        """Stationary distribution of the contexts (last ``order`` symbols), flattened."""
        return self._stationary.copy()

    def _solve_stationary(self) -> np.ndarray:
        n = self._table.shape[0]
        if self.order == 0:
            return np.ones(1)
        if n <= _DIRECT_SOLVE_MAX_STATES:
            pi = self._solve_direct()
        else:
            pi = self._solve_by_iteration()
        if pi is None or not np.all(np.isfinite(pi)) or np.any(pi < -1e-9):
            raise ValueError(
                "The chain has no unique stationary distribution (it is reducible or periodic); "
                "give every context a path to every other, e.g. with strictly positive "
                "transitions."
            )
        pi = np.clip(pi, 0.0, None)
        return np.asarray(pi / pi.sum(), dtype=np.float64)

    def _shift(self, pi: np.ndarray) -> np.ndarray:
        """One step of the context chain: (a1..ak) -> (a2..ak, b) with P(b | a1..ak)."""
        v = self.vocab_size
        joint = pi[:, None] * self._table  # (V**k, V): P(a1..ak, b)
        # Sum out a1: what is left is indexed by (a2..ak, b).
        return np.asarray(joint.reshape(v, -1).sum(axis=0), dtype=np.float64)

    def _solve_direct(self) -> np.ndarray | None:
        n, v = self._table.shape[0], self.vocab_size
        rows = np.repeat(np.arange(n), v)
        cols = ((np.arange(n) % (v ** (self.order - 1))) * v)[:, None] + np.arange(v)[None, :]
        step = scipy.sparse.csr_matrix((self._table.ravel(), (rows, cols.ravel())), shape=(n, n))
        # Solve pi (I - P) = 0 with sum(pi) = 1: replace one equation by the normalization.
        system = (scipy.sparse.identity(n, format="csr") - step).T.tocoo()
        keep = system.row != n - 1
        data = np.concatenate([system.data[keep], np.ones(n)])
        row = np.concatenate([system.row[keep], np.full(n, n - 1)])
        col = np.concatenate([system.col[keep], np.arange(n)])
        rhs = np.zeros(n)
        rhs[n - 1] = 1.0
        matrix = scipy.sparse.csc_matrix((data, (row, col)), shape=(n, n))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.sparse.linalg.MatrixRankWarning)
            pi = scipy.sparse.linalg.spsolve(matrix, rhs)
        return np.atleast_1d(np.asarray(pi, dtype=np.float64))

    def _solve_by_iteration(self) -> np.ndarray | None:
        # Large context spaces: power iteration to machine precision (the direct solve fills in).
        n = self._table.shape[0]
        pi = np.full(n, 1.0 / n)
        for _ in range(_POWER_ITERATION_MAX_STEPS):
            nxt = self._shift(pi)
            if np.abs(nxt - pi).sum() < 1e-14:
                return nxt
            pi = nxt
        return None

    def sample(self, num_sequences: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``num_sequences`` independent stationary sequences of ``length`` symbols."""
        check_int("num_sequences", num_sequences, minimum=1)
        check_int("length", length, minimum=1)
        v, k = self.vocab_size, self.order
        out = np.empty((num_sequences, max(length, k)), dtype=np.int64)
        context = rng.choice(self._table.shape[0], size=num_sequences, p=self._stationary)
        for i in range(k):  # the context's symbols, most significant first
            out[:, i] = (context // v ** (k - 1 - i)) % v
        wrap = v ** (k - 1) if k > 0 else 1
        for t in range(k, out.shape[1]):
            u = rng.random(num_sequences)[:, None]
            symbol = np.minimum((u >= self._cdf[context]).sum(axis=1), v - 1)
            out[:, t] = symbol
            context = (context % wrap) * v + symbol if k > 0 else context
        return out[:, :length]

    def log_loss(self, sequences: np.ndarray) -> float:
        """Mean -log2 probability of the symbols after the first ``order`` of each sequence.

        Its expectation is ``entropy_rate``; on a sample it is the true model's val_bpb.
        """
        seqs = np.atleast_2d(np.asarray(sequences, dtype=np.int64))
        v, k = self.vocab_size, self.order
        if seqs.shape[1] <= k:
            raise ValueError(f"sequences must be longer than the order {k}.")
        context = np.zeros(seqs.shape[0], dtype=np.int64)
        for i in range(k):
            context = context * v + seqs[:, i]
        wrap = v ** (k - 1) if k > 0 else 1
        total = 0.0
        for t in range(k, seqs.shape[1]):
            total -= float(np.sum(np.log2(self._table[context, seqs[:, t]])))
            context = (context % wrap) * v + seqs[:, t] if k > 0 else context
        return total / float(seqs.shape[0] * (seqs.shape[1] - k))

    def __repr__(self) -> str:
        return (
            f"MarkovSource(vocab_size={self.vocab_size}, order={self.order}, "
            f"entropy_rate={self.entropy_rate:.4f})"
        )
