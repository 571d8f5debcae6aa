"""LLMSampler: an Optuna sampler whose proposals come from a chat model."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.samplers import TPESampler
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ChatAuthenticationError
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ChatModelNotFoundError
from bilevel_optuna.samplers._answer import AnswerError
from bilevel_optuna.samplers._answer import answer_schema
from bilevel_optuna.samplers._answer import check_search_space
from bilevel_optuna.samplers._answer import parse_answers
from bilevel_optuna.samplers._answer import repair_params
from bilevel_optuna.samplers._hooks import HookRunner
from bilevel_optuna.samplers._loading import MechanismSpec
from bilevel_optuna.samplers._loading import load_mechanisms
from bilevel_optuna.samplers._mechanism import Mechanism
from bilevel_optuna.samplers._mechanism import ProposalContext
from bilevel_optuna.samplers._prompt import HISTORY_ORDERS
from bilevel_optuna.samplers._prompt import TEMPLATES
from bilevel_optuna.samplers._prompt import PromptInputs
from bilevel_optuna.samplers._prompt import PromptTemplate
from bilevel_optuna.samplers._prompt import build_messages
from bilevel_optuna.samplers._prompt import format_params
from bilevel_optuna.samplers._prompt import order_history

if TYPE_CHECKING:
    from optuna import Study

_logger = get_logger(__name__)

#: Errors that no retry or fallback can heal: the study stops with the message.
_FATAL_CHAT_ERRORS = (ChatAuthenticationError, ChatModelNotFoundError)


class LLMSampler(BaseSampler):
    """Sampler whose proposals come from a chat model.

    Each trial, the model reads the objective's description, the search space and a bounded
    window of the study's history, and gives ``n_candidates`` answers, each JSON holding one
    configuration.
    Answers are validated and repaired (clamped, snapped, rounded, near-miss categoricals
    matched); an invalid answer is fed back to the model up to ``max_attempts`` times; after that
    the trial falls back to ``base_sampler``. Extra candidates are queued for the next trials
    with :meth:`optuna.Study.enqueue_trial`, so no two trials, threads or processes take the
    same one. Every request and answer is stored on the trial, so a study can be replayed with
    :class:`~bilevel_optuna.chat.ReplayChatModel` and no model at all.

    Example:

        .. code-block:: python

            import optuna
            from bilevel_optuna.samplers import LLMSampler

            def objective(trial):
                x = trial.suggest_float("x", -5, 5)
                return x**2

            sampler = LLMSampler(description="Minimize x squared.", seed=0)
            study = optuna.create_study(sampler=sampler)
            study.optimize(objective, n_trials=10)

    Args:
        model: A :class:`~bilevel_optuna.chat.ChatModel` or a spec string for
            :func:`~bilevel_optuna.chat.get_chat_model` (``"local"``, ``"openai:MODEL@URL"``).
            ``None`` uses ``BILEVEL_OPTUNA_CHAT_MODEL`` or the embedded model.
        description: What is optimized, in plain words, for the prompt.
        metric_name: How the prompt names the objective value.
        search_space: Parameters declared up front, so the first trial is proposed by the model
            too. Without it the space is the intersection of finished trials' spaces, and the
            first trial comes from ``base_sampler``.
        temperature: Sampling temperature of the model.
        history_size: Completed trials shown in the prompt (the window keeps it bounded).
        history_order: ``"best"`` (best first), ``"chronological"`` (latest window, oldest
            first) or ``"worst"`` (best window, best last).
        template: Name of a prompt style in :data:`TEMPLATES`, or a :class:`PromptTemplate`.
        n_candidates: Answers asked per model call (``ChatRequest.n``), one configuration
            each; the first is evaluated now, the rest are queued.
        max_attempts: Model calls per proposal before falling back.
        base_sampler: Samples parameters outside the relative search space (conditional or
            dynamic ones) and the fallback. Defaults to ``TPESampler(seed=seed)``: after its
            random start-up it uses the history of each parameter, which is what a fallback in an
            LLM-guided study should do.
        mechanisms: Mechanisms injected into the proposal path, in hook order: instances,
            classes, registered names, ``(name, params)`` pairs, file paths or source text.
        prior_knowledge: Extra text for the prompt (what is known to work).
        max_tokens: Completion token cap per call; by default sized to the answer.
        hook_timeout: Seconds a mechanism hook may take before it is switched off for the trial.
        seed: Seed for the model's sampling and the base sampler; the same seed, model and
            objective give the same study.
    """

    def __init__(
        self,
        *,
        model: ChatModel | str | None = None,
        description: str = "",
        metric_name: str = "objective value",
        search_space: Mapping[str, BaseDistribution] | None = None,
        temperature: float = 0.7,
        history_size: int = 15,
        history_order: str = "best",
        template: str | PromptTemplate = "default",
        n_candidates: int = 1,
        max_attempts: int = 3,
        base_sampler: BaseSampler | None = None,
        mechanisms: Iterable[MechanismSpec] = (),
        prior_knowledge: str = "",
        max_tokens: int | None = None,
        hook_timeout: float | None = 5.0,
        seed: int | None = None,
    ) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 but got {temperature}.")
        if history_size < 0:
            raise ValueError(f"history_size must be >= 0 but got {history_size}.")
        if history_order not in HISTORY_ORDERS:
            raise ValueError(
                f"history_order must be one of {HISTORY_ORDERS} but got {history_order!r}."
            )
        if isinstance(template, str):
            if template not in TEMPLATES:
                raise ValueError(
                    f"template must be one of {sorted(TEMPLATES)} or a PromptTemplate "
                    f"but got {template!r}."
                )
            template = TEMPLATES[template]
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1 but got {n_candidates}.")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 but got {max_attempts}.")
        if max_tokens is not None and max_tokens < 16:
            raise ValueError(f"max_tokens must be >= 16 but got {max_tokens}.")
        if hook_timeout is not None and hook_timeout <= 0:
            raise ValueError(f"hook_timeout must be > 0 or None but got {hook_timeout}.")
        if search_space is not None:
            check_search_space(search_space)
        self._model_spec = model
        self._model: ChatModel | None = model if isinstance(model, ChatModel) else None
        self._model_lock = threading.Lock()
        self.description = description
        self.metric_name = metric_name
        self._search_space = dict(search_space) if search_space is not None else None
        self.temperature = temperature
        self.history_size = history_size
        self.history_order = history_order
        self.template = template
        self.n_candidates = n_candidates
        self.max_attempts = max_attempts
        self.prior_knowledge = prior_knowledge
        self.max_tokens = max_tokens
        self.hook_timeout = hook_timeout
        self.mechanisms: list[Mechanism] = load_mechanisms(mechanisms)
        self._seed = int(np.random.SeedSequence(seed).generate_state(1)[0] >> 1)
        self._base_sampler = base_sampler or TPESampler(seed=seed)
        self._intersection = IntersectionSearchSpace(include_pruned=True)

    # ----------------------------------------------------------------- model
    @property
    def model(self) -> ChatModel:
        """The chat model, resolved from the spec on first use (loading it is deferred)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    from bilevel_optuna.chat._spec import get_chat_model

                    self._model = get_chat_model(self._model_spec)  # type: ignore[arg-type]
        return self._model

    # ------------------------------------------------------------ BaseSampler
    def reseed_rng(self) -> None:
        self._seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        self._base_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self._search_space is not None:
            space = self._search_space
        else:
            space = self._intersection.calculate(study)
        return {n: d for n, d in space.items() if not d.single()}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._base_sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._base_sampler.before_trial(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if study._is_multi_objective():
            raise ValueError(
                "LLMSampler supports single-objective studies only; for several objectives use "
                "optuna.samplers.NSGAIISampler or TPESampler, or combine them into one value."
            )
        if not search_space:
            return {}
        check_search_space(search_space)
        return _Proposal(self, study, trial, search_space).run()

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._base_sampler.after_trial(study, trial, state, values)
        runner = HookRunner(self.mechanisms, timeout=self.hook_timeout)
        if not any(runner.active("after_trial")):
            return
        for mechanism in runner.active("after_trial"):
            runner.call(mechanism, "after_trial", study, trial, state, values)
        record = dict(trial.user_attrs.get(_attrs.MECHANISMS, {}))
        for name, entry in runner.record.items():
            merged = dict(record.get(name, {"version": entry["version"], "hooks": {}}))
            hooks = dict(merged.get("hooks", {}))
            hooks["after_trial"] = entry["hooks"].get("after_trial", 0)
            merged["hooks"] = hooks
            merged["errors"] = list(merged.get("errors", [])) + entry["errors"]
            record[name] = merged
        study._storage.set_trial_user_attr(trial._trial_id, _attrs.MECHANISMS, record)

    # --------------------------------------------------------------- helpers
    def _max_tokens(self, n_params: int) -> int:
        if self.max_tokens is not None:
            return self.max_tokens
        # Per answer (one configuration each): the rationale (about 40 tokens at its length
        # cap) plus about 12 tokens a parameter.
        return 72 + 12 * n_params

    def _request_seed(self, trial_number: int, attempt: int) -> int:
        """Seed of attempt ``attempt`` for trial ``trial_number`` (-1: the hooks' generator)."""
        seq = np.random.SeedSequence([self._seed, trial_number, attempt + 1])
        return int(seq.generate_state(1)[0] >> 1)


class _Proposal:
    """One proposal: the context, the model calls, review, choice, queueing and the record."""

    def __init__(
        self,
        sampler: LLMSampler,
        study: Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> None:
        self.sampler = sampler
        self.study = study
        self.trial = trial
        self.space = search_space
        self.names = list(search_space)
        trials = study.get_trials(deepcopy=False)
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        history = order_history(
            [t for t in trials if all(n in t.params for n in search_space)],
            order=sampler.history_order,
            size=sampler.history_size,
            minimize=minimize,
        )
        self.context = ProposalContext(
            study=study,
            trial=trial,
            search_space=search_space,
            trials=trials,
            minimize=minimize,
            history=history,
            notes=[],
            rng=np.random.default_rng(sampler._request_seed(trial.number, -1)),
        )
        self.runner = HookRunner(sampler.mechanisms, timeout=sampler.hook_timeout)
        self.attrs: dict[str, Any] = {}
        self.exchanges: list[dict[str, Any]] = []
        self.tokens = [0, 0]
        self.latency = 0.0

    # ---------------------------------------------------------------- steps
    def run(self) -> dict[str, Any]:
        taken = self._prepare()
        if taken is not None:
            params, source = taken
        else:
            params, source = self._ask()
        self._store(source)
        return params

    def _prepare(self) -> tuple[dict[str, Any], str] | None:
        ctx = self.context
        for mechanism in self.runner.active("prepare"):
            before = (len(ctx.notes), [t.number for t in ctx.history])
            ok, _ = self.runner.call(mechanism, "prepare", ctx)
            if not ok:
                ctx.params = None
                continue
            if ctx.params is not None:
                self.runner.changed(mechanism)
                try:
                    params, repairs = repair_params(ctx.params, self.space)
                except AnswerError as err:
                    self.runner.record[mechanism.name]["errors"].append(f"prepare: {err}")
                    self.runner.off.add(mechanism.name)
                    ctx.params = None
                    continue
                self.attrs[_attrs.REPAIRS] = repairs
                self.attrs[_attrs.TAKEN_BY] = mechanism.name
                return params, "mechanism"
            if before != (len(ctx.notes), [t.number for t in ctx.history]):
                self.runner.changed(mechanism)
        return None

    def _ask(self) -> tuple[dict[str, Any], str]:
        sampler, ctx = self.sampler, self.context
        k = sampler.n_candidates
        # k candidates are k answers of one configuration each to one prompt (the request's
        # ``n``): the embedded model writes them side by side, for little more than one, and
        # independent samples differ from each other where a list in one answer repeats itself.
        schema = answer_schema(self.space, 1)
        pending = self._pending()
        inputs = PromptInputs(
            description=sampler.description,
            metric_name=sampler.metric_name,
            minimize=ctx.minimize,
            search_space=self.space,
            history=ctx.history,
            n_complete=sum(t.state == TrialState.COMPLETE for t in ctx.trials),
            failed=[
                t
                for t in ctx.trials
                if t.state in (TrialState.FAIL, TrialState.PRUNED)
                and all(n in t.params for n in self.names)
            ],
            pending=pending,
            notes=ctx.notes,
            prior_knowledge=sampler.prior_knowledge,
            n_candidates=1,
            history_order=sampler.history_order,
        )
        messages = build_messages(sampler.template, inputs)
        last_error = ""
        for attempt in range(sampler.max_attempts):
            request = ChatRequest(
                messages=tuple(messages),
                json_schema=schema,
                temperature=sampler.temperature,
                max_tokens=sampler._max_tokens(len(self.space)),
                seed=sampler._request_seed(self.trial.number, attempt),
                n=k,
            )
            self.attrs[_attrs.ATTEMPTS] = attempt + 1
            self.attrs[_attrs.REQUEST_HASH] = request.hash()
            try:
                reply = sampler.model.complete(request)
            except _FATAL_CHAT_ERRORS:
                raise
            except ChatAnswerError as err:
                if err.reply is None:
                    last_error = f"{type(err).__name__}: {err}"
                    messages = messages + self._feedback(err.raw or "", str(err))
                    continue
                # The backend checks the schema strictly (bounds included); the sampler repairs
                # what it can, so the answer goes on to parsing like any other.
                reply = err.reply
            except ChatModelError as err:
                # The endpoint is down, slow or overloaded: asking again at once won't help.
                last_error = f"{type(err).__name__}: {err}"
                break
            self._account(request, reply)
            try:
                parsed, errors = parse_answers(reply.texts, self.space, k)
            except AnswerError as err:
                last_error = str(err)
                messages = messages + self._feedback(reply.text, str(err))
                continue
            self.attrs[_attrs.RATIONALE] = parsed.rationale
            accepted, rejections = self._review(parsed.candidates, parsed.repairs, pending)
            if accepted:
                chosen = self._choose(accepted)
                params, repairs = chosen[0]
                self._enqueue(chosen[1:], parsed.rationale)
                self.attrs[_attrs.REPAIRS] = repairs
                if any(r.startswith("replaced by") for r in repairs):
                    return params, "mechanism"
                return params, "repaired" if repairs else "llm"
            last_error = "; ".join(rejections + errors)[:500]
            messages = messages + self._feedback(
                reply.text,
                "These configurations were rejected: "
                + "; ".join(rejections + errors)
                + ". Propose different ones.",
            )
        self.attrs[_attrs.ERROR] = last_error[:500]
        return self._fallback(), "fallback"

    @staticmethod
    def _feedback(answer: str, error: str) -> list[dict[str, str]]:
        return [
            {"role": "assistant", "content": answer[:2000]},
            {
                "role": "user",
                "content": f"Your answer could not be used: {error[:600]} "
                "Answer again with one JSON object that follows the schema.",
            },
        ]

    def _pending(self) -> list[dict[str, Any]]:
        pending = []
        for t in self.context.trials:
            if t.number == self.trial.number:
                continue
            if t.state == TrialState.RUNNING and t.params:
                pending.append(t.params)
            elif t.state == TrialState.WAITING:
                pending.append(t.system_attrs.get("fixed_params", {}))
        return [p for p in pending if all(n in p for n in self.names)]

    def _review(
        self,
        candidates: list[dict[str, Any]],
        repairs: list[list[str]],
        pending: list[dict[str, Any]],
    ) -> tuple[list[tuple[dict[str, Any], list[str]]], list[str]]:
        accepted: list[tuple[dict[str, Any], list[str]]] = []
        rejections: list[str] = []
        for params, reps in zip(candidates, repairs):
            reps = list(reps)
            current: dict[str, Any] | None = params
            for mechanism in self.runner.active("review"):
                ok, review = self.runner.call(mechanism, "review", dict(current), self.context)
                if not ok or review is None or review.action == "accept":
                    continue
                self.runner.changed(mechanism)
                if review.action == "reject":
                    rejections.append(f"{format_params(current, self.names)}: {review.reason}")
                    current = None
                    break
                try:
                    current, extra = repair_params(review.params or {}, self.space)
                except AnswerError as err:
                    self.runner.record[mechanism.name]["errors"].append(f"review: {err}")
                    self.runner.off.add(mechanism.name)
                    continue
                reps += extra + [f"replaced by {mechanism.name}: {review.reason}".strip()]
            if current is None:
                continue
            if any(current == p for p, _ in accepted) or any(current == p for p in pending):
                rejections.append(f"{format_params(current, self.names)}: already pending")
                continue
            accepted.append((current, reps))
        return accepted, rejections

    def _choose(
        self, accepted: list[tuple[dict[str, Any], list[str]]]
    ) -> list[tuple[dict[str, Any], list[str]]]:
        if len(accepted) < 2:
            return accepted
        for mechanism in self.runner.active("choose"):
            ok, ordered = self.runner.call(
                mechanism, "choose", [dict(p) for p, _ in accepted], self.context
            )
            if not ok or not isinstance(ordered, list):
                continue
            by_key = {repr(sorted(p.items())): (p, r) for p, r in accepted}
            reordered = [by_key.get(repr(sorted(dict(p).items()))) for p in ordered]
            reordered_ok = [x for x in reordered if x is not None]
            if not reordered_ok:
                continue
            if [p for p, _ in reordered_ok] != [p for p, _ in accepted]:
                self.runner.changed(mechanism)
            accepted = reordered_ok
        return accepted

    def _enqueue(self, rest: list[tuple[dict[str, Any], list[str]]], rationale: str) -> None:
        for params, repairs in rest:
            self.study.enqueue_trial(
                params,
                user_attrs={
                    _attrs.SOURCE: "repaired" if repairs else "llm",
                    _attrs.REPAIRS: repairs,
                    _attrs.RATIONALE: rationale,
                    _attrs.REQUEST_HASH: self.attrs.get(_attrs.REQUEST_HASH, ""),
                    _attrs.MODEL: self.sampler.model.name,
                    _attrs.QUEUED_BY: self.trial.number,
                },
            )

    def _fallback(self) -> dict[str, Any]:
        base = self.sampler._base_sampler
        return {
            name: base.sample_independent(self.study, self.trial, name, dist)
            for name, dist in self.space.items()
        }

    def _account(self, request: ChatRequest, reply: ChatReply) -> None:
        self.tokens[0] += reply.prompt_tokens
        self.tokens[1] += reply.completion_tokens
        self.latency += reply.latency_s
        self.attrs[_attrs.MODEL] = reply.model
        self.exchanges.append({"hash": request.hash(), "reply": reply.to_dict()})

    def _store(self, source: str) -> None:
        attrs = dict(self.attrs)
        attrs[_attrs.SOURCE] = source
        if self.exchanges or source != "mechanism":
            attrs[_attrs.PROMPT_TOKENS] = self.tokens[0]
            attrs[_attrs.COMPLETION_TOKENS] = self.tokens[1]
            attrs[_attrs.LATENCY] = round(self.latency, 4)
        if self.sampler.mechanisms:
            attrs[_attrs.MECHANISMS] = self.runner.as_record(self.context.record)
        storage, trial_id = self.study._storage, self.trial._trial_id
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        if self.exchanges:
            storage.set_trial_system_attr(trial_id, _attrs.EXCHANGES, self.exchanges)
