"""One proposal of LLMSampler, top to bottom.

For a trial in the relative search space: the context (:class:`ProposalContext`), the
``prepare`` hooks, the model calls (an unusable answer is fed back, up to ``max_attempts``), the
``review`` and ``choose`` hooks, the queued candidates, and the record stored on the trial. A
trial that the model cannot propose (the endpoint down, the spend cap reached, no usable answer)
takes its parameters from the base sampler, said once per run.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna import _optuna_private
from bilevel_optuna._logging import get_logger
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ChatAuthenticationError
from bilevel_optuna.exceptions import ChatConnectionError
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ChatModelNotFoundError
from bilevel_optuna.exceptions import ChatRateLimitError
from bilevel_optuna.exceptions import ChatServerError
from bilevel_optuna.exceptions import ChatTimeoutError
from bilevel_optuna.samplers import _spend
from bilevel_optuna.samplers._answer import AnswerError
from bilevel_optuna.samplers._answer import answer_schema
from bilevel_optuna.samplers._answer import parse_answers
from bilevel_optuna.samplers._answer import repair_params
from bilevel_optuna.samplers._candidate import Candidate
from bilevel_optuna.samplers._hooks import HookRunner
from bilevel_optuna.samplers._prompt import PromptInputs
from bilevel_optuna.samplers._prompt import build_messages
from bilevel_optuna.samplers._prompt import format_params
from bilevel_optuna.samplers._prompt import order_history
from bilevel_optuna.samplers._state import INSTEAD_TOP
from bilevel_optuna.samplers._state import state_lines
from bilevel_optuna.samplers.mechanisms._base import ProposalContext
from bilevel_optuna.samplers.mechanisms._geometry import covers

if TYPE_CHECKING:
    from optuna import Study

    from bilevel_optuna.samplers._llm_sampler import LLMSampler

# The fallback and spend-cap warnings keep the logger name they had before the proposal path had
# a module of its own: users filter by it, and the docs show it.
_logger = get_logger("bilevel_optuna.samplers._llm_sampler")

#: Errors that no retry or fallback can heal: the study stops with the message.
_FATAL_CHAT_ERRORS = (ChatAuthenticationError, ChatModelNotFoundError)
#: The endpoint's faults, after the client's retries: ``on_model_error`` says what follows.
_ENDPOINT_ERRORS = (ChatConnectionError, ChatTimeoutError, ChatRateLimitError, ChatServerError)
# What has been said once in this process (a fallback, a cap reached), by what and where: a
# bilevel run of many inner studies says each once, not once per study.
_SAID: set[tuple[str, str]] = set()
_SAID_LOCK = threading.Lock()


def say_once(what: str, study: Study, message: str, *args: Any) -> None:
    """Log a warning once per process for ``what`` in the study's run (or the study)."""
    key = (what, str(study.user_attrs.get(_attrs.RUN) or study.study_name))
    with _SAID_LOCK:
        if key in _SAID:
            return
        _SAID.add(key)
    _logger.warning(message, *args)


class Proposal:
    """One proposal, top to bottom: the context, ``prepare``, the model calls, review, choice,
    queueing, and the record stored on the trial."""

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
            [t for t in trials if covers(t.params, search_space)],
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
        self.state: list[str] | None = None

    # ---------------------------------------------------------------- steps
    def run(self) -> dict[str, Any]:
        if self.sampler.optimizer_state == "cmaes":
            # Read before the hooks, whoever takes the trial: CMA-ES is asked on every trial,
            # so it learns from all of them, not only from those the model proposes.
            self.state = self._state()
        candidate = self._prepare() or self._ask()
        self._store(candidate)
        return candidate.params

    def _prepare(self) -> Candidate | None:
        """Run the ``prepare`` hooks; the first that sets ``context.params`` takes the trial."""
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
                    self.runner.fail(mechanism, f"prepare: {err}")
                    ctx.params = None
                    continue
                return Candidate(params, "mechanism", repairs, taken_by=mechanism.name)
            if before != (len(ctx.notes), [t.number for t in ctx.history]):
                self.runner.changed(mechanism)
        return None

    def _ask(self) -> Candidate:
        """Ask the model (feeding back why an answer could not be used) until a candidate is
        accepted, or fall back to the base sampler."""
        sampler = self.sampler
        not_asked = sampler._model_down or self._cap_reached() or self._resting()
        if not_asked:
            self.attrs[_attrs.ERROR] = not_asked[:500]
            return Candidate(self._fallback(), "fallback")
        messages = build_messages(sampler.template, self._prompt_inputs())
        request_kwargs = dict(
            json_schema=answer_schema(self.space, 1, rationale=sampler.template.rationale),
            temperature=sampler.temperature,
            max_tokens=sampler._max_tokens(len(self.space)),
            # k candidates are k answers of one configuration each to one prompt (the
            # request's ``n``): the embedded model writes them side by side, for little more
            # than one, and independent samples differ where a list in one answer repeats.
            n=sampler.n_candidates,
        )
        last_error = ""
        for attempt in range(sampler.max_attempts):
            request = ChatRequest(
                messages=tuple(messages),
                seed=sampler._request_seed(self.trial.number, attempt),
                **request_kwargs,  # type: ignore[arg-type]
            )
            self.attrs[_attrs.ATTEMPTS] = attempt + 1
            self.attrs[_attrs.REQUEST_HASH] = request.hash()
            try:
                reply = self._complete(request)
            except _FATAL_CHAT_ERRORS:
                raise
            except ChatAnswerError as err:
                last_error = f"{type(err).__name__}: {err}"
                messages = messages + self._feedback(err.raw or "", str(err))
                continue
            except ChatModelError as err:
                if isinstance(err, _ENDPOINT_ERRORS) and sampler.on_model_error == "raise":
                    raise
                last_error = self._model_failed(err)
                break
            chosen, last_error, feedback = self._take(reply)
            if chosen is not None:
                return chosen
            messages = messages + self._feedback(reply.text, feedback)
        self.attrs[_attrs.ERROR] = last_error[:500]
        return Candidate(self._fallback(), "fallback")

    def _resting(self) -> str | None:
        """Why the model is rested this trial (the breaker is open), or ``None``."""
        why = self.sampler._breaker.resting()
        return None if why is None else f"{_spend.ENDPOINT_REASON}: {why}"

    def _model_failed(self, err: ChatModelError) -> str:
        """Why this trial falls back after the model call failed, said once per run."""
        base = type(self.sampler._base_sampler).__name__
        if isinstance(err, _ENDPOINT_ERRORS):
            # The endpoint is down, slow or overloaded, after the client's retries: asking
            # again at once won't help, and after a few such trials the breaker rests it.
            if self.sampler._breaker.failed(f"{type(err).__name__}: {err}"):
                _logger.warning(
                    "Resting the model: %s. Until then the trials take their parameters from "
                    "%s.",
                    self.sampler._breaker.resting(),
                    base,
                )
            say_once(
                f"error:{type(err).__name__}",
                self.study,
                "%s This trial takes its parameters from %s (on_model_error='fallback'); "
                "such trials are counted in the study's user attribute %r.",
                err,
                base,
                _spend.FALLBACK_ATTR,
            )
            return f"{_spend.ENDPOINT_REASON}: {type(err).__name__}: {err}"
        # The model refused this request (a prompt past its context window, a field the
        # endpoint rejects): the next trial's request may differ.
        say_once(
            "refused",
            self.study,
            "%s This trial takes its parameters from %s; such trials are counted in the "
            "study's user attribute %r.",
            err,
            base,
            _spend.FALLBACK_ATTR,
        )
        return f"{_spend.REFUSED_REASON}: {type(err).__name__}: {err}"

    def _take(self, reply: ChatReply) -> tuple[Candidate | None, str, str]:
        """Parse the reply's answers, review them and choose: the candidate evaluated now (the
        rest are queued), or ``None`` with the error to store and the feedback for the model."""
        try:
            parsed, errors = parse_answers(
                reply.usable_texts, self.space, self.sampler.n_candidates
            )
        except AnswerError as err:
            return None, str(err), str(err)
        self.attrs[_attrs.RATIONALE] = parsed.rationale
        answers = [Candidate(p, "llm", r) for p, r in zip(parsed.candidates, parsed.repairs)]
        accepted, rejections = self._review(answers)
        if accepted:
            chosen = self._choose(accepted)
            self._enqueue(chosen[1:], parsed.rationale)
            return chosen[0], "", ""
        why = "; ".join(rejections + errors)
        return (
            None,
            why[:500],
            "These configurations were rejected: " + why + ". Propose different ones.",
        )

    def _state(self) -> list[str]:
        """The optimizer's state block (empty when it has nothing to show yet)."""
        sampler, ctx = self.sampler, self.context
        assert sampler.optimizer_state is not None
        return state_lines(
            sampler.optimizer_state,
            self.study,
            self.trial,
            ctx.trials,
            self.space,
            seed=sampler._state_seed(self.trial.number),
        )

    def _cap_reached(self) -> str | None:
        """Why the model is not asked any more: the study's spend reached the cap."""
        sampler = self.sampler
        if sampler.max_tokens_total is None and sampler.max_cost is None:
            return None
        reached = _spend.cap_reached(
            _spend.spend_of(self.context.trials),
            max_tokens_total=sampler.max_tokens_total,
            max_cost=sampler.max_cost,
            prices=sampler.token_prices,
        )
        if reached is None:
            return None
        study = self.study
        if _spend.CAP_ATTR not in study.user_attrs:
            study.set_user_attr(_spend.CAP_ATTR, {"trial": self.trial.number, "cap": reached})
        say_once(
            "cap",
            study,
            "Spend cap reached (%s) in study %s at trial %d: from now on trials take their "
            "parameters from %s, not the model. Recorded in the study's user attributes %r "
            "and %r.",
            reached,
            study.study_name,
            self.trial.number,
            type(sampler._base_sampler).__name__,
            _spend.CAP_ATTR,
            _spend.FALLBACK_ATTR,
        )
        return f"{_spend.CAP_REASON}: {reached}"

    def _prompt_inputs(self) -> PromptInputs:
        sampler, ctx = self.sampler, self.context
        history, order = ctx.history, sampler.history_order
        state: list[str] = []
        if sampler.optimizer_state is not None:
            state = self.state if self.state is not None else self._state()
            if state:
                self.attrs[_attrs.STATE] = sampler.optimizer_state
            if state and sampler.state_mode == "instead":
                # The state stands for the window; the best few trials show what to beat.
                sign = 1.0 if ctx.minimize else -1.0
                key = lambda t: (sign * float(t.value), t.number)  # noqa: E731
                history, order = sorted(history, key=key)[:INSTEAD_TOP], "best"
        return PromptInputs(
            description=sampler.description,
            metric_name=sampler.metric_name,
            minimize=ctx.minimize,
            search_space=self.space,
            history=history,
            n_complete=sum(t.state == TrialState.COMPLETE for t in ctx.trials),
            failed=[
                t for t in ctx.finished_trials if t.state in (TrialState.FAIL, TrialState.PRUNED)
            ],
            pending=ctx.pending_params,
            notes=ctx.notes,
            prior_knowledge=sampler.prior_knowledge,
            n_candidates=1,
            history_order=order,
            state=state,
        )

    def _complete(self, request: ChatRequest) -> ChatReply:
        """One model call, accounted. The backend checked the answer once against the schema
        (:meth:`~bilevel_optuna.chat.ChatModel.complete`): a reply whose values only break a
        bound is returned marked, and the sampler repairs it; a reply with no usable answer
        raises ``ChatAnswerError``, accounted here before it goes on."""
        try:
            reply = self.sampler.model.complete(request)
        except ChatModelError as err:
            if not isinstance(err, _ENDPOINT_ERRORS):
                self.sampler._breaker.answered()  # an unusable answer or a refusal: it is up
            if isinstance(err, ChatAnswerError) and err.reply is not None:
                self._account(request, err.reply)
            raise
        self.sampler._breaker.answered()
        self._account(request, reply)
        return reply

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

    def _review(self, answers: list[Candidate]) -> tuple[list[Candidate], list[str]]:
        """Run the ``review`` hooks on each answer; drop rejected ones and repeats of pending."""
        accepted: list[Candidate] = []
        rejections: list[str] = []
        pending = self.context.pending_params
        for candidate in answers:
            rejected = False
            for mechanism in self.runner.active("review"):
                ok, review = self.runner.call(
                    mechanism, "review", dict(candidate.params), self.context
                )
                if not ok or review is None or review.action == "accept":
                    continue
                self.runner.changed(mechanism)
                if review.action == "reject":
                    rejections.append(
                        f"{format_params(candidate.params, self.names)}: {review.reason}"
                    )
                    rejected = True
                    break
                try:
                    params, repairs = repair_params(review.params or {}, self.space)
                except AnswerError as err:
                    self.runner.fail(mechanism, f"review: {err}")
                    continue
                candidate.replace(params, mechanism.name, repairs, review.reason)
            if rejected:
                continue
            if any(candidate.params == c.params for c in accepted) or candidate.params in pending:
                rejections.append(
                    f"{format_params(candidate.params, self.names)}: already pending"
                )
                continue
            accepted.append(candidate)
        return accepted, rejections

    def _choose(self, accepted: list[Candidate]) -> list[Candidate]:
        """Let the ``choose`` hooks order the accepted candidates (first: evaluated now)."""
        if len(accepted) < 2:
            return accepted
        for mechanism in self.runner.active("choose"):
            ok, ordered = self.runner.call(
                mechanism, "choose", [dict(c.params) for c in accepted], self.context
            )
            if not ok or not isinstance(ordered, list):
                continue
            # The hook returns configurations; take each back to its candidate, once.
            left = list(accepted)
            reordered = []
            for params in ordered:
                match = next((c for c in left if c.params == params), None)
                if match is not None:
                    left.remove(match)
                    reordered.append(match)
            if not reordered:
                continue
            if reordered != accepted:
                self.runner.changed(mechanism)
            accepted = reordered
        return accepted

    def _enqueue(self, rest: list[Candidate], rationale: str) -> None:
        for candidate in rest:
            self.study.enqueue_trial(
                candidate.params,
                user_attrs={
                    _attrs.SOURCE: candidate.source,
                    _attrs.REPAIRS: candidate.repairs,
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

    def _store(self, candidate: Candidate) -> None:
        attrs = dict(self.attrs)
        attrs[_attrs.SOURCE] = candidate.source
        if candidate.origin != "fallback":
            attrs[_attrs.REPAIRS] = candidate.repairs
        if candidate.taken_by is not None:
            attrs[_attrs.TAKEN_BY] = candidate.taken_by
        if self.exchanges or candidate.origin != "mechanism":
            attrs[_attrs.PROMPT_TOKENS] = self.tokens[0]
            attrs[_attrs.COMPLETION_TOKENS] = self.tokens[1]
            attrs[_attrs.LATENCY] = round(self.latency, 4)
        if self.sampler.mechanisms:
            attrs[_attrs.MECHANISMS] = self.runner.as_record(self.context.record)
        storage = _optuna_private.storage_of(self.study)
        trial_id = _optuna_private.trial_id_of(self.trial)
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        if self.exchanges:
            storage.set_trial_system_attr(trial_id, _attrs.EXCHANGES, self.exchanges)
        if candidate.origin == "fallback":
            error = str(attrs.get(_attrs.ERROR, ""))
            with self.sampler._study_lock:
                summary = self.study.user_attrs.get(_spend.FALLBACK_ATTR, {})
                self.study.set_user_attr(
                    _spend.FALLBACK_ATTR,
                    _spend.count_fallback(summary, _spend.reason_of(error), error),
                )
