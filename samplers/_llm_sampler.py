"""LLMSampler: an Optuna sampler whose proposals come from a chat model."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.samplers import TPESampler
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna import _optuna_private
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._spec import get_chat_model
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.samplers import _spend
from bilevel_optuna.samplers._answer import check_search_space
from bilevel_optuna.samplers._breaker import breaker_for
from bilevel_optuna.samplers._hooks import HookRunner
from bilevel_optuna.samplers._options import ON_MODEL_ERROR  # noqa: F401 - studies/_spend.py
from bilevel_optuna.samplers._options import check_limits
from bilevel_optuna.samplers._options import check_spending
from bilevel_optuna.samplers._options import prompt_options
from bilevel_optuna.samplers._prompt import PromptTemplate
from bilevel_optuna.samplers._proposal import Proposal
from bilevel_optuna.samplers._proposal import say_once
from bilevel_optuna.samplers._record import MechanismRecord
from bilevel_optuna.samplers._state import check_state
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._loading import MechanismSpec
from bilevel_optuna.samplers.mechanisms._loading import load_mechanisms

if TYPE_CHECKING:
    from optuna import Study


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
            as a warning and counted in the study's user attribute ``llm:fallback``; after 3
            failing calls in a row the model is rested (not asked) for 30 s, doubled per
            failed retry up to 10 minutes, until it answers again.
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
        options = prompt_options(
            preset,
            temperature=temperature,
            history_size=history_size,
            history_order=history_order,
            template=template,
            n_candidates=n_candidates,
            mechanisms=mechanisms,
            optimizer_state=optimizer_state,
            state_mode=state_mode,
        )
        check_limits(
            max_attempts=max_attempts,
            max_tokens=max_tokens,
            hook_timeout=hook_timeout,
            search_space=search_space,
        )
        self.preset = preset
        self.optimizer_state = check_state(options.optimizer_state, options.state_mode)
        self.state_mode = options.state_mode
        self.token_prices = check_spending(
            on_model_error=on_model_error,
            token_prices=token_prices,
            max_tokens_total=max_tokens_total,
            max_cost=max_cost,
        )
        self.on_model_error = on_model_error
        self.max_tokens_total = max_tokens_total
        self.max_cost = max_cost
        # Why the model is not asked (the endpoint failed its check, under "fallback").
        self._model_down: str | None = None
        self._breaker = breaker_for(model)  # rests an endpoint failing trial after trial
        self._checked = False
        self._study_lock = threading.Lock()
        self._model_spec = model
        self._model: ChatModel | None = model if isinstance(model, ChatModel) else None
        self._model_lock = threading.Lock()
        self.description = description
        self.metric_name = metric_name
        self._search_space = dict(search_space) if search_space is not None else None
        self.temperature = options.temperature
        self.history_size = options.history_size
        self.history_order = options.history_order
        self.template = options.template
        self.n_candidates = options.n_candidates
        self.max_attempts = max_attempts
        self.prior_knowledge = prior_knowledge
        self.max_tokens = max_tokens
        self.hook_timeout = hook_timeout
        self.mechanisms: list[Mechanism] = load_mechanisms(options.mechanisms)
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
            say_once(
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
        return Proposal(self, study, trial, search_space).run()

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
