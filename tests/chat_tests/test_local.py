"""LocalChatModel on the real embedded SmolLM2: JSON from a grammar, seeds that reproduce."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bilevel_optuna.chat import ChatReply
from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.chat import LocalChatModel
from bilevel_optuna.chat import _local
from bilevel_optuna.chat import validate_answer
from bilevel_optuna.chat._local import _SEED_MODULUS
from bilevel_optuna.chat._local import _grammar
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ConfigurationError

# No numeric bounds here: llama.cpp's grammar enforces shape, types, enums and string lengths,
# not minimum/maximum, so every answer to this schema must pass the full check.
SCHEMA = {
    "type": "object",
    "properties": {
        "learning_rate": {"type": "number"},
        "layers": {"type": "integer"},
        "activation": {"enum": ["relu", "tanh", "gelu"]},
    },
    "required": ["learning_rate", "layers", "activation"],
    "additionalProperties": False,
}


def _request(task: str, *, seed: int | None = 0, max_tokens: int = 40) -> ChatRequest:
    return ChatRequest(
        messages=(
            {"role": "system", "content": "You tune a neural network. Answer in JSON."},
            {"role": "user", "content": task},
        ),
        json_schema=SCHEMA,
        temperature=0.8,
        max_tokens=max_tokens,
        seed=seed,
    )


A = _request("Trials so far: lr=0.1 layers=2 relu -> 0.31. Propose the next trial.")
B = _request("Trials so far: lr=0.001 layers=8 tanh -> 0.12. Propose a different trial.", seed=5)


@pytest.fixture(scope="module")
def model() -> LocalChatModel:
    return LocalChatModel()


@pytest.fixture(scope="module")
def answer_a(model: LocalChatModel) -> ChatReply:
    return model.complete(A)


def test_schema_constrained_answer_is_valid_json(answer_a: ChatReply) -> None:
    value = validate_answer(answer_a.text, SCHEMA)
    assert set(value) == {"learning_rate", "layers", "activation"}
    assert answer_a.model == "SmolLM2-135M-Instruct.Q4_1"
    assert answer_a.prompt_tokens > 20 and 0 < answer_a.completion_tokens <= 40
    assert answer_a.finish_reason == "stop" and answer_a.latency_s > 0


def test_same_seed_same_answer_after_other_requests(
    model: LocalChatModel, answer_a: ChatReply
) -> None:
    model.complete(B)  # leaves other tokens in the KV cache
    assert model.complete(A).text == answer_a.text


HISTORY = "\n".join(
    f"lr={10 ** -(1 + i % 4):g} layers={1 + i % 8} {('relu', 'tanh')[i % 2]} -> {0.9 - i / 100:.2f}"
    for i in range(30)
)
C = _request(f"Trials so far:\n{HISTORY}\nPropose the next trial.", seed=3)
D = _request(f"Trials so far:\n{HISTORY}\nlr=0.5 layers=3 tanh -> 0.95\nPropose one.", seed=3)


def test_a_shared_prompt_prefix_is_reused_and_gives_the_same_answer(
    model: LocalChatModel,
) -> None:
    model.complete(A)  # nothing in common with D beyond a few tokens: D is evaluated afresh
    fresh = model.complete(D)
    assert model._loaded().reused_tokens == 0
    model.complete(C)  # shares D's history
    again = model.complete(D)
    assert model._loaded().reused_tokens >= 3 * _local.PREFIX_CHUNK
    assert again.text == fresh.text
    assert again.prompt_tokens == fresh.prompt_tokens


def test_several_answers_are_written_side_by_side(model: LocalChatModel) -> None:
    request = dataclasses.replace(C, n=4)
    reply = model.complete(request)
    assert len(reply.texts) == 4
    for text in reply.texts:
        assert set(validate_answer(text, SCHEMA)) == {"learning_rate", "layers", "activation"}
    assert len(set(reply.texts)) >= 2  # each answer samples with its own seed
    assert reply.completion_tokens >= 4 * 8
    model.complete(A)
    assert model.complete(request).texts == reply.texts  # whatever was asked in between
    # Only the prompt stays in the cache, as after one answer: the next request reuses it.
    model.complete(D)
    assert model._loaded().reused_tokens >= 3 * _local.PREFIX_CHUNK


def test_grammar_holds_when_the_model_would_rather_write_prose(model: LocalChatModel) -> None:
    # Tokens are sampled freely and checked against the grammar; a refused one (prose here)
    # is sampled again inside it, so the answer still follows the schema.
    request = ChatRequest(
        messages=({"role": "user", "content": "Tell me a short story about a cat."},),
        json_schema=SCHEMA,
        temperature=1.0,
        max_tokens=120,
        seed=2,
        n=2,
    )
    for text in model.complete(request).texts:
        assert set(validate_answer(text, SCHEMA)) == {"learning_rate", "layers", "activation"}


def test_too_many_answers_is_a_clear_error(model: LocalChatModel) -> None:
    with pytest.raises(ChatModelError, match=f"at most {_local.MAX_CHOICES} answers"):
        model.complete(dataclasses.replace(A, n=_local.MAX_CHOICES + 1))


@pytest.mark.slow  # a second process loads the model: seconds more on a busy machine
def test_same_seed_same_answer_in_a_fresh_process(answer_a: ChatReply) -> None:
    code = (
        "import json, sys\n"
        "from bilevel_optuna.chat import ChatRequest, LocalChatModel\n"
        "request = ChatRequest(**json.loads(sys.stdin.read()))\n"
        "print(LocalChatModel().complete(request).text)\n"
    )
    request = json.loads(A.to_json())
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert result.stdout.strip() == answer_a.text


def test_threads_share_one_model(model: LocalChatModel, answer_a: ChatReply) -> None:
    other = LocalChatModel()
    assert other._loaded() is model._loaded()  # loaded once per process and settings
    replies: dict[str, str] = {}

    def ask(name: str, chat: LocalChatModel) -> None:
        replies[name] = chat.complete(A).text

    threads = [threading.Thread(target=ask, args=(n, m)) for n, m in (("a", model), ("b", other))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == {"a": answer_a.text, "b": answer_a.text}


def test_free_text_request(model: LocalChatModel) -> None:
    request = ChatRequest(
        messages=({"role": "user", "content": "Say hello."},), max_tokens=8, seed=1
    )
    reply = model.complete(request)
    assert reply.text and reply.completion_tokens <= 8


def test_prompt_longer_than_the_context() -> None:
    small = LocalChatModel(n_ctx=64)
    long_task = "lr=0.1 layers=2 -> 0.3; " * 40
    with pytest.raises(ChatModelError, match="raise n_ctx \\(now 64\\)"):
        small.complete(_request(long_task))


def test_schema_llama_cpp_cannot_express(model: LocalChatModel) -> None:
    request = ChatRequest(
        messages=({"role": "user", "content": "?"},), json_schema={"$ref": "http://x/y.json"}
    )
    with pytest.raises(ConfigurationError, match="cannot turn this JSON schema into a grammar"):
        model.complete(request)


@pytest.mark.parametrize(
    "options,phrase",
    [
        ({"n_threads": 0}, "n_threads must be >= 1 but got 0"),
        ({"n_ctx": 8}, "n_ctx must be >= 16 but got 8"),
        ({"validate": "yes"}, "validate must be one of"),
    ],
)
def test_invalid_options(options: dict[str, object], phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        LocalChatModel(**options)  # type: ignore[arg-type]


def test_grammar_keeps_control_characters_out_of_strings() -> None:
    # llama-cpp-python's converter allows a raw newline inside a JSON string; ours does not.
    grammar = _grammar(json.dumps({"type": "object", "properties": {"r": {"type": "string"}}}))
    assert r'char ::= [^"\\\x7F\x00-\x1F] |' in grammar._grammar
    assert r'char ::= [^"\\] |' not in grammar._grammar


def test_seed_range() -> None:
    # 0xFFFFFFFF would mean "random seed" to llama.cpp; seeds are mapped below it.
    assert (2**32 - 1) % _SEED_MODULUS == 0 and _SEED_MODULUS == 2**32 - 1


@pytest.mark.slow  # the check loads the model in a child process
@pytest.mark.skipif(
    "amx_tile" not in open("/proc/cpuinfo").read() if sys.platform == "linux" else True,
    reason="only CPUs that list AMX are checked",
)
def test_cpu_check_is_cached_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bilevel_optuna.chat._llama import _probe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = str(_local.default_model_path().resolve())
    _probe.extra_buffers_work.cache_clear()
    first = _probe.extra_buffers_work(path)
    cache = _probe._probe_cache_path()
    assert cache.parent.parent == tmp_path and list(json.loads(cache.read_text()).values()) == [
        first
    ]
    _probe.extra_buffers_work.cache_clear()
    monkeypatch.setattr(_probe, "_probe_extra_buffers", None)  # a second check would fail
    assert _probe.extra_buffers_work(path) is first
    _probe.extra_buffers_work.cache_clear()
