"""get_chat_model: every spec form, the environment default, and the error listing the forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from bilevel_optuna.chat import ChatModel
from bilevel_optuna.chat import LocalChatModel
from bilevel_optuna.chat import OpenAIChatModel
from bilevel_optuna.chat import ReplayChatModel
from bilevel_optuna.chat import get_chat_model
from bilevel_optuna.chat._local import default_model_path
from bilevel_optuna.chat._spec import endpoint_key
from bilevel_optuna.exceptions import ConfigurationError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BILEVEL_OPTUNA_CHAT_MODEL", "BILEVEL_OPTUNA_MODEL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-for-specs-0000")


@pytest.mark.parametrize(
    "spec,model,base_url",
    [
        ("openai:gpt-4o-mini", "gpt-4o-mini", "https://api.openai.com/v1"),
        ("openai:smollm2@http://127.0.0.1:8000/v1", "smollm2", "http://127.0.0.1:8000/v1"),
        (
            "openai:deepseek-chat@https://api.deepseek.com",
            "deepseek-chat",
            "https://api.deepseek.com",
        ),
        ("openai:org/model@v2@http://localhost:9/v1/", "org/model@v2", "http://localhost:9/v1"),
        ("openai:qwen2.5:7b@http://127.0.0.1:11434/v1", "qwen2.5:7b", "http://127.0.0.1:11434/v1"),
    ],
)
def test_openai_specs(spec: str, model: str, base_url: str) -> None:
    chat = get_chat_model(spec)
    assert isinstance(chat, OpenAIChatModel)
    assert repr(chat) == (
        f"OpenAIChatModel(model={model!r}, base_url={base_url!r}, response_format='json_schema')"
    )


def test_openai_spec_takes_model_and_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILEVEL_OPTUNA_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1234/v1")
    for spec in ("openai", "openai:", "openai@http://127.0.0.1:1234/v1"):
        chat = get_chat_model(spec)
        assert isinstance(chat, OpenAIChatModel) and chat.name == "env-model"
        assert "http://127.0.0.1:1234/v1" in repr(chat)


def test_local_specs(tmp_path: Path) -> None:
    chat = get_chat_model("local")
    assert isinstance(chat, LocalChatModel)
    assert chat.model_path == str(default_model_path().resolve())
    copy = tmp_path / "my-model.gguf"
    copy.symlink_to(default_model_path())
    custom = get_chat_model(f"local:{copy}")
    assert isinstance(custom, LocalChatModel) and custom.name == "my-model"


def test_local_spec_with_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="No model file at .*missing.gguf"):
        get_chat_model(f"local:{tmp_path / 'missing.gguf'}")


def test_default_is_local_unless_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(get_chat_model(), LocalChatModel)
    assert isinstance(get_chat_model(None), LocalChatModel)
    monkeypatch.setenv("BILEVEL_OPTUNA_CHAT_MODEL", "openai:from-env@http://127.0.0.1:9/v1")
    chat = get_chat_model()
    assert isinstance(chat, OpenAIChatModel) and chat.name == "from-env"


def test_a_chat_model_is_returned_as_is() -> None:
    chat = ReplayChatModel({})
    assert get_chat_model(chat) is chat
    assert isinstance(chat, ChatModel)


@pytest.mark.parametrize(
    "spec",
    [
        "gpt-4o",
        "Local",
        "openai:m@ftp://host",
        "replay:sqlite:///x.db",
        "replay:#study",
        "",
        "hf:x",
    ],
)
def test_unknown_specs_list_the_valid_forms(spec: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        get_chat_model(spec)
    message = str(info.value)
    assert f"Unknown chat model spec {spec!r}" in message
    for form in (
        "'local'",
        "'local:/path/to/model.gguf'",
        "'openai:MODEL@BASE_URL'",
        "'replay:STORAGE_URL#STUDY'",
    ):
        assert form in message


def test_spec_of_wrong_type() -> None:
    with pytest.raises(ConfigurationError, match="must be a string or a ChatModel but got int"):
        get_chat_model(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ("openai:m@http://127.0.0.1:8000/v1", "openai@http://127.0.0.1:8000/v1"),
        (" openai:other@http://LocalHost:8000/v1/ ", "openai@http://localhost:8000/v1"),
        ("openai@https://api.deepseek.com", "openai@https://api.deepseek.com"),
        ("local", "local"),
        (" local:/m.gguf ", "local:/m.gguf"),
        ("uniform", "uniform"),
    ],
)
def test_endpoint_key_names_where_requests_go(spec: str, key: str) -> None:
    assert endpoint_key(spec) == key


def test_endpoint_key_of_a_bare_openai_spec_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert endpoint_key("openai:m") == "openai@https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    assert endpoint_key("openai") == "openai@http://127.0.0.1:9/v1"
