from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import optuna
import pytest

from bilevel_optuna import _attrs
from bilevel_optuna.cli import main


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "status", "compare", "serve", "dashboard"):
        assert command in out


def test_bad_spec_is_an_error_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('[run]\nname = "x"\n[inner]\nobjectives = ["brannin"]\n[outer]\n')
    assert main(["run", str(spec)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bilevel-optuna run: error:")
    assert "branin" in err and "Traceback" not in err


def test_status_reports_runs_and_the_best_so_far(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    outer = optuna.create_study(storage=url, study_name="demo")
    outer.set_user_attr(_attrs.KIND, "outer")
    outer.set_user_attr(_attrs.RUN, "demo")
    for value in (0.9, 0.4):
        trial = outer.ask()
        trial.suggest_float("temperature", 0.0, 1.2)
        trial.set_user_attr(_attrs.CONFIG, {"temperature": value})
        outer.tell(trial, value)
    inner = optuna.create_study(storage=url, study_name="demo/tpe/branin/seed-0")
    inner.set_user_attr(_attrs.KIND, "baseline")
    inner.set_user_attr(_attrs.RUN, "demo")
    assert main(["status", url]) == 0
    out = capsys.readouterr().out
    assert "demo (outer): 2 complete; 1 inner studies" in out
    assert "best so far: trial 1, value 0.4" in out


def test_status_without_a_storage_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 1
    assert "Name a storage" in capsys.readouterr().err


RUN_SPEC = """
[run]
name = "terminal"
storage = "sqlite:///{db}"
model = "local"

[inner]
objectives = ["branin"]
n_trials = 2
n_repeats = 1

[outer]
n_trials = 1
baselines = ["random"]

[outer.space]
temperature = {{type = "float", low = 0.2, high = 0.3}}
history_size = 15
history_order = "best"
template = "minimal"
n_candidates = 1
mechanisms = []
"""


def test_run_prints_numbers_and_arm_labels_without_experimental_warnings(
    tmp_path: Path,
) -> None:
    import re

    spec = tmp_path / "terminal.toml"
    spec.write_text(RUN_SPEC.format(db=tmp_path / "terminal.db"))
    done = subprocess.run(
        [sys.executable, "-W", "default", "-m", "bilevel_optuna", "run", str(spec)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ExperimentalWarning" not in done.stderr, done.stderr
    line = next(l for l in done.stdout.splitlines() if "outer trial 0 complete" in l)
    # The arm says what its configuration is; the value is a number, not a list.
    assert re.search(r"cfg-[0-9a-f]{10} \(t=0\.2\d* h=15 minimal\) value -?[\d.e+-]+$", line), line
    config = next(l for l in done.stdout.splitlines() if l.strip().startswith("temperature:"))
    assert len(config.split(":")[1].strip().replace("0.", "", 1)) <= 4, config
    assert "artifacts of the outer study terminal" in done.stdout


TWO_OBJECTIVES_SPEC = """
[run]
name = "pipes"
storage = "sqlite:///{db}"
model = "local"

[inner]
objectives = ["branin", "rosenbrock"]
n_trials = 2
n_repeats = 1

[outer]
n_trials = 2
baselines = ["random", "tpe"]

[outer.space]
temperature = {{type = "float", low = 0.2, high = 0.3}}
history_size = 15
history_order = "best"
template = "minimal"
n_candidates = 1
mechanisms = []
"""


def _cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bilevel_optuna", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@pytest.fixture(scope="module")
def two_objective_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished two-objective run, made by the CLI as a user makes one."""
    folder = tmp_path_factory.mktemp("pipes")
    spec = folder / "pipes.toml"
    spec.write_text(TWO_OBJECTIVES_SPEC.format(db=folder / "out" / "pipes.db"))
    done = _cli("run", str(spec))
    assert done.returncode == 0, done.stdout + done.stderr
    return {"spec": spec, "url": f"sqlite:///{folder}/out/pipes.db", "run": done, "folder": folder}


def test_run_prints_the_comparison_as_a_small_table_and_names_its_folder(
    two_objective_run: dict,
) -> None:
    out = two_objective_run["run"].stdout
    table = out[out.index("The chosen configuration against the baselines") :]
    header = table.splitlines()[1].split()
    assert header[:2] == ["baseline", "n"] and "A12" in header and "p" in header
    assert {line.split()[0] for line in table.splitlines()[2:4]} == {"random", "tpe"}
    folder = two_objective_run["folder"] / "out"
    assert f"Everything of this run is in {folder}" in out
    assert (folder / "pipes_report.md").is_file()
    assert f"Inspect: bilevel-optuna dashboard {two_objective_run['url']}" in out


def test_status_in_a_pipe_closed_early_exits_quietly(two_objective_run: dict) -> None:
    # `bilevel-optuna status URL | head -1`, with the reader gone before the writer is done.
    writer = subprocess.Popen(
        [sys.executable, "-m", "bilevel_optuna", "status", two_objective_run["url"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    assert writer.stdout is not None and writer.stderr is not None
    first = writer.stdout.readline()
    writer.stdout.close()
    err = writer.stderr.read().decode()
    writer.wait(timeout=120)
    assert first.startswith(b"pipes (outer)")
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    # Through a shell's pipe, as a user types it.
    shell = subprocess.run(
        f"{sys.executable} -m bilevel_optuna status {two_objective_run['url']} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shell.stdout.startswith("pipes (outer)") and shell.stderr == "", shell.stderr


def test_status_counts_agree_with_the_run(two_objective_run: dict) -> None:
    url = two_objective_run["url"]
    done = _cli("status", url)
    assert done.returncode == 0, done.stderr
    inner = [
        s
        for s in optuna.get_all_study_summaries(storage=url, include_best_trial=False)
        if s.user_attrs.get(_attrs.KIND) in ("inner", "baseline", "heldout")
    ]
    n = len(inner)
    # 2 baselines x 2 objectives, and 2 outer trials x 2 objectives (one of them Level 0's
    # studies are the llm-level0 baseline's, absent here).
    assert f"progress: {n} of {n} inner studies done, 0 running; outer trials 2 of 2 done" in (
        done.stdout
    ), done.stdout
    assert f"inner studies: {n} done" in done.stdout
    assert "outer slots: 2 done" in done.stdout
    assert "pipes (outer): 2 complete" in done.stdout
    assert f"{n} inner studies" in done.stdout.splitlines()[0]


def test_compare_tests_each_objective_on_its_own_unless_pooled(two_objective_run: dict) -> None:
    url = two_objective_run["url"]
    each = _cli("compare", "--storage", url, "--run", "pipes")
    assert each.returncode == 0, each.stderr
    assert "== objective branin ==" in each.stdout and "== objective rosenbrock ==" in each.stdout
    pooled = _cli("compare", "--storage", url, "--run", "pipes", "--pool")
    assert pooled.returncode == 0, pooled.stderr
    assert "== objective" not in pooled.stdout
    one = _cli("compare", "--storage", url, "--run", "pipes", "--objective", "branin")
    assert one.returncode == 0 and "== objective" not in one.stdout


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["--objective", "brannin"], "Did you mean 'branin'?"),
        (["--arm", "randon"], "Did you mean 'random'?"),
        (["--control", "tpee"], "Did you mean 'tpe'?"),
    ],
)
def test_compare_says_did_you_mean_for_an_unknown_name(
    two_objective_run: dict, args: list[str], hint: str
) -> None:
    done = _cli("compare", "--storage", two_objective_run["url"], "--run", "pipes", *args)
    assert done.returncode == 1
    assert hint in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "Runs found" not in done.stderr  # never "no run pipes; runs found: pipes"


def test_compare_says_did_you_mean_for_an_unknown_run(two_objective_run: dict) -> None:
    done = _cli("compare", "--storage", two_objective_run["url"], "--run", "pipe")
    assert done.returncode == 1 and "Did you mean 'pipes'?" in done.stderr, done.stderr


def _serve(*flags: str) -> tuple[str, str]:
    """Start `bilevel-optuna serve`, send three requests, stop it; (stdout, stderr)."""
    import json
    import signal
    import urllib.error
    import urllib.request

    server = subprocess.Popen(
        [sys.executable, "-m", "bilevel_optuna", "serve", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    try:
        url = ""
        for line in server.stdout:
            if line.startswith("Use it with the chat model spec:"):
                url = line.rsplit("@", 1)[1].strip()
                break
        assert url, "serve printed no URL"
        urllib.request.urlopen(url + "/models", timeout=60).read()
        body = {
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 4,
            "temperature": 0,
        }
        request = urllib.request.Request(
            url + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=120).read()
        bad = urllib.request.Request(url + "/chat/completions", data=b"{not json")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(bad, timeout=60)
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    return out, err


def test_serve_writes_one_access_line_per_request() -> None:
    import re

    _, err = _serve()
    lines = [line for line in err.splitlines() if "bilevel_optuna.chat.access" in line]
    assert len(lines) == 3, err
    assert re.search(r"127\.0\.0\.1 GET /v1/models 200 \d+\.\d\d s tokens -$", lines[0])
    assert re.search(r"POST /v1/chat/completions 200 \d+\.\d\d s tokens \d+\+\d+$", lines[1])
    assert re.search(r"POST /v1/chat/completions 400 \d+\.\d\d s tokens -$", lines[2])


def test_serve_quiet_writes_no_access_log() -> None:
    _, err = _serve("--quiet")
    assert "bilevel_optuna.chat.access" not in err, err
