"""Latency of the embedded chat model: cold load, and a proposal-sized request two ways.

Cold load: fresh interpreters each import llama_cpp and load SmolLM2-135M-Instruct
(``LocalChatModel.load()``); the one-off check of the CPU's AMX kernels, run only where the CPU
lists AMX, is timed apart (a fresh check each time: the cache file is bypassed). Requests: a
proposal as LLMSampler sends it (an SVM search space and a history of --history trials, 4 giving
about 300 prompt tokens; a JSON schema with a short free-text reason; at most 100 completion tokens;
temperature 0.7; seeds 0, 1, ...), answered on --threads threads in this process and through
``bilevel-optuna serve`` (another process, on loopback, via OpenAIChatModel). Requests alternate
between the two paths, so that load from other processes falls on both alike; both answer the
same seeds, so both produce the same tokens.

    python benchmarks/chat_latency.py --requests 20 --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys

from bilevel_optuna.chat import ChatReply
from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.chat import LocalChatModel
from bilevel_optuna.chat import OpenAIChatModel
from bilevel_optuna.chat._local import default_model_path

SYSTEM = """\
You are an expert in hyperparameter optimization. You propose the next trial of a study.
Objective: minimize the validation error of an SVM on the OpenML dataset kc1.
Search space:
- C: float, log scale, from 0.001 to 1000
- gamma: float, log scale, from 0.0001 to 10
- kernel: one of rbf, linear, poly
- degree: integer from 2 to 5 (used by poly only)
Answer with one JSON object: the four parameters and a short reason."""

HISTORY = [
    (12.3, 0.013, "rbf", 3, 0.142),
    (3.1, 0.05, "rbf", 2, 0.147),
    (150.0, 0.002, "rbf", 4, 0.151),
    (0.8, 0.2, "poly", 3, 0.158),
    (45.0, 0.0008, "linear", 2, 0.160),
    (0.05, 1.5, "rbf", 5, 0.166),
    (700.0, 0.03, "poly", 2, 0.171),
    (0.002, 0.004, "linear", 3, 0.174),
    (9.0, 3.2, "rbf", 4, 0.181),
    (0.3, 0.0002, "poly", 5, 0.188),
    (88.0, 0.6, "linear", 3, 0.190),
    (0.01, 7.0, "poly", 4, 0.204),
]

SCHEMA = {
    "type": "object",
    "properties": {
        "C": {"type": "number"},
        "gamma": {"type": "number"},
        "kernel": {"enum": ["rbf", "linear", "poly"]},
        "degree": {"type": "integer"},
        "reason": {"type": "string", "maxLength": 80},
    },
    "required": ["C", "gamma", "kernel", "degree", "reason"],
    "additionalProperties": False,
}

COLD_LOAD = """\
import time
t0 = time.perf_counter()
import llama_cpp
t1 = time.perf_counter()
from bilevel_optuna.chat._local import _probe_extra_buffers, default_model_path
path = str(default_model_path().resolve())
extra = True
if "amx_tile" in open("/proc/cpuinfo").read():
    extra = _probe_extra_buffers(path)
t2 = time.perf_counter()
from bilevel_optuna.chat import LocalChatModel
load = LocalChatModel(n_threads={threads}, extra_buffers=extra).load()
print(t1 - t0, t2 - t1, load)
"""


def proposal(seed: int, history: int) -> ChatRequest:
    lines = [
        f"{i}. C={c}, gamma={g}, kernel={k}, degree={d} -> error {v}"
        for i, (c, g, k, d, v) in enumerate(HISTORY[:history], start=1)
    ]
    user = (
        "Trials so far, best first:\n"
        + "\n".join(lines)
        + "\nPropose the next trial. Do not repeat a trial."
    )
    return ChatRequest(
        messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": user}),
        json_schema=SCHEMA,
        temperature=0.7,
        max_tokens=100,
        seed=seed,
    )


def cold_loads(threads: int, repeats: int) -> list[tuple[float, float, float]]:
    rows = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", COLD_LOAD.format(threads=threads)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        rows.append((float(out[0]), float(out[1]), float(out[2])))
    return rows


def start_server(threads: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bilevel_optuna",
            "serve",
            "--port",
            "0",
            "--threads",
            str(threads),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if " at " not in line:
        process.kill()
        raise RuntimeError(f"bilevel-optuna serve did not start: {line!r}")
    return process, line.rsplit(" at ", 1)[1].strip()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def row(name: str, replies: list[ChatReply]) -> str:
    latencies = [r.latency_s for r in replies]
    completion = sum(r.completion_tokens for r in replies)
    prompt = statistics.mean(r.prompt_tokens for r in replies)
    return (
        f"| {name} | {len(replies)} | {prompt:.0f} | {completion / len(replies):.0f} "
        f"| {percentile(latencies, 0.5):.2f} | {percentile(latencies, 0.95):.2f} "
        f"| {completion / sum(latencies):.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20, help="requests per path")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--loads", type=int, default=3, help="fresh processes for cold load")
    parser.add_argument(
        "--history", type=int, default=4, help="trials in the prompt (4: about 300 tokens)"
    )
    args = parser.parse_args()

    loads = cold_loads(args.threads, args.loads)
    local = LocalChatModel(n_threads=args.threads, validate="json")
    local.load()
    server, base_url = start_server(args.threads)
    try:
        remote = OpenAIChatModel(
            model=local.name, base_url=base_url, validate="json", timeout=300.0
        )
        local.complete(proposal(-1, args.history))  # warm-up, not counted
        remote.complete(proposal(-1, args.history))
        in_process: list[ChatReply] = []
        loopback: list[ChatReply] = []
        for seed in range(args.requests):
            in_process.append(local.complete(proposal(seed, args.history)))
            loopback.append(remote.complete(proposal(seed, args.history)))
    finally:
        server.terminate()
        server.wait(timeout=30)
    same = sum(a.text == b.text for a, b in zip(in_process, loopback))

    print(f"Embedded model: {default_model_path().name}, {args.threads} threads")
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.date.today().isoformat()}, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print()
    print("| cold load (fresh process) | median | min | max |")
    print("|---|---|---|---|")
    for label, index in (("import llama_cpp", 0), ("AMX check", 1), ("load model", 2)):
        values = [r[index] for r in loads]
        print(
            f"| {label} (s) | {statistics.median(values):.2f} | {min(values):.2f} "
            f"| {max(values):.2f} |"
        )
    print()
    print(
        "| path | requests | prompt tokens | completion tokens | p50 latency (s) "
        "| p95 latency (s) | completion tokens/s (prompt included) |"
    )
    print("|---|---|---|---|---|---|---|")
    print(row("in process", in_process))
    print(row("loopback endpoint (`bilevel-optuna serve`)", loopback))
    print()
    print(f"Identical answers on both paths: {same} of {args.requests}.")


if __name__ == "__main__":
    main()
