"""optuna-dashboard on a bilevel storage, checked in a real headless Chromium."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import make_server

import optuna
import pytest

from bilevel_optuna import _attrs

pytestmark = pytest.mark.browser


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _storage_like_a_bilevel_run(url: str) -> None:
    """An outer study and two inner studies with the attributes a bilevel run writes."""
    import optuna_dashboard

    outer = optuna.create_study(storage=url, study_name="demo")
    outer.set_user_attr(_attrs.KIND, "outer")
    outer.set_user_attr(_attrs.RUN, "demo")
    optuna_dashboard.save_note(
        outer, "# Bilevel run `demo`\nEach trial is one proposer configuration."
    )
    names = []
    for seed in (0, 1):
        name = f"demo/cfg-abc/branin/seed-{seed}"
        inner = optuna.create_study(
            storage=url, study_name=name, sampler=optuna.samplers.RandomSampler(seed=seed)
        )
        for key, value in (
            (_attrs.KIND, "inner"),
            (_attrs.RUN, "demo"),
            (_attrs.ARM, "cfg-abc"),
            (_attrs.SEED, seed),
        ):
            inner.set_user_attr(key, value)

        def objective(trial: optuna.Trial) -> float:
            trial.set_user_attr(_attrs.SOURCE, "llm")
            trial.set_user_attr(_attrs.RATIONALE, "move x toward the best trial")
            return trial.suggest_float("x", -5, 5) ** 2

        inner.optimize(objective, n_trials=3)
        names.append(name)
    trial = outer.ask()
    trial.suggest_float("temperature", 0.0, 1.2)
    trial.set_user_attr(_attrs.INNER_STUDIES, names)
    outer.tell(trial, 0.5)


@pytest.fixture
def dashboard_url(tmp_path: Path):
    import optuna_dashboard

    url = f"sqlite:///{tmp_path}/dash.db"
    _storage_like_a_bilevel_run(url)
    app = optuna_dashboard.wsgi(url)
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _driver():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip(
            "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=chromedriver)
    return webdriver.Chrome(options=options, service=service)


def _wait_for_text(driver, text: str, timeout: float = 30.0) -> str:
    deadline = time.time() + timeout
    body = ""
    while time.time() < deadline:
        body = driver.find_element("tag name", "body").text
        if text in body:
            return body
        time.sleep(0.3)
    raise AssertionError(f"{text!r} did not appear; the page shows:\n{body[:2000]}")


def test_dashboard_lists_outer_and_inner_studies_and_opens_one(
    dashboard_url: str, tmp_path: Path
) -> None:
    driver = _driver()
    try:
        driver.set_window_size(1400, 1000)
        driver.get(dashboard_url + "/dashboard/")
        body = _wait_for_text(driver, "demo/cfg-abc/branin/seed-1")
        assert "demo/cfg-abc/branin/seed-0" in body
        assert "demo" in body.split()
        driver.save_screenshot(str(tmp_path / "list.png"))
        # Open the inner study: its trials and the rationale attribute are on the page.
        driver.find_element("partial link text", "demo/cfg-abc/branin/seed-0").click()
        _wait_for_text(driver, "seed-0")
        driver.get(driver.current_url.rstrip("/") + "/trials")
        body = _wait_for_text(driver, "move x toward the best trial")
        assert "llm:source" in body
        driver.save_screenshot(str(tmp_path / "study.png"))
    finally:
        driver.quit()
