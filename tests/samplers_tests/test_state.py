"""A classical optimizer's state read from real Optuna studies, and its block in the prompt."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import optuna
import pytest
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution

from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers._state import CMA_GENERATION_KEY
from bilevel_optuna.samplers._state import MAX_STATE_PARAMS
from bilevel_optuna.samplers._state import N_TPE_CANDIDATES
from bilevel_optuna.samplers._state import cmaes_search_space
from bilevel_optuna.samplers._state import format_cmaes_state
from bilevel_optuna.samplers._state import format_tpe_state
from bilevel_optuna.samplers._state import make_cmaes_sampler
from bilevel_optuna.samplers._state import read_cmaes_state
from bilevel_optuna.samplers._state import read_tpe_state

SPACE = {
    "x": FloatDistribution(-5.0, 5.0),
    "y": FloatDistribution(0.0, 10.0),
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
}


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    y = trial.suggest_float("y", 0.0, 10.0)
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    # x and y best together along x = y - 4: CMA-ES learns a correlation.
    return (x - y + 4.0) ** 2 + 0.1 * (x - 1.0) ** 2 + (math.log10(lr) + 2.0) ** 2


def _cmaes_study(n_trials: int) -> optuna.Study:
    study = optuna.create_study(sampler=make_cmaes_sampler(0))
    study.optimize(_objective, n_trials=n_trials)
    return study


def _stored_optimizer(study: optuna.Study) -> Any:
    """The newest optimizer CmaEsSampler stored, read from the raw system attributes."""
    for trial in reversed(study.get_trials(deepcopy=False)):
        chunks = {k: v for k, v in trial.system_attrs.items() if k.startswith("cma:optimizer:")}
        if chunks:
            text = "".join(chunks[f"cma:optimizer:{i}"] for i in range(len(chunks)))
            return pickle.loads(bytes.fromhex(text))
    raise AssertionError("no optimizer stored")


def test_cmaes_state_is_what_cmaes_sampler_holds_in_the_parameters_units() -> None:
    study = _cmaes_study(40)
    running = study.ask()
    trial = study._storage.get_trial(running._trial_id)
    state = read_cmaes_state(study, trial, SPACE, seed=1)
    assert state is not None
    held = _stored_optimizer(study)
    assert state.generation == held.generation >= 2
    assert state.population_size == held.population_size
    assert state.sigma == pytest.approx(held._sigma)
    np.testing.assert_allclose(state.cov, held._C)
    # CMA-ES works on the unit cube (log10 range for lr): its mean, mapped back by hand.
    u = np.clip(held.mean, 0.0, 1.0)
    assert state.mean["x"] == pytest.approx(-5.0 + 10.0 * u[0])
    assert state.mean["y"] == pytest.approx(10.0 * u[1])
    assert state.mean["lr"] == pytest.approx(10 ** (-4.0 + 3.0 * u[2]))
    std = held._sigma * np.sqrt(np.diag(held._C))
    assert state.std["lr"] == pytest.approx(std[2])
    # One standard deviation either side: additive for x, a factor for the log-scale lr.
    if 0.0 < u[0] - std[0] and u[0] + std[0] < 1.0:
        assert state.high["x"] - state.mean["x"] == pytest.approx(10.0 * std[0])
        assert state.mean["x"] - state.low["x"] == pytest.approx(10.0 * std[0])
    if 0.0 < u[2] - std[2] and u[2] + std[2] < 1.0:
        ratio = 10 ** (3.0 * std[2])
        assert state.high["lr"] / state.mean["lr"] == pytest.approx(ratio)
        assert state.mean["lr"] / state.low["lr"] == pytest.approx(ratio)
    # The strongest correlation named is the strongest of C.
    corr = held._C / np.outer(np.sqrt(np.diag(held._C)), np.sqrt(np.diag(held._C)))
    off = [(abs(corr[i, j]), i, j) for i in range(3) for j in range(i + 1, 3)]
    r, i, j = max(off)
    names = list(SPACE)
    if r >= 0.3:
        a, b, value = state.correlations[0]
        assert {a, b} == {names[i], names[j]}
        assert value == pytest.approx(corr[i, j])


def test_cmaes_state_joins_the_trial_to_the_population_and_waits_for_a_generation() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_objective, n_trials=3)
    running = study.ask()
    trial = study._storage.get_trial(running._trial_id)
    # No generation finished: nothing worth showing, but the trial is now CMA-ES's.
    assert read_cmaes_state(study, trial, SPACE, seed=0) is None
    assert study._storage.get_trial(running._trial_id).system_attrs[CMA_GENERATION_KEY] == 0


def test_cmaes_state_needs_two_numeric_parameters() -> None:
    space = {"x": FloatDistribution(-5.0, 5.0), "c": CategoricalDistribution(["a", "b"])}
    assert cmaes_search_space(space) == {"x": space["x"]}
    study = optuna.create_study()
    study.optimize(
        lambda t: t.suggest_float("x", -5, 5) ** 2 + len(t.suggest_categorical("c", ["a", "b"])),
        n_trials=3,
    )
    trial = study._storage.get_trial(study.ask()._trial_id)
    assert read_cmaes_state(study, trial, space, seed=0) is None


def _tpe_study(n_trials: int, direction: str = "minimize") -> optuna.Study:
    space = {**SPACE, "act": CategoricalDistribution(["relu", "tanh"])}
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        act = trial.suggest_categorical("act", ["relu", "tanh"])
        return _objective(trial) + (0.0 if act == "relu" else 1.0)

    study.optimize(objective, n_trials=n_trials)
    study.space = space  # type: ignore[attr-defined]
    return study


@pytest.mark.parametrize("n_trials, n_good", [(20, 2), (35, 4)])
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_tpe_split_has_gammas_size_and_the_best_trials(
    n_trials: int, n_good: int, direction: str
) -> None:
    study = _tpe_study(n_trials, direction)
    space = study.space  # type: ignore[attr-defined]
    trials = study.get_trials(deepcopy=False)
    state = read_tpe_state(study, trials, space, seed=0)
    assert state is not None
    # Optuna's default gamma: ceil(10%) of the trials, at most 25.
    assert state.n_good == n_good == math.ceil(0.1 * n_trials)
    assert state.n_trials == n_trials
    ranked = sorted(trials, key=lambda t: t.value, reverse=direction == "maximize")
    good = ranked[:n_good]
    xs = [t.params["x"] for t in good]
    assert state.params["x"].good[0] == min(xs) and state.params["x"].good[2] == max(xs)
    acts = [t.params["act"] for t in good]
    assert state.params["act"].good[1] == max(acts.count("relu"), acts.count("tanh"))
    assert len(state.candidates) == N_TPE_CANDIDATES
    for candidate in state.candidates:
        assert set(candidate) == set(space)
        assert candidate["act"] in ("relu", "tanh")
        assert 1e-4 <= candidate["lr"] <= 1e-1 and -5.0 <= candidate["x"] <= 5.0


def test_tpe_state_waits_for_three_trials() -> None:
    study = _tpe_study(2)
    assert read_tpe_state(study, study.trials, study.space, seed=0) is None  # type: ignore[attr-defined]


def test_blocks_are_bounded_however_many_parameters() -> None:
    space = {f"p{i:02d}": FloatDistribution(0.0, 1.0) for i in range(30)}
    study = optuna.create_study(sampler=make_cmaes_sampler(0))
    study.optimize(
        lambda t: sum((t.suggest_float(n, 0, 1) - 0.3) ** 2 for n in space), n_trials=40
    )
    trial = study._storage.get_trial(study.ask()._trial_id)
    cma = read_cmaes_state(study, trial, space, seed=0)
    tpe = read_tpe_state(study, study.get_trials(deepcopy=False), space, seed=0)
    assert cma is not None and tpe is not None
    cma_lines = format_cmaes_state(cma, space)
    tpe_lines = format_tpe_state(tpe, list(space))
    assert len(cma_lines) <= MAX_STATE_PARAMS + 3
    assert len(tpe_lines) <= MAX_STATE_PARAMS + 3
    assert any("18 more not shown" in line for line in cma_lines)
    assert max(len(line) for line in cma_lines) < 400


# ----------------------------------------------------------------------- in the prompt


def _sampler_study(n_trials: int, **kwargs: Any) -> tuple[optuna.Study, ScriptedChatModel]:
    def answer(request: ChatRequest, index: int) -> str:
        rng = np.random.default_rng(index)
        return answer_json(
            {"x": float(rng.uniform(-5, 5)), "y": float(rng.uniform(0, 10)), "lr": 1e-3}
        )

    model = ScriptedChatModel(answer)
    sampler = LLMSampler(model=model, preset="level0", search_space=SPACE, seed=0, **kwargs)
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=n_trials)
    return study, model


def _prompt(request: ChatRequest) -> str:
    return request.messages[1]["content"]


def test_cmaes_state_appears_beside_the_history_once_a_generation_is_done() -> None:
    study, model = _sampler_study(24, optimizer_state="cmaes")
    prompts = [_prompt(r) for r in model.requests]
    assert "CMA-ES" not in prompts[0]
    last = prompts[-1]
    assert "CMA-ES search distribution (generation" in last
    assert last.index("evaluated shown.)") < last.index("CMA-ES search distribution")
    assert last.count(" -> ") >= 15  # the history window is still there
    # The trials say whose state their prompt showed: the later ones, CMA-ES's.
    shown = [t.user_attrs.get("llm:state") for t in study.trials]
    assert shown[0] is None and shown[-1] == "cmaes"
    assert shown.count("cmaes") == sum("CMA-ES search" in p for p in prompts)
    # Every trial the model proposed is one of CMA-ES's population.
    assert all(CMA_GENERATION_KEY in t.system_attrs for t in study.trials[1:])
    # lr is shown in its own units: a centre and a likely range inside [1e-4, 1e-1].
    line = next(x for x in last.splitlines() if x.startswith("- lr: centre"))
    numbers = [float(v.strip(",")) for v in line.replace("to", " ").split()[3:] if v[0].isdigit()]
    assert len(numbers) == 3 and all(1e-4 <= v <= 1e-1 for v in numbers)
    assert numbers[1] <= numbers[0] <= numbers[2]


def test_state_instead_of_the_history_keeps_the_best_three() -> None:
    study, model = _sampler_study(24, optimizer_state="tpe", state_mode="instead")
    last = _prompt(model.requests[-1])
    assert "TPE's split: the best 3 of 23 evaluated are good" in last
    assert "(3 of 23 evaluated shown.)" in last
    assert "TPE's best candidates by l(x)/g(x): {" in last
    shown = [x for x in last.splitlines() if " -> " in x and x.startswith("{")]
    best = sorted(t.value for t in study.trials[:-1])[:3]
    assert [float(x.rsplit(" -> ", 1)[1]) for x in shown] == pytest.approx(best, rel=1e-3)


def test_the_state_block_is_short() -> None:
    """Token measure of the block (characters / 4 as a bound), 2 and 6 parameters."""
    for n in (2, 6):
        space = {f"p{i}": FloatDistribution(0.0, 1.0) for i in range(n)}
        study = optuna.create_study(sampler=make_cmaes_sampler(0))
        study.optimize(
            lambda t: sum((t.suggest_float(k, 0, 1) - 0.3) ** 2 for k in space), n_trials=40
        )
        trial = study._storage.get_trial(study.ask()._trial_id)
        cma = read_cmaes_state(study, trial, space, seed=0)
        assert cma is not None
        text = "\n".join(format_cmaes_state(cma, space))
        assert len(text) < 130 + 75 * n


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"optimizer_state": "gp"}, "optimizer_state"),
        ({"optimizer_state": "tpe", "state_mode": "after"}, "state_mode"),
    ],
)
def test_invalid_state_settings_name_the_setting(kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        LLMSampler(model="local", **kwargs)


def test_none_is_no_state() -> None:
    assert LLMSampler(model="local", optimizer_state="none").optimizer_state is None
    _, model = _sampler_study(6)
    assert not any("CMA-ES" in _prompt(r) or "TPE" in _prompt(r) for r in model.requests)


@pytest.mark.slow
def test_embedded_model_with_cmaes_in_control_reads_its_state() -> None:
    """Centaur's setup on the embedded model: CMA-ES in control, the model on a share of the
    trials with CMA-ES's state in its prompt."""
    from bilevel_optuna.chat import get_chat_model
    from bilevel_optuna.chat._base import ChatModel
    from bilevel_optuna.chat._base import ChatReply

    local = get_chat_model("local")
    prompts: list[str] = []

    class Recording(ChatModel):
        name = local.name

        def complete(self, request: ChatRequest) -> ChatReply:
            prompts.append(_prompt(request))
            return local.complete(request)

    sampler = LLMSampler(
        model=Recording(),
        preset="level0",
        search_space=SPACE,
        description="Minimize f(x, y, lr); x and y are best together near x = y - 4.",
        mechanisms=[("classical", {"sampler": "cmaes", "share": 0.5, "n_start": 2})],
        optimizer_state="cmaes",
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=24)
    sources = [t.user_attrs["llm:source"] for t in study.trials]
    assert sources.count("fallback") <= 2
    assert sum(s in ("llm", "repaired") for s in sources) >= 4
    assert any("CMA-ES search distribution" in p for p in prompts)
    # The model's trials are CMA-ES's too, and CMA-ES got past its first generations.
    assert max(t.system_attrs.get(CMA_GENERATION_KEY, 0) for t in study.trials) >= 2
