"""The chat model of a research run, recorded and replayed.

Every request of a round goes through :class:`RecordingModel`, which stores its prompt and
answer in the research study; :class:`ReplayResearchModel` serves them back by request hash, so
a round replays with no model at all.
"""

from __future__ import annotations

import json

from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ReplayMissError
from bilevel_optuna.research._store import MechanismStore


class RecordingModel(ChatModel):
    """Passes requests to a model and stores each prompt and answer in the research study."""

    def __init__(self, model: ChatModel, store: MechanismStore) -> None:
        self.model = model
        self.store = store
        self.name = model.name

    def complete(self, request: ChatRequest) -> ChatReply:
        try:
            reply = self.model.complete(request)
        except ChatAnswerError as err:
            if err.reply is not None:
                self._record(request, err.reply)
            raise
        self._record(request, reply)
        return reply

    def _record(self, request: ChatRequest, reply: ChatReply) -> None:
        self.store.record_exchange(request.hash(), json.loads(request.to_json()), reply.to_dict())


class ReplayResearchModel(ChatModel):
    """Serves the answers stored by a research run back, by request hash: a round replays with
    no model at all."""

    name = "replay"

    def __init__(self, store: MechanismStore) -> None:
        self.exchanges = store.exchanges()

    def complete(self, request: ChatRequest) -> ChatReply:
        found = self.exchanges.get(request.hash())
        if found is None:
            raise ReplayMissError(
                f"No stored answer for request {request.hash()[:12]}; this round was not run "
                "with these settings."
            )
        return ChatReply.from_dict(found["reply"])
