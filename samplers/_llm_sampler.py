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
from bilevel_optuna import _optuna_private
from bilevel_optuna._logging import get_logger
from bilevel_optuna.chat._base import ChatModel
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
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.samplers._answer import AnswerError
from bilevel_optuna.samplers._answer import answer_schema
from bilevel_optuna.samplers._answer import check_search_space
from bilevel_optuna.samplers._answer import parse_answers
from bilevel_optuna.samplers._answer import repair_params
from bilevel_optuna.samplers._candidate import Candidate
from bilevel_optuna.samplers._geometry import covers
from bilevel_optuna.samplers._hooks import HookRunner
from bilevel_optuna.samplers._loading import MechanismSpec
from bilevel_optuna.samplers._loading import load_mechanisms
from bilevel_optuna.samplers._record import MechanismRecord
from bilevel_optuna.samplers._mechanism import Mechanism
from bilevel_optuna.samplers._mechanism import ProposalContext
from bilevel_optuna.samplers._presets import preset as get_preset
from bilevel_optuna.samplers._prompt import HISTORY_ORDERS
from bilevel_optuna.samplers._prompt import TEMPLATES
from bilevel_optuna.samplers._prompt import PromptInputs
from bilevel_optuna.samplers._prompt import PromptTemplate
from bilevel_optuna.samplers._prompt import build_messages
from bilevel_optuna.samplers._prompt import format_params
from bilevel_optuna.samplers._prompt import order_history
from bilevel_optuna.samplers._state import INSTEAD_TOP
from bilevel_optuna.samplers._state import check_state
from bilevel_optuna.samplers._state import state_lines
from bilevel_optuna.samplers import _spend

if TYPE_CHECKING:
    from optuna import Study

_logger = get_logger(__name__)

#: Errors that no retry or fallback can heal: the study stops with the message.
_FATAL_CHAT_ERRORS = (ChatAuthenticationError, ChatModelNotFoundError)
#: The endpoint's faults, after the client's retries: ``on_model_error`` says what follows.
_ENDPOINT_ERRORS = (ChatConnectionError, ChatTimeoutError, ChatRateLimitError, ChatServerError)
#: What a sampler does when the endpoint fails (``on_model_error``).
ON_MODEL_ERROR = ("raise", "fallback")
# What has been said once in this process (a fallback, a cap reached), by what and where: a
# bilevel run of many inner studies says each once, not once per study.
_SAID: set[tuple[str, str]] = set()
_SAID_LOCK = threading.Lock()


def _say_once(what: str, study: Study, message: str, *args: Any) -> None:
    key = (what, str(study.user_attrs.get(_attrs.RUN) or study.study_name))
    with _SAID_LOCK:
        if key in _SAID:
            return
        _SAID.add(key)
    _logger.warning(message, *args)


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
        preset: The configuration the settings below start from: ``"default"`` (the one the
            bilevel loop chose, see ``samplers/_presets.py``) or ``"level0"``
            (the bare proposer, no mechanism: the baseline). Settings given here override it.
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
        max_attempts: Model calls per proposal before falling back: a trial whose answers are
            all unusable, or whose request the model refuses (a prompt past its context
            window), takes its parameters from ``base_sampler`` (``llm:source`` is
            ``"fallback"``, counted in the study's ``llm:fallback``).
        base_sampler: Samples parameters outside the relative search space (conditional or
            dynamic ones) and the fallback. Defaults to ``TPESampler(seed=seed)``: after its
            random start-up it uses the history of each parameter, which is what a fallback in an
            LLM-guided study should do.
        mechanisms: Mechanisms injected into the proposal path, in hook order: instances,
            classes, registered names, ``(name, params)`` pairs, file paths or source text.
        prior_knowledge: Extra text for the prompt (what is known to work).
        optimizer_state: A classical optimizer's state for the prompt (Centaur's idea, arXiv
            2603.24647): ``"cmaes"`` (CMA-ES's centre, likely range and correlations per
            parameter; a CMA-ES is kept beside the model, every trial joins its population),
            ``"tpe"`` (TPE's good/bad split and its best candidates by l(x)/g(x)), or ``None``
            (``"none"``). See ``bilevel_optuna.samplers._state``.
        state_mode: ``"beside"`` (the state follows the history window) or ``"instead"`` (it
            replaces the window; the best 3 trials are shown with it).
        max_tokens: Completion token cap per call; by default sized to the answer.
        hook_timeout: Seconds a mechanism hook may take before it is switched off for the trial.
        seed: Seed for the model's sampling and the base sampler; the same seed, model and
            objective give the same study.
        on_model_error: What happens when the endpoint fails: checked before the first trial
            (:meth:`~bilevel_optuna.chat.ChatModel.check`: down, key refused, model not served)
            and on every call (down, timed out, rate-limited, failing with 5xx after the
            client's own retries). ``"raise"`` (default): the study
            stops with the error, one line naming the URL, the cause and the fix.
            ``"fallback"``: the trials take their parameters from ``base_sampler``, said once
            as a warning and counted in the study's user attribute ``llm:fallback``.
        max_tokens_total: Cap on the tokens (prompt plus completion) this study spends on the
            model; once reached, the trials come from ``base_sampler``: said once, recorded in
            the study's user attribute ``llm:spend_cap`` and counted in ``llm:fallback``. A
            proposal in flight finishes, so the cap may be passed by one proposal's tokens.
        max_cost: The same cap in money, counted with ``token_prices``.
        token_prices: ``(input, output)``: the price per 1M prompt and per 1M completion
            tokens, for ``max_cost`` and the spend ``bilevel-optuna status`` shows.
    """

    def __init__(
        self,
        *,
        model: ChatModel | str | None = None,
        preset: str = "default",
        description: str = "",
        metric_name: str = "objective value",
        search_space: Mapping[str, BaseDistribution] | None = None,
        temperature: float | None = None,
        history_size: int | None = None,
        history_order: str | None = None,
        template: str | PromptTemplate | None = None,
        n_candidates: int | None = None,
        max_attempts: int = 3,
        base_sampler: BaseSampler | None = None,
        mechanisms: Iterable[MechanismSpec] | None = None,
        prior_knowledge: str = "",
        optimizer_state: str | None = None,
        state_mode: str | None = None,
        max_tokens: int | None = None,
        hook_timeout: float | None = 5.0,
        seed: int | None = None,
        on_model_error: str = "raise",
        max_tokens_total: int | None = None,
        max_cost: float | None = None,
        token_prices: Sequence[float] | None = None,
    ) -> None:
        settings = get_preset(preset)
        temperature = settings["temperature"] if temperature is None else temperature
        history_size = settings["history_size"] if history_size is None else history_size
        history_order = settings["history_order"] if history_order is None else history_order
        template = settings["template"] if template is None else template
        n_candidates = settings["n_candidates"] if n_candidates is None else n_candidates
        mechanisms = settings["mechanisms"] if mechanisms is None else mechanisms
        if optimizer_state is None:
            optimizer_state = settings.get("optimizer_state")
        state_mode = settings.get("state_mode", "beside") if state_mode is None else state_mode
        self.preset = preset
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
        self.optimizer_state = check_state(optimizer_state, state_mode)
        self.state_mode = state_mode
        if on_model_error not in ON_MODEL_ERROR:
            raise ConfigurationError(
                f"on_model_error must be one of {ON_MODEL_ERROR} but got {on_model_error!r}."
            )
        self.token_prices = _spend.check_prices(token_prices)
        _spend.check_cap(max_tokens_total, max_cost, self.token_prices)
        self.on_model_error = on_model_error
        self.max_tokens_total = max_tokens_total
        self.max_cost = max_cost
        # Why the model is not asked (the endpoint failed its check, under "fallback").
        self._model_down: str | None = None
        self._checked = False
        self._study_lock = threading.Lock()
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
        self._check_model(study, trial)
        self._base_sampler.before_trial(study, trial)

    def _check_model(self, study: Study, trial: FrozenTrial) -> None:
        """Check the endpoint before the first trial (once per sampler; the backend asks the
        endpoint once per process). Under ``"raise"`` the trial is marked failed, with why,
        and the error ends ``optimize``; under ``"fallback"`` the model is not asked."""
        if self._checked:
            return
        try:
            self.model.check()
        except ChatModelError as err:
            if self.on_model_error == "raise":
                storage = _optuna_private.storage_of(study)
                trial_id = _optuna_private.trial_id_of(trial)
                storage.set_trial_user_attr(trial_id, _attrs.FAILURE_REASON, str(err)[:500])
                storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
                raise
            self._model_down = f"{_spend.ENDPOINT_REASON}: {err}"
            _say_once(
                f"down:{err}",
                study,
                "%s The trials take their parameters from %s instead (on_model_error="
                "'fallback'); they are counted in each study's user attribute %r.",
                err,
                type(self._base_sampler).__name__,
                _spend.FALLBACK_ATTR,
            )
        self._checked = True

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if len(study.directions) > 1:
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
        record = MechanismRecord.of_trial(trial.user_attrs)
        record.merge_after_trial(runner.record)
        _optuna_private.storage_of(study).set_trial_user_attr(
            _optuna_private.trial_id_of(trial), _attrs.MECHANISMS, record.to_attr()
        )

    # --------------------------------------------------------------- helpers
    def _max_tokens(self, n_params: int) -> int:
        if self.max_tokens is not None:
            return self.max_tokens
        # Per answer (one configuration each): the rationale (about 40 tokens at its length
        # cap) plus about 12 tokens a parameter.
        if not self.template.rationale:
            return 16 + 12 * n_params
        return 72 + 12 * n_params

    def _request_seed(self, trial_number: int, attempt: int) -> int:
        """Seed of attempt ``attempt`` for trial ``trial_number`` (-1: the hooks' generator)."""
        seq = np.random.SeedSequence([self._seed, trial_number, attempt + 1])
        return int(seq.generate_state(1)[0] >> 1)

    def _state_seed(self, trial_number: int) -> int:
        """Seed of the optimizer whose state the prompt shows (apart from the requests')."""
        seq = np.random.SeedSequence([self._seed, trial_number, 0, 1])
        return int(seq.generate_state(1)[0] >> 1)


class _Proposal:
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
        not_asked = sampler._model_down or self._cap_reached()
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
            except _ENDPOINT_ERRORS as err:
                # The endpoint is down, slow or overloaded, after the client's retries: asking
                # again at once won't help.
                if sampler.on_model_error == "raise":
                    raise
                last_error = f"{_spend.ENDPOINT_REASON}: {type(err).__name__}: {err}"
                _say_once(
                    f"error:{type(err).__name__}",
                    self.study,
                    "%s This trial takes its parameters from %s (on_model_error='fallback'); "
                    "such trials are counted in the study's user attribute %r.",
                    err,
                    type(sampler._base_sampler).__name__,
                    _spend.FALLBACK_ATTR,
                )
                break
            except ChatModelError as err:
                # The model refused this request (a prompt past its context window, a field
                # the endpoint rejects): the next trial's request may differ.
                last_error = f"{_spend.REFUSED_REASON}: {type(err).__name__}: {err}"
                _say_once(
                    "refused",
                    self.study,
                    "%s This trial takes its parameters from %s; such trials are counted in the "
                    "study's user attribute %r.",
                    err,
                    type(sampler._base_sampler).__name__,
                    _spend.FALLBACK_ATTR,
                )
                break
            try:
                parsed, errors = parse_answers(
                    reply.usable_texts, self.space, sampler.n_candidates
                )
            except AnswerError as err:
                last_error = str(err)
                messages = messages + self._feedback(reply.text, str(err))
                continue
            self.attrs[_attrs.RATIONALE] = parsed.rationale
            answers = [Candidate(p, "llm", r) for p, r in zip(parsed.candidates, parsed.repairs)]
            accepted, rejections = self._review(answers)
            if accepted:
                chosen = self._choose(accepted)
                self._enqueue(chosen[1:], parsed.rationale)
                return chosen[0]
            last_error = "; ".join(rejections + errors)[:500]
            messages = messages + self._feedback(
                reply.text,
                "These configurations were rejected: "
                + "; ".join(rejections + errors)
                + ". Propose different ones.",
            )
        self.attrs[_attrs.ERROR] = last_error[:500]
        return Candidate(self._fallback(), "fallback")

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
        _say_once(
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
                t
                for t in ctx.finished_trials
                if t.state in (TrialState.FAIL, TrialState.PRUNED)
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
        except ChatAnswerError as err:
            if err.reply is not None:
                self._account(request, err.reply)
            raise
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
