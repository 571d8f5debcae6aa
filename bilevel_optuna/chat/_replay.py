"""A chat model that serves recorded answers by request hash, so a study re-runs with no model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna._urls import hide_password as _hide_password
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.chat._validation import Validate
from bilevel_optuna.chat._validation import _check_validate_mode
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.exceptions import ReplayMissError

if TYPE_CHECKING:
    import optuna

_logger = get_logger(__name__)


class ReplayChatModel(ChatModel):
    """Serve answers recorded in a study instead of asking a model.

    Each answer is looked up by :meth:`ChatRequest.hash`, so the re-run must ask exactly the
    requests the recorded run asked (same configuration, same seeds). Answers go through the same
    check as a live backend's, so a replayed study fails where the recorded one failed.

    Args:
        answers: Recorded replies keyed by request hash (:class:`ChatReply` or its ``to_dict()``).
        name: The model name this backend reports; by default the recorded replies' model.
        validate: ``"schema"``, ``"json"`` or ``"none"``: how answers to JSON requests are
            checked (see :func:`~bilevel_optuna.chat.validate_answer`).

    Example:

        .. code-block:: python

            model = ReplayChatModel.from_storage("sqlite:///runs.db", "inner-0003-r0")
            reply = model.complete(request)  # the answer recorded for this exact request
    """

    def __init__(
        self,
        answers: Mapping[str, ChatReply | Mapping[str, Any]],
        *,
        name: str | None = None,
        validate: Validate = "schema",
    ) -> None:
        self._validate = _check_validate_mode(validate)
        self._answers: dict[str, ChatReply] = {}
        for key, reply in answers.items():
            if not isinstance(key, str):
                raise ValueError(f"answers must be keyed by request hash (str) but got {key!r}.")
            self._answers[key] = (
                reply if isinstance(reply, ChatReply) else ChatReply.from_dict(dict(reply))
            )
        if name is None:
            models = sorted({reply.model for reply in self._answers.values()})
            name = "replay:" + ",".join(models) if models else "replay"
        self.name = name

    def __len__(self) -> int:
        return len(self._answers)

    @classmethod
    def from_storage(
        cls,
        storage: str | optuna.storages.BaseStorage,
        study_name: str,
        *,
        validate: Validate = "schema",
    ) -> ReplayChatModel:
        """Read every exchange recorded on the trials of one study.

        Exchanges are the trial system attribute ``bilevel_optuna._attrs.EXCHANGES``: a list of
        ``{"hash": ChatRequest.hash(), "reply": ChatReply.to_dict()}``. Where one request was
        answered more than once, the earliest trial's answer is kept.

        Args:
            storage: A storage URL or an Optuna storage object.
            study_name: The study whose answers are served.
            validate: As in the constructor.
        """
        import optuna

        shown = _hide_password(storage) if isinstance(storage, str) else repr(storage)
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError as err:
            names = sorted(optuna.get_all_study_names(storage=storage))
            raise ConfigurationError(
                f"No study named {study_name!r} in {shown} to replay. Studies there: "
                f"{', '.join(names) or 'none'}. Use the spec 'replay:STORAGE_URL#STUDY'."
            ) from err
        answers: dict[str, ChatReply] = {}
        conflicts = 0
        for trial in study.get_trials(deepcopy=False):
            for exchange in trial.system_attrs.get(_attrs.EXCHANGES, []):
                try:
                    key = str(exchange["hash"])
                    reply = ChatReply.from_dict(exchange["reply"])
                except (KeyError, TypeError, ValueError) as err:
                    raise ConfigurationError(
                        f"Trial {trial.number} of study {study_name!r} holds a malformed "
                        f"exchange in {_attrs.EXCHANGES!r}: {exchange!r}. Each must be "
                        "{'hash': ..., 'reply': ChatReply.to_dict()}."
                    ) from err
                if key in answers:
                    conflicts += answers[key] != reply
                    continue
                answers[key] = reply
        if not answers:
            _logger.warning(
                "Study %r in %s holds no recorded answers to replay.", study_name, shown
            )
        if conflicts:
            _logger.warning(
                "Study %r recorded %d requests more than once with different answers; "
                "replay serves the earliest trial's answer.",
                study_name,
                conflicts,
            )
        return cls(answers, validate=validate)

    def _complete(self, request: ChatRequest) -> ChatReply:
        key = request.hash()
        reply = self._answers.get(key)
        if reply is None:
            raise ReplayMissError(
                f"Request {key[:16]}... was never recorded ({len(self._answers)} answers on "
                "record). Replay serves only the exact requests of the recorded run: re-run "
                "with the same configuration and seeds, or use a live model ('local' or "
                "'openai:MODEL')."
            )
        return reply
