"""``bilevel-optuna run`` against endpoints that cannot serve it: one line, exit status 1.

Each case runs the console script as a user would (a subprocess), against a port where nothing
listens or a scripted endpoint (tests/chat_tests/_scripted.py) that answers 401 or does not
serve the model.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from chat_tests._scripted import ScriptedEndpoint
from chat_tests._scripted import error
from chat_tests._scripted import free_port

SPEC = """
[run]
name = "endpoint"
storage = "sqlite:///{db}"

[inner]
objectives = ["branin"]
n_trials = 2
n_repeats = 1

[outer]
n_trials = 1
baselines = ["random"]
prune = false
"""


def _run(tmp_path: Path, model: str, *extra: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "endpoint.toml"
    spec.write_text(SPEC.format(db=tmp_path / "endpoint.db"))
    return subprocess.run(
        [sys.executable, "-m", "bilevel_optuna", "run", str(spec), "--model", model, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("bilevel-optuna run: error: "), lines[0]
    return lines[0]


def test_unreachable_endpoint_ends_the_run_with_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    line = _one_error_line(_run(tmp_path, f"openai:gpt-4o-mini@{url}"))
    assert f"Cannot reach {url} (" in line
    assert "Check that the server runs and the base URL is right" in line
    assert not (tmp_path / "endpoint.db").exists()  # checked before anything is stored


def test_refused_key_ends_the_run_with_one_line(tmp_path: Path) -> None:
    endpoint = ScriptedEndpoint([], models=error(401, "Invalid API key."))
    try:
        line = _one_error_line(_run(tmp_path, f"openai:gpt-4o-mini@{endpoint.base_url}"))
    finally:
        endpoint.close()
    assert f"{endpoint.base_url} refused the API key (401: Invalid API key.)" in line
    assert "Set OPENAI_API_KEY" in line


def test_unserved_model_ends_the_run_listing_the_served_ones(tmp_path: Path) -> None:
    endpoint = ScriptedEndpoint(
        [error(404, "The model `gpt-4o-mini` does not exist.")], models=["smollm2", "qwen"]
    )
    try:
        line = _one_error_line(_run(tmp_path, f"openai:gpt-4o-mini@{endpoint.base_url}"))
    finally:
        endpoint.close()
    assert f"{endpoint.base_url} does not serve model 'gpt-4o-mini'" in line
    assert "It serves: qwen, smollm2." in line


@pytest.mark.parametrize("value,phrase", [('"ignore"', "on_model_error must be one of")])
def test_a_wrong_policy_key_is_an_error_before_the_run(
    tmp_path: Path, value: str, phrase: str
) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.format(db=tmp_path / "bad.db").replace(
        '[run]\n', f"[run]\non_model_error = {value}\n"
    ))
    done = subprocess.run(
        [sys.executable, "-m", "bilevel_optuna", "run", str(spec)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = _one_error_line(done)
    assert phrase in line and "[run]" in line
