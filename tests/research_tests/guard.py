"""Skip marker for tests that need the whole boundary (bubblewrap and libseccomp)."""

import pytest

from bilevel_optuna.research._sandbox import boundary_problems

_PROBLEMS = boundary_problems()
needs_boundary = pytest.mark.skipif(
    bool(_PROBLEMS), reason="the boundary cannot be built here: " + "; ".join(_PROBLEMS)
)
