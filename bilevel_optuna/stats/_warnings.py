"""Warning classes for data a test cannot use; like scipy, they warn and return NaN."""

from __future__ import annotations

import os
import sys
import warnings

import bilevel_optuna


class DegenerateDataWarning(RuntimeWarning):
    """The data make a statistic undefined: all values equal, all differences zero, n < 2.

    The statistic and p-value come back as NaN; nothing is raised.
    """


class NoPowerWarning(UserWarning):
    """The sample is too small for the test to ever reach the significance level.

    Example: the two-sided Wilcoxon signed-rank test on 5 pairs cannot give a p-value below
    ``2 / 2**5 = 0.0625``. The p-value then comes back as NaN and the result says why.
    """


_PACKAGE_DIR = os.path.dirname(os.path.abspath(bilevel_optuna.__file__))


def _warn(message: str, category: type[Warning]) -> None:
    """Warn with the stack level of the first frame outside this package, the user's line."""
    frame = sys._getframe(1)  # the caller of _warn is stacklevel 2
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)
