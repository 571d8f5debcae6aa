from __future__ import annotations

import pytest
import sources as S

from bilevel_optuna.research._gate import static_check


def test_good_source_passes_the_static_checks() -> None:
    report = static_check(S.GOOD)
    assert report.ok, report.reasons
    assert report.name == "far_from_history"
    assert report.hooks == ("prepare", "review", "choose", "after_trial")
    assert report.params == ("radius",)


@pytest.mark.parametrize(
    ("source", "stage", "reason"),
    [
        ("", "parse", "empty"),
        (S.SYNTAX_ERROR, "parse", "SyntaxError"),
        ("x = 1\n" * 10_000, "parse", "characters"),
        (S.WRONG_INTERFACE, "contract", "review must be `def review(self, candidate, context)`"),
        (S.FORBIDDEN_IMPORT, "policy", "import of 'os' is not allowed"),
        (S.OBFUSCATED_IMPORT, "policy", "'__subclasses__' is not allowed"),
        (S.OBFUSCATED_IMPORT, "policy", "computed attribute name"),
        (S.OBFUSCATED_IMPORT, "policy", "'__builtins__' is not allowed"),
        (S.OPEN_SOCKET, "policy", "import of 'socket' is not allowed"),
        (S.WRITE_FILE, "policy", "the name 'open' is not allowed"),
        (S.FORK, "policy", "import of 'os' is not allowed"),
        ("import importlib\n", "policy", "importlib"),
        ("from os import path\n", "policy", "import from 'os'"),
        ("from bilevel_optuna.chat import get_chat_model\n", "policy", "import from"),
        ("from bilevel_optuna import run_bilevel_study\n", "policy", "only the Mechanism API"),
        ("x = eval('1')\n", "policy", "'eval'"),
        ("f = (lambda: 0).__globals__\n", "policy", "'__globals__'"),
        ("def g():\n    yield 1\nf = g().gi_frame\n", "policy", "'gi_frame'"),
        ("s = '{0.__class__}'.format(1)\n", "policy", "dunder"),
        ("import numpy as np\nnp.save('x', 1)\n", "policy", "'save'"),
        ("while True:\n    pass\n", "policy", "module level"),
        ("import optuna\noptuna.storages.RDBStorage('sqlite://')\n", "policy", "'storages'"),
        (
            "from bilevel_optuna.samplers import Mechanism\nclass A(Mechanism):\n    name = 'a'\n",
            "contract",
            "defines no hook",
        ),
        (
            "from bilevel_optuna.samplers import Mechanism\nclass A(Mechanism):\n"
            "    def prepare(self, context):\n        pass\n",
            "contract",
            "`name`",
        ),
        (
            "from bilevel_optuna.samplers import Mechanism\nclass A(Mechanism):\n    name = 'a_b'\n"
            "    def __init__(self, *, r=1.0):\n        self.r = r\n"
            "    def prepare(self, context):\n        pass\n",
            "contract",
            "not declared in search_space",
        ),
        (
            "from bilevel_optuna.samplers import Mechanism\nclass A(Mechanism):\n    name = 'a_b'\n"
            "    def __init__(self, r=1.0):\n        self.r = r\n"
            "    def prepare(self, context):\n        pass\n",
            "contract",
            "keyword-only",
        ),
        (
            "from bilevel_optuna.samplers import Mechanism\nclass A(Mechanism):\n    name = 'a_b'\n"
            "class B(Mechanism):\n    name = 'b_b'\n",
            "contract",
            "exactly one",
        ),
    ],
)
def test_bad_source_is_refused_at_the_right_stage(source: str, stage: str, reason: str) -> None:
    report = static_check(source)
    assert report.stage == stage
    assert any(reason in r for r in report.reasons), report.reasons
