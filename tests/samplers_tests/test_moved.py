"""The mechanisms' old module paths still load (``samplers/_moved.py``).

Mechanism files users wrote and sources stored before the move may import the old private
paths; a generated source (which may import ``bilevel_optuna.samplers`` only) passes the gate
and loads as before.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bilevel_optuna import samplers
from bilevel_optuna.research._gate import static_check
from bilevel_optuna.samplers import load_mechanism
from bilevel_optuna.samplers import load_mechanism_source
from bilevel_optuna.samplers._moved import OLD_PATHS

#: A mechanism file in the old spelling: the base and the geometry from their old modules.
OLD_FILE = textwrap.dedent("""
    import numpy as np

    from bilevel_optuna.samplers._geometry import encode
    from bilevel_optuna.samplers._mechanism import Mechanism
    from bilevel_optuna.samplers._mechanism import Review
    from bilevel_optuna.samplers._tabu import TabuMechanism


    class OldStyle(Mechanism):
        name = "old_style"
        version = "1"

        def review(self, candidate, context):
            assert isinstance(TabuMechanism(), Mechanism)
            if encode([candidate], context.search_space).min() < 0.0:
                return Review.reject("outside the cube")
            return Review.accept()
    """)

#: A Level 2 source as the research prompts asked for it before and after the move.
GENERATED = textwrap.dedent('''
    from optuna.distributions import FloatDistribution
    from bilevel_optuna.samplers import Mechanism, Review, normalize


    class KeepInside(Mechanism):
        """Rejects a candidate on the edge of the cube."""

        name = "keep_inside"
        version = "1"

        def __init__(self, *, margin: float = 0.01) -> None:
            self.margin = margin

        @classmethod
        def search_space(cls):
            return {"margin": FloatDistribution(0.0, 0.1)}

        def review(self, candidate, context):
            u = normalize(candidate, context.search_space)
            if min(u) < self.margin:
                return Review.reject("on the edge")
            return Review.accept()
    ''')


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_each_old_path_is_the_moved_module(old: str) -> None:
    module = importlib.import_module(old)
    assert module is OLD_PATHS[old]
    assert module.__name__.startswith("bilevel_optuna.samplers.mechanisms._")
    assert getattr(samplers, old.rpartition(".")[2]) is module


def test_old_names_are_the_same_classes() -> None:
    from bilevel_optuna.samplers._geometry import normalize as old_normalize  # noqa: PLC0415
    from bilevel_optuna.samplers._mechanism import Mechanism as OldMechanism  # noqa: PLC0415
    from bilevel_optuna.samplers._tabu import TabuMechanism as OldTabu  # noqa: PLC0415

    assert OldMechanism is samplers.Mechanism
    assert OldTabu is samplers.TabuMechanism
    assert old_normalize is samplers.normalize


def test_a_mechanism_file_in_the_old_spelling_loads(tmp_path: Path) -> None:
    path = tmp_path / "old_style.py"
    path.write_text(OLD_FILE)
    mechanism = load_mechanism(str(path))
    assert isinstance(mechanism, samplers.Mechanism)
    assert mechanism.name == "old_style"
    assert issubclass(load_mechanism_source(OLD_FILE), samplers.Mechanism)


def test_the_old_paths_load_in_a_fresh_process_as_the_first_import() -> None:
    # Stored code may be the first thing a worker imports: the old path alone is enough.
    code = (
        "from bilevel_optuna.samplers._mechanism import Mechanism\n"
        "from bilevel_optuna.samplers.mechanisms._base import Mechanism as New\n"
        "assert Mechanism is New\n"
        "import bilevel_optuna.samplers._loading as old\n"
        "assert 'tabu' in old.mechanism_names()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_generated_source_passes_the_gate_and_loads() -> None:
    report = static_check(GENERATED)
    assert report.ok, report.reasons
    assert report.class_name == "KeepInside"
    cls = load_mechanism_source(GENERATED)
    assert issubclass(cls, samplers.Mechanism)
    assert cls.name == "keep_inside"


def test_the_gate_still_refuses_private_paths_old_or_new() -> None:
    for path in ("bilevel_optuna.samplers._mechanism", "bilevel_optuna.samplers.mechanisms._base"):
        source = GENERATED.replace("bilevel_optuna.samplers import", f"{path} import")
        assert not static_check(source).ok
