"""Research rounds: diagnose, ideas, critique, specify, write, check, repair, register, measure.

One round, every step a chat request whose prompt and answer are stored in the research study
(so a round replays without a model, :class:`ReplayResearchModel`):

1. diagnose the run from its stored traces (:mod:`._diagnose`);
2. ideas from named fields (tabu search, design of experiments, ...), as JSON;
3. critique them and pick one, as JSON;
4. specify: a name, the hooks, one sentence of behaviour, as JSON;
5. write it: full source (mode ``"code"``), or a composition of existing rules under a JSON
   schema (mode ``"compose"``, :mod:`._compose`) that small models can satisfy;
6. check it with the gate; on a rejection feed the stage and reasons back and ask again, at most
   ``max_repairs`` times; store every source, accepted or not;
7. inject the accepted ones into a new outer study for the round (``<run>/round-NNN``) whose
   search space adds them as choices, with the incumbent configuration and the incumbent plus
   each new mechanism enqueued first; measure each against the incumbent and the baselines with
   the statistics (paired by seed).

A model that answers nothing usable costs its step a default (recorded as such), never the run.
Rounds already stored are skipped, so a run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._spec import get_chat_model
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.research._check import CheckResult
from bilevel_optuna.research._check import check_source
from bilevel_optuna.research._compose import ComposeError
from bilevel_optuna.research._compose import compose_schema
from bilevel_optuna.research._compose import describe_rules
from bilevel_optuna.research._compose import render
from bilevel_optuna.research._diagnose import Diagnosis
from bilevel_optuna.research._diagnose import diagnose
from bilevel_optuna.research._asker import Asker
from bilevel_optuna.research._asker import user_messages
from bilevel_optuna.research._evaluate import evaluate_round
from bilevel_optuna.research._recorded import RecordingModel
from bilevel_optuna.research._recorded import ReplayResearchModel  # noqa: F401 - its old home
from bilevel_optuna.research._report import ResearchReport
from bilevel_optuna.research._report import build_report
from bilevel_optuna.research._spec import MODES  # noqa: F401 - its old home
from bilevel_optuna.research._spec import ResearchSpec
from bilevel_optuna.research._store import GeneratedMechanism
from bilevel_optuna.research._store import MechanismStore
from bilevel_optuna.samplers.mechanisms._loading import source_hash
from bilevel_optuna.samplers.mechanisms._base import HOOKS

_logger = get_logger(__name__)

#: Fields ideas are drawn from (named, so the model reaches for known techniques).
FIELDS = (
    "tabu search",
    "design of experiments",
    "simulated annealing",
    "evolution strategies",
    "multi-armed bandits",
    "trust regions",
    "novelty search",
)

_API = """The Mechanism API (from bilevel_optuna.samplers import Mechanism, Review):
class Name(Mechanism):
    name = "short_name"
    def __init__(self, *, param: float = 0.1): self.param = param   # hyperparameters, keyword-only
    @classmethod
    def search_space(cls): return {"param": FloatDistribution(0.0, 1.0)}  # from optuna.distributions
    def prepare(self, context): ...   # add context.notes, reorder context.history, or set context.params
    def review(self, candidate, context): return Review.accept() / Review.reject("why") / Review.replace(params)
    def choose(self, candidates, context): return candidates   # reorder; first is evaluated
    def after_trial(self, study, trial, state, values): ...
context has: search_space, trials, complete_trials, best_trial, minimize, history, notes, params,
rng (numpy Generator), record, normalize(params), distance(a, b). Allowed imports: math, random,
numpy, optuna.distributions, collections, itertools, functools, heapq, statistics."""


# ------------------------------------------------------------------------- one round
def _is_sentence(text: str) -> bool:
    """Whether a free-text answer holds words (a grammar keeps the JSON valid, not the prose:
    a small model fills string fields with fragments such as ``3 }, {``)."""
    return len(re.findall(r"[A-Za-z]{3,}", text)) >= 3


def extract_code(text: str) -> str:
    """The source inside a fenced block of an answer, else the answer itself."""
    blocks = re.findall(r"```(?:python|py)?\s*\n(.*?)```", text, re.S)
    if blocks:
        return max(blocks, key=len)
    return text.strip().strip("`")


def research_round(
    store: MechanismStore,
    *,
    model: ChatModel,
    round_number: int,
    diagnosis: Diagnosis,
    modes: Sequence[str],
    max_repairs: int = 2,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run steps 2 to 6 of one round; return its record (also stored in the research study)."""
    say = progress or (lambda line: None)
    start = time.perf_counter()
    asker = Asker(RecordingModel(model, store), seed, round_number)
    facts = "\n".join(diagnosis.lines())
    defaulted: list[str] = []
    ideas = _ideas(asker, facts, defaulted)
    say(f"round {round_number}: {len(ideas)} idea(s)")
    choice = _pick(asker, facts, ideas, defaulted)
    idea = ideas[choice]
    spec = _specify(asker, idea, defaulted)
    name = str(spec.get("name") or "novel_mechanism")
    behaviour = str(spec.get("behaviour") or idea["idea"])[:300]

    # 5.-6. write, check, repair, store
    outcomes = []
    for m, mode in enumerate(modes):
        item = _write_and_check(
            store, asker, mode=mode, idea=idea, name=name, behaviour=behaviour, facts=facts,
            round_number=round_number, max_repairs=max_repairs, step=10 * (m + 1),
        )  # fmt: skip
        outcomes.append(item)
        say(f"round {round_number} ({mode}): {item.check.summary()[:160]}")
    record = {
        "diagnosis": diagnosis.to_dict(),
        "ideas": ideas,
        "choice": choice,
        "spec": {"name": name, "hooks": spec.get("hooks", []), "behaviour": behaviour},
        "defaulted": defaulted,
        "failures": asker.failures[:20],
        "model_calls": asker.calls,
        "prompts": asker.prompts,
        "mechanisms": [
            {
                "name": o.name,
                "sha256": o.sha256,
                "mode": o.mode,
                "status": o.status,
                "attempt": o.attempt,
            }
            for o in outcomes
        ],
        "seconds": round(time.perf_counter() - start, 2),
    }
    store.set_round(round_number, record)
    return record


_IDEAS_SCHEMA = {
    "type": "object",
    "properties": {
        "ideas": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string", "enum": list(FIELDS)},
                    "idea": {"type": "string", "maxLength": 160},
                },
                "required": ["field", "idea"],
            },
        }
    },
    "required": ["ideas"],
}


def _ideas(asker: Asker, facts: str, defaulted: list[str]) -> list[dict[str, str]]:
    """Step 2: up to three ideas, each from a named field (a default one if none is usable)."""
    answer = asker.ask_json(
        user_messages(
            f"What the optimizer did:\n{facts}\n\nPropose up to three mechanisms that would fix "
            f"this, each from one of these fields: {', '.join(FIELDS)}. One sentence each."
        ),
        _IDEAS_SCHEMA,
        max_tokens=200,
        step=2,
    )
    ideas = [
        {"field": str(i.get("field", "")), "idea": str(i.get("idea", "")).strip()[:200]}
        for i in (answer or {}).get("ideas", [])
        if isinstance(i, dict) and _is_sentence(str(i.get("idea", "")))
    ]
    if not ideas:
        defaulted.append("ideas")
        ideas = [
            {
                "field": "tabu search",
                "idea": "Reject proposals that repeat or nearly repeat earlier trials.",
            }
        ]
    return ideas


def _pick(asker: Asker, facts: str, ideas: list[dict[str, str]], defaulted: list[str]) -> int:
    """Step 3: critique the ideas and pick one (the first if the answer is unusable)."""
    listing = "\n".join(f"{k}. [{i['field']}] {i['idea']}" for k, i in enumerate(ideas))
    answer = asker.ask_json(
        user_messages(
            f"What the optimizer did:\n{facts}\n\nIdeas:\n{listing}\n\nJudge each by impact "
            "times feasibility over complexity and pick the best one."
        ),
        {
            "type": "object",
            "properties": {
                "choice": {"type": "integer", "minimum": 0, "maximum": len(ideas) - 1},
                "reason": {"type": "string", "maxLength": 160},
            },
            "required": ["choice", "reason"],
        },
        max_tokens=90,
        step=3,
    )
    try:
        choice = int((answer or {}).get("choice", 0))
    except (TypeError, ValueError):
        choice = 0
    if answer is None or not 0 <= choice < len(ideas):
        defaulted.append("choice")
        choice = 0 if not 0 <= choice < len(ideas) else choice
    return choice


def _specify(asker: Asker, idea: dict[str, str], defaulted: list[str]) -> dict[str, Any]:
    """Step 4: a name, the hooks and one sentence of behaviour ({} if the answer is unusable)."""
    answer = asker.ask_json(
        user_messages(
            f"Specify a mechanism for this idea: {idea['idea']}\nGive it a short lowercase name, "
            f"the hooks it needs (of {list(HOOKS)}) and one sentence of what it does."
        ),
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{2,30}$"},
                "hooks": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 4,
                    "items": {"type": "string", "enum": list(HOOKS)},
                },
                "behaviour": {"type": "string", "maxLength": 200},
            },
            "required": ["name", "hooks", "behaviour"],
        },
        max_tokens=110,
        step=4,
    )
    spec = answer if isinstance(answer, dict) else {}
    if not spec:
        defaulted.append("spec")
    return spec


def _write_and_check(
    store: MechanismStore,
    asker: Asker,
    *,
    mode: str,
    idea: dict[str, str],
    name: str,
    behaviour: str,
    facts: str,
    round_number: int,
    max_repairs: int,
    step: int,
) -> GeneratedMechanism:
    if mode == "compose":
        prompt = (
            f"Idea: {idea['idea']}\nBehaviour: {behaviour}\n\nBuild it from one to three of "
            f"these rules, each with a strength from 0 to 1:\n{describe_rules()}\n"
            f"Name it {name!r} or similar."
        )
    else:
        prompt = (
            f"{_API}\n\nWhat the optimizer did:\n{facts}\n\nWrite a mechanism named {name!r} "
            f"that does this: {behaviour}\nAnswer with the whole Python source in one "
            "```python block."
        )
    messages = user_messages(prompt)
    item: GeneratedMechanism | None = None
    for attempt in range(max_repairs + 1):
        seen_prompts = len(asker.prompts)
        if mode == "compose":
            answer = asker.ask_json(
                messages, compose_schema(), max_tokens=120, step=step + attempt
            )
            raw = json.dumps(answer) if answer is not None else ""
            try:
                source = render(answer or {}, idea=idea["idea"]) if answer else ""
                problem = "" if source else "the answer was empty or not JSON"
            except ComposeError as err:
                source, problem = "", str(err)
        else:
            raw = (
                asker.ask(
                    messages, schema=None, max_tokens=500, step=step + attempt, temperature=0.4
                )
                or ""
            )
            source = extract_code(raw)
            problem = "" if source.strip() else "the answer held no source"
        if problem:
            check = CheckResult(False, "parse", [problem], source_hash(source or raw))
            source = source or f"# no usable answer\n# {raw[:500]!r}\n"
        else:
            check = check_source(source)
        item = store.add(
            source, check, round=round_number, idea=idea["idea"], mode=mode, attempt=attempt,
            prompts=asker.prompts[seen_prompts:],
        )  # fmt: skip
        if check.accepted:
            return item
        reasons = "; ".join(check.reasons)[:800]
        messages = messages + [
            {"role": "assistant", "content": raw[:1500] or "(nothing)"},
            {
                "role": "user",
                "content": f"It was rejected at the {check.stage} stage: {reasons}. Fix that and "
                "answer again in the same form.",
            },
        ]
    assert item is not None
    return item


# ---------------------------------------------------------------------- the whole run
def _check_run(storage: Any, run: str) -> optuna.study.StudySummary:
    summaries = optuna.get_all_study_summaries(storage=storage, include_best_trial=False)
    for s in summaries:
        if s.study_name == run and s.user_attrs.get(_attrs.KIND) == "outer":
            return s
    runs = sorted(s.study_name for s in summaries if s.user_attrs.get(_attrs.KIND) == "outer")
    raise ConfigurationError(
        f"Run {run!r} is not in this storage; the bilevel runs there are {runs}. Run "
        "`bilevel-optuna run SPEC.toml` first, or fix `run` in the research spec."
    )


def run_research(
    spec: str | Path | ResearchSpec | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    **settings: Any,
) -> ResearchReport:
    """Run research rounds on a bilevel run stored in a storage.

    Args:
        spec: A research spec file (TOML) or a :class:`ResearchSpec`; or give its settings as
            keywords (``storage=..., run=..., rounds=..., mode=..., model=...``).
        progress: Called with one line per step.

    Returns:
        A :class:`~bilevel_optuna.research.ResearchReport`.

    Example:

        .. code-block:: python

            from bilevel_optuna import run_research

            report = run_research(storage="sqlite:///bilevel_demo/demo.db", run="demo", rounds=1)
            print(report.to_markdown())
    """
    if spec is None:
        spec = ResearchSpec(**settings)
    elif not isinstance(spec, ResearchSpec):
        spec = ResearchSpec.from_toml(spec)
        if settings:
            spec = dataclasses.replace(spec, **settings)
    say = progress or (lambda line: None)
    if isinstance(spec.storage, str):
        if "://" not in spec.storage:
            raise ConfigurationError(
                f"storage must be a database URL such as 'sqlite:///bilevel.db' but got "
                f"{spec.storage!r}."
            )
        store_storage: Any = optuna.storages.RDBStorage(spec.storage)
    else:
        store_storage = spec.storage
    _check_run(store_storage, spec.run)
    store = MechanismStore(store_storage, spec.run)
    model = spec.model if isinstance(spec.model, ChatModel) else get_chat_model(spec.model)
    modes = ["compose", "code"] if spec.mode == "both" else [spec.mode]
    done = store.rounds()
    for number in range(1, spec.rounds + 1):
        record = done.get(number)
        if record is None:
            diagnosis = diagnose(store_storage, spec.run)
            record = research_round(
                store, model=model, round_number=number, diagnosis=diagnosis, modes=modes,
                max_repairs=spec.max_repairs, seed=spec.seed, progress=say,
            )  # fmt: skip
        if spec.n_outer_trials and "evaluation" not in record:
            accepted = [m["name"] for m in record["mechanisms"] if m["status"] == "accepted"]
            if accepted:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    record["evaluation"] = evaluate_round(
                        store, spec, number, accepted, progress=say
                    )
                store.set_round(number, record)
    return build_report(store)
