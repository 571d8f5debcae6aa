"""Statistics across repeats: every claim is a test on trial values read from the storage.

:func:`compare` is the entry point (which studies: :class:`StudySelection`; how they are
tested: :class:`CompareSettings`); the building blocks (tests, effect size, anytime curves,
noise floor) are public too, so they can be used on plain arrays. A result is rendered by
functions over it, as in ``optuna.visualization``: :func:`to_text`, :func:`to_markdown`,
:func:`write_plots` (the result's methods of the same names are aliases).
"""

from __future__ import annotations

from bilevel_optuna.stats._anytime import AnytimeCurve
from bilevel_optuna.stats._anytime import anytime_curve
from bilevel_optuna.stats._anytime import best_so_far
from bilevel_optuna.stats._anytime import normalized_auc
from bilevel_optuna.stats._compare import compare
from bilevel_optuna.stats._effect import A12Result
from bilevel_optuna.stats._effect import vargha_delaney_a12
from bilevel_optuna.stats._hypothesis import NemenyiResult
from bilevel_optuna.stats._hypothesis import SignificanceResult
from bilevel_optuna.stats._hypothesis import friedman_test
from bilevel_optuna.stats._hypothesis import holm
from bilevel_optuna.stats._hypothesis import kruskal_test
from bilevel_optuna.stats._hypothesis import nemenyi_test
from bilevel_optuna.stats._hypothesis import paired_test
from bilevel_optuna.stats._hypothesis import unpaired_test
from bilevel_optuna.stats._load import TRUE_VALUE
from bilevel_optuna.stats._load import StudyRecord
from bilevel_optuna.stats._load import load_arms
from bilevel_optuna.stats._noise import NoiseFloorResult
from bilevel_optuna.stats._noise import noise_floor
from bilevel_optuna.stats._plots import write_plots
from bilevel_optuna.stats._report import claims
from bilevel_optuna.stats._report import to_markdown
from bilevel_optuna.stats._report import to_text
from bilevel_optuna.stats._results import ArmSummary
from bilevel_optuna.stats._results import CompareResult
from bilevel_optuna.stats._results import PairwiseComparison
from bilevel_optuna.stats._settings import CompareSettings
from bilevel_optuna.stats._settings import StudySelection
from bilevel_optuna.stats._summary import Summary
from bilevel_optuna.stats._summary import summarize
from bilevel_optuna.exceptions import DegenerateDataWarning
from bilevel_optuna.exceptions import NoPowerWarning

__all__ = [
    "A12Result",
    "AnytimeCurve",
    "ArmSummary",
    "CompareResult",
    "CompareSettings",
    "DegenerateDataWarning",
    "NemenyiResult",
    "NoPowerWarning",
    "NoiseFloorResult",
    "PairwiseComparison",
    "SignificanceResult",
    "StudyRecord",
    "StudySelection",
    "Summary",
    "TRUE_VALUE",
    "anytime_curve",
    "claims",
    "best_so_far",
    "compare",
    "friedman_test",
    "holm",
    "kruskal_test",
    "load_arms",
    "nemenyi_test",
    "noise_floor",
    "normalized_auc",
    "paired_test",
    "summarize",
    "to_markdown",
    "to_text",
    "unpaired_test",
    "vargha_delaney_a12",
    "write_plots",
]
