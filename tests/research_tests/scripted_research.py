"""A scripted chat model for research rounds: JSON steps answered from a table, code answers
from a list (known bad code first, then known good code), inner proposals for Branin."""

from __future__ import annotations

import json
from collections.abc import Sequence

from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json

from bilevel_optuna.chat._base import ChatRequest


def research_model(
    codes: Sequence[str] = (),
    *,
    compose: dict | None = None,
) -> ScriptedChatModel:
    codes = list(codes)
    counter = {"code": 0, "x": 0}

    def answer(request: ChatRequest, index: int) -> str:
        props = (request.json_schema or {}).get("properties", {})
        if "rationale" in props or "candidates" in props:
            counter["x"] += 1
            return answer_json({"x0": -3.0 + (counter["x"] % 7), "x1": 2.0 + (counter["x"] % 5)})
        if "ideas" in props:
            return json.dumps(
                {
                    "ideas": [
                        {"field": "tabu search", "idea": "Reject near repeats."},
                        {"field": "novelty search", "idea": "Prefer far candidates."},
                    ]
                }
            )
        if "choice" in props:
            return json.dumps({"choice": 1, "reason": "cheap and direct"})
        if "behaviour" in props:
            return json.dumps(
                {
                    "name": "far_first",
                    "hooks": ["review", "choose"],
                    "behaviour": "reject near repeats, evaluate the farthest first",
                }
            )
        if "rules" in props:
            return json.dumps(
                compose
                or {
                    "name": "far_first",
                    "rules": [
                        {"rule": "reject_near_history", "strength": 0.2},
                        {"rule": "note_best", "strength": 0.5},
                    ],
                }
            )
        k = counter["code"]
        counter["code"] += 1
        return "Here it is:\n```python\n" + codes[min(k, len(codes) - 1)] + "\n```\n"

    return ScriptedChatModel(answer)
