"""Benchmark: where the chat model lives when several workers share a machine.

    python benchmarks/model_per_worker.py                  # every mode, ~5 min on 2 cores
    python benchmarks/model_per_worker.py --modes local,shared --proposals 5

Modes, each with 1 and 2 worker processes on this machine:

- ``none``: the ``uniform`` null model, for the memory of a worker without any model;
- ``local``: the embedded SmolLM2-135M in each worker (``--model local``, the default), every
  worker with its own copy of the weights and its own llama.cpp threads (all cores each);
- ``shared``: one ``bilevel-optuna serve`` process holds the model, the workers ask it over
  loopback (``openai:smollm2@http://127.0.0.1:PORT/v1``); the server takes the calls in turn;
- ``remote``: the same server in a network namespace behind a veth pair, reached through a
  forwarder that holds every chunk ``--delay-ms`` each way, as an endpoint on another server
  would be: what changes is the round trip per call, nothing else.

A worker here is what a bilevel worker does per proposal: an Optuna study with ``LLMSampler``
(``preset="level0"``: one model call per trial) on Branin, ``--proposals`` trials, seed = worker
index. Every process imports and loads (or connects) first, then waits; the clock starts when
all are told to go. Memory is read from ``/proc/<pid>/status``: ``VmHWM`` (peak resident set)
of each worker and of the server, read by the process itself at its end (the server: by the
benchmark before stopping it). Needs root for ``remote`` (``ip netns``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MODES = ("none", "local", "shared", "remote")
NETNS = "bo-mpw"
HOST_IP, NS_IP = "10.213.250.1", "10.213.250.2"


def _status_kib(pid: int | str, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


# ----------------------------------------------------------------------------- a worker process
def child(spec: str, seed: int, proposals: int, ready: str, stats: str) -> int:
    import optuna

    from bilevel_optuna import _attrs
    from bilevel_optuna.chat import ChatRequest
    from bilevel_optuna.chat import get_chat_model
    from bilevel_optuna.objectives import get_objective
    from bilevel_optuna.samplers import LLMSampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = get_objective("branin")
    model = get_chat_model(spec)
    start = time.perf_counter()
    if spec != "uniform":  # load the weights or connect now: the clock measures proposals
        model.complete(ChatRequest(messages=({"role": "user", "content": "Hi"},), max_tokens=1))
    warm_s = time.perf_counter() - start
    sampler = LLMSampler(
        model=model,
        preset="level0",
        description=objective.description,
        search_space=objective.search_space,
        seed=seed,
    )
    study = optuna.create_study(sampler=sampler)
    Path(ready).write_text(str(os.getpid()))
    sys.stdin.readline()  # go
    begin = time.time()
    study.optimize(objective, n_trials=proposals)
    end = time.time()
    calls = sum(int(t.user_attrs.get(_attrs.ATTEMPTS, 0)) for t in study.trials)
    sources = [t.user_attrs.get(_attrs.SOURCE) for t in study.trials]
    Path(stats).write_text(
        json.dumps(
            {
                "begin": begin,
                "end": end,
                "warm_s": warm_s,
                "calls": calls,
                "fallbacks": sources.count("fallback"),
                "hwm_kib": _status_kib("self", "VmHWM"),
                "rss_kib": _status_kib("self", "VmRSS"),
            }
        )
    )
    return 0


# ----------------------------------------------------------------------------- the server
def _sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@contextlib.contextmanager
def remote_link() -> Iterator[str]:
    """A network namespace behind a veth pair: the address of its side."""
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    subprocess.run(["ip", "link", "del", "bo-mpw-h"], capture_output=True)
    _sh("ip", "netns", "add", NETNS)
    try:
        _sh("ip", "link", "add", "bo-mpw-h", "type", "veth", "peer", "name", "bo-mpw-n")
        _sh("ip", "link", "set", "bo-mpw-n", "netns", NETNS)
        _sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", "bo-mpw-h")
        _sh("ip", "link", "set", "bo-mpw-h", "up")
        _sh("ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{NS_IP}/30", "dev", "bo-mpw-n")
        _sh("ip", "netns", "exec", NETNS, "ip", "link", "set", "bo-mpw-n", "up")
        _sh("ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
        yield NS_IP
    finally:
        subprocess.run(["ip", "link", "del", "bo-mpw-h"], capture_output=True)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


@contextlib.contextmanager
def delayed(target: tuple[str, int], delay_s: float) -> Iterator[int]:
    """A TCP forwarder on a free loopback port that holds every chunk ``delay_s`` each way.

    The kernel's netem would do it on the veth itself, but this machine's kernel has no
    ``sch_netem``; a forwarder in order adds the same time to each request and each reply.
    """
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []

    async def pump(reader: Any, writer: Any) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(due - loop.time(), 0.0))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay_s, data))
            if not data:
                break
        await sender

    async def handle(reader: Any, writer: Any) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target)
        with contextlib.suppress(OSError):
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def serve() -> None:
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(srv.sockets[0].getsockname()[1])
        started.set()
        async with srv:
            await srv.serve_forever()

    def run() -> None:
        with contextlib.suppress(RuntimeError):  # "loop stopped": how the forwarder ends
            loop.run_until_complete(serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)


@contextlib.contextmanager
def server(workdir: Path, *, netns: bool) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``bilevel-optuna serve`` on a free port; the process and its model spec."""
    host = NS_IP if netns else "127.0.0.1"
    command = [sys.executable, "-m", "bilevel_optuna", "serve", "--host", host, "--port", "0"]
    if netns:
        command = ["ip", "netns", "exec", NETNS, *command]
    log = workdir / "server.txt"
    proc = subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        spec = None
        while spec is None:
            match = re.search(r"chat model spec: (\S+)", log.read_text())
            if match:
                spec = match.group(1)
            elif proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"bilevel-optuna serve did not start: {log.read_text()}")
            else:
                time.sleep(0.2)
        yield proc, spec
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ----------------------------------------------------------------------------- one measurement
def workers(spec: str, n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = dict(
        os.environ,
        OPENAI_API_KEY=os.environ.get("OPENAI_API_KEY", "sk-bench-unused"),  # not loopback
        NO_PROXY=f"127.0.0.1,localhost,{NS_IP}",
        no_proxy=f"127.0.0.1,localhost,{NS_IP}",
    )
    procs = []
    for i in range(n):
        conf = {
            "spec": spec,
            "seed": i,
            "proposals": args.proposals,
            "ready": str(workdir / f"ready-{n}-{i}"),
            "stats": str(workdir / f"stats-{n}-{i}.json"),
        }
        log = open(workdir / f"worker-{n}-{i}.txt", "wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--child", json.dumps(conf)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=env,
            )
        )
    while not all((workdir / f"ready-{n}-{i}").exists() for i in range(n)):
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a worker died before it was ready; see {workdir}")
        time.sleep(0.1)
    go = time.time()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.close()
    for p in procs:
        if p.wait(timeout=args.timeout) != 0:
            raise RuntimeError(f"a worker failed; see {workdir}")
    stats = [json.loads((workdir / f"stats-{n}-{i}.json").read_text()) for i in range(n)]
    wall = max(s["end"] for s in stats) - go
    proposals = n * args.proposals
    return {
        "workers": n,
        "wall_s": round(wall, 2),
        "proposals_per_s": round(proposals / wall, 3),
        "s_per_call": round(
            sum(s["end"] - s["begin"] for s in stats) / max(sum(s["calls"] for s in stats), 1), 3
        ),
        "calls": sum(s["calls"] for s in stats),
        "fallbacks": sum(s["fallbacks"] for s in stats),
        "worker_hwm_mib": [round(s["hwm_kib"] / 1024, 1) for s in stats],
        "warm_s": [round(s["warm_s"], 2) for s in stats],
    }


def round_trip_ms(spec: str, repeats: int = 10) -> float:
    """Median milliseconds of ``GET /v1/models`` at the spec's URL: the round trip per call."""
    import statistics
    import urllib.request

    url = spec.partition("@")[2] + "/models"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with opener.open(url, timeout=10) as response:
            response.read()
        times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 1)


def measure(mode: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bo-mpw-{mode}-"))
    rows = []
    if mode in ("none", "local"):
        spec = "uniform" if mode == "none" else "local"
        for n in args.workers:
            row = workers(spec, n, args, workdir)
            rows.append({"mode": mode, "spec": spec, "server_hwm_mib": 0.0, **row})
        return rows
    link = remote_link() if mode == "remote" else contextlib.nullcontext()
    with contextlib.ExitStack() as stack:
        stack.enter_context(link)
        proc, spec = stack.enter_context(server(workdir, netns=mode == "remote"))
        if mode == "remote":  # the workers reach the namespace through a delaying forwarder
            url = re.search(r"@(http://[^/]+)/", spec)
            assert url is not None
            host, _, port = url.group(1).removeprefix("http://").rpartition(":")
            local = stack.enter_context(delayed((host, int(port)), args.delay_ms / 1000))
            spec = spec.replace(url.group(1), f"http://127.0.0.1:{local}")
        rtt = round_trip_ms(spec)
        for n in args.workers:
            row = workers(spec, n, args, workdir)
            row["round_trip_ms"] = rtt
            # ``ip netns exec`` execs the server, so its pid is the server's.
            hwm = round(_status_kib(proc.pid, "VmHWM") / 1024, 1)
            rows.append({"mode": mode, "spec": spec, "server_hwm_mib": hwm, **row})
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| mode | workers | worker peak RSS MiB (each) | server peak RSS MiB | total MiB | "
        "proposals/s (all workers) | s per model call | round trip ms | fallbacks |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        total = sum(r["worker_hwm_mib"]) + r["server_hwm_mib"]
        mode = r["mode"] + (f" ({args.delay_ms:g} ms each way)" if r["mode"] == "remote" else "")
        lines.append(
            f"| {mode} | {r['workers']} | {', '.join(f'{m:.0f}' for m in r['worker_hwm_mib'])} | "
            f"{r['server_hwm_mib']:.0f} | {total:.0f} | {r['proposals_per_s']:.2f} | "
            f"{r['s_per_call']:.2f} | {r.get('round_trip_ms', '-')} | {r['fallbacks']} |"
        )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        return child(**json.loads(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--proposals", type=int, default=10, help="trials per worker")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="remote: delay each way")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    args.workers = [int(n) for n in args.workers.split(",")]
    rows: list[dict[str, Any]] = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            parser.error(f"--modes must be among {MODES} but got {mode!r}")
        rows += measure(mode, args)
        print(f"  done {mode}", file=sys.stderr, flush=True)
    print(
        f"LLMSampler level0 on Branin, {args.proposals} proposals per worker; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.date.today()}"
    )
    print(f"Command: python benchmarks/model_per_worker.py {' '.join(sys.argv[1:])}".rstrip())
    print(report(rows, args))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
