"""``bilevel-optuna dashboard`` on a real bilevel run, checked in a real headless Chromium.

The run is made by :func:`run_bilevel_study` as a user makes one, and the dashboard is started
with the command the run prints (no ``--artifact-dir``): the report stored as an artifact of the
outer study shows, every study says what it is, inner studies name their objective, and the
rationale beside each LLM trial is a reason or "none given".
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from bilevel_optuna import _attrs

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def run_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from bilevel_optuna.studies import BilevelSettings
    from bilevel_optuna.studies import OuterSettings
    from bilevel_optuna.studies import OuterSpace
    from bilevel_optuna.studies import run_bilevel_study

    folder = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{folder}/run.db"
    run_bilevel_study(
        "branin",
        storage=url,
        run_name="dash",
        n_outer_trials=1,
        n_inner_trials=3,
        n_repeats=1,
        settings=BilevelSettings(
            outer=OuterSettings(
                baselines=("random", "tpe"),
                space=OuterSpace(
                    temperature=0.5,
                    history_size=15,
                    history_order="best",
                    template="default",  # asks for a rationale
                    n_candidates=1,
                    mechanisms=[],
                ),
                start_from=(),
            )
        ),
    )
    return url


@pytest.fixture(scope="module")
def dashboard(run_url: str) -> Iterator[str]:
    """``bilevel-optuna dashboard URL``, as the run prints it, on a free port."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bilevel_optuna", "dashboard", run_url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/api/meta", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError("the dashboard did not start") from None
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert "artifacts:" in out and "run_artifacts" in out, out


def _driver():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip(
            "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


def _wait_for_text(driver, text: str, timeout: float = 60.0) -> str:
    deadline = time.time() + timeout
    body = ""
    while time.time() < deadline:
        body = driver.find_element("tag name", "body").text
        if text in body:
            return body
        time.sleep(0.3)
    raise AssertionError(f"{text!r} did not appear; the page shows:\n{body[:3000]}")


def _study_id(url: str, name: str) -> int:
    storage = optuna.storages.get_storage(url)
    return storage.get_study_id_from_name(name)


def test_the_browser_test_runs_where_chromium_is_installed() -> None:
    # Debian's chromium and chromium-driver are what this machine and CI install: where they
    # are, the test below must run, not skip.
    if Path("/usr/bin/chromium").exists():
        assert CHROMIUM and CHROMEDRIVER
        pytest.importorskip("selenium")


def test_the_dashboard_shows_the_run_as_the_run_describes_it(
    run_url: str, dashboard: str, tmp_path: Path
) -> None:
    outer = optuna.load_study(study_name="dash", storage=run_url)
    best = outer.user_attrs[_attrs.BEST_ARM]
    inner_name = f"dash/{best}/branin/seed-0"
    driver = _driver()
    try:
        driver.set_window_size(1400, 1000)
        # Every study is listed: the outer one, the configuration's and the baselines'.
        driver.get(dashboard + "/dashboard/")
        body = _wait_for_text(driver, inner_name)
        for name in ("dash/random/branin/seed-0", "dash/tpe/branin/seed-0"):
            assert name in body
        # The outer study: its report and plots, found without --artifact-dir, and its role.
        driver.get(f"{dashboard}/dashboard/studies/{_study_id(run_url, 'dash')}")
        body = _wait_for_text(driver, "comparison.md")
        assert "Study Artifacts" in body and "comparison_anytime.png" in body
        driver.save_screenshot(str(tmp_path / "outer.png"))
        # An inner study: what it is, in its user attributes, and its objective's name.
        driver.get(f"{dashboard}/dashboard/studies/{_study_id(run_url, inner_name)}")
        body = _wait_for_text(driver, "inner study of outer trial 0")
        assert "bilevel:role" in body and "branin" in body
        # Its trials: the model's reason, or "none given", never empty words.
        driver.get(f"{dashboard}/dashboard/studies/{_study_id(run_url, inner_name)}/trials")
        body = _wait_for_text(driver, "llm:rationale")
        for line in body.splitlines():
            if line.startswith("llm:rationale"):
                reason = line[len("llm:rationale") :].strip()
                assert reason == "none given" or any(c.isalpha() for c in reason), line
        driver.save_screenshot(str(tmp_path / "trials.png"))
    finally:
        driver.quit()
    inner = optuna.load_study(study_name=inner_name, storage=run_url)
    assert inner.metric_names == ["branin"]
    reasons = [t.user_attrs.get(_attrs.RATIONALE) for t in inner.trials]
    assert all(r == "none given" or (r and any(c.isalpha() for c in r)) for r in reasons), reasons
