"""Take the documentation's pictures from a real run: the demo, its comparison plot, the dashboard.

    python docs/_tools/screenshots.py [--storage sqlite:///path/bilevel_demo/demo.db] [--out docs/_static]

Without ``--storage``, runs ``bilevel-optuna run demo`` in a temporary folder first (the
demo's time: see the getting-started page). Needs Chromium and chromedriver (Debian's ``chromium`` and
``chromium-driver``) and the ``plots`` extra.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import make_server

import optuna


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _cli(*args: str, cwd: Path) -> None:
    script = Path(sys.executable).parent / "bilevel-optuna"
    subprocess.run([str(script), *args], cwd=cwd, check=True)


def _driver():  # type: ignore[no-untyped-def]
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_window_size(1280, 900)
    return driver


def _shoot(driver, url: str, wait_for: str, path: Path) -> None:  # type: ignore[no-untyped-def]
    driver.get(url)
    deadline = time.time() + 60
    while wait_for not in driver.find_element("tag name", "body").text:
        if time.time() > deadline:
            raise RuntimeError(f"{wait_for!r} did not appear on {url}")
        time.sleep(0.5)
    time.sleep(3)  # let the plots draw
    driver.save_screenshot(str(path))
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="a finished demo run's storage URL")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "_static")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bo-shots-"))
    storage = args.storage
    if storage is None:
        _cli("run", "demo", cwd=work)
        storage = f"sqlite:///{work}/bilevel_demo/demo.db"
    _cli("compare", "--storage", storage, "--run", "demo", "--plots", str(work / "plots"), cwd=work)
    shutil.copy(work / "plots" / "anytime.png", args.out / "compare-anytime.png")

    import optuna_dashboard

    outer = optuna.load_study(study_name="demo", storage=storage)
    outer_id = outer._study_id
    app = optuna_dashboard.wsgi(storage)
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/dashboard"
    driver = _driver()
    try:
        _shoot(driver, base + "/", "demo/", args.out / "dashboard-studies.png")
        _shoot(driver, f"{base}/studies/{outer_id}", "demo", args.out / "dashboard-outer.png")
        _shoot(
            driver,
            f"{base}/studies/{outer_id}/trials",
            "bilevel:config",
            args.out / "dashboard-trial.png",
        )
    finally:
        driver.quit()
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
