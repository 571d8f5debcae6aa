from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from mechanism_context import SPACE
from mechanism_context import config
from mechanism_context import make_context
from mechanism_context import make_study
from optuna.distributions import FloatDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers.mechanisms._hybrid import HybridMechanism


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"sampler": "cmaes"}, "sampler"),
        ({"n_warmup": -1}, "n_warmup"),
        ({"refine_after": 1.5}, "refine_after"),
        ({"fraction": 1.5}, "fraction"),
        ({"seed": -3}, "seed"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        HybridMechanism(**kwargs)


def _rows(n: int) -> list[tuple[dict[str, Any], float]]:
    return [
        (config(x=-4.5 + 0.6 * i, n=1 + i % 10, c="abc"[i % 3]), float((i * 7) % 5))
        for i in range(n)
    ]


def _in_space(params: dict[str, Any]) -> bool:
    return set(params) == set(SPACE) and all(
        d._contains(d.to_internal_repr(params[n])) for n, d in SPACE.items()
    )


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc"])
@pytest.mark.parametrize(
    "n_before, kwargs, reason",
    [
        (0, {"n_warmup": 3}, "warmup"),
        (2, {"n_warmup": 3}, "warmup"),
        (3, {"n_warmup": 3}, None),
        (12, {"n_warmup": 0, "refine_after": 12}, "refine"),
        (11, {"n_warmup": 0, "refine_after": 12}, None),
        (11, {"n_warmup": 0, "fraction": 1.0}, "fraction"),
        (11, {"n_warmup": 0, "fraction": 0.0}, None),
    ],
)
def test_phases_hand_the_trial_over(
    sampler: str, n_before: int, kwargs: dict[str, Any], reason: str | None
) -> None:
    ctx = make_context(make_study(_rows(n_before)))
    HybridMechanism(sampler=sampler, **kwargs).prepare(ctx)
    assert ctx.record["hybrid"]["reason"] == reason
    if reason is None:
        assert ctx.params is None
    else:
        assert _in_space(ctx.params)
        assert ctx.record["hybrid"]["sampler"] == sampler


@pytest.mark.parametrize("seed", [None, 7])
def test_fraction_is_reproducible_and_about_right(seed: int | None) -> None:
    mech = HybridMechanism(sampler="random", n_warmup=0, fraction=0.3, seed=seed)

    def decisions() -> list[bool]:
        study = make_study([])
        out = []
        for number in range(200):
            ctx = make_context(study, seed=number)  # asks trial ``number``; rng seeded per trial
            mech.prepare(ctx)
            out.append(ctx.record["hybrid"]["reason"] == "fraction")
        return out

    first = decisions()
    assert first == decisions()
    assert 40 <= sum(first) <= 80


def test_tpe_uses_its_multivariate_model_after_startup_and_is_reproducible() -> None:
    params = []
    for _ in range(2):
        ctx = make_context(make_study(_rows(15)))
        HybridMechanism(n_warmup=100, seed=1).prepare(ctx)
        assert _in_space(ctx.params)
        # TPE's relative (multivariate) path ran: it shares its sample with other workers.
        stored = ctx.study._storage.get_trial(ctx.trial._trial_id).system_attrs
        assert any(k.startswith("tpe:relative_params") for k in stored)
        params.append(ctx.params)
    assert params[0] == params[1]
    other = make_context(make_study(_rows(15)))
    HybridMechanism(n_warmup=100, seed=2).prepare(other)
    assert other.params != params[0]


def test_tpe_works_on_an_rdb_storage(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hybrid.db'}"
    study = make_study(_rows(12), storage=storage)
    loaded = optuna.load_study(study_name=study.study_name, storage=storage)
    ctx = make_context(loaded)
    HybridMechanism(n_warmup=100, seed=0).prepare(ctx)
    assert _in_space(ctx.params)


@pytest.mark.postgres
@pytest.mark.parametrize("sampler", ["tpe", "qmc"])
def test_samplers_work_on_postgresql(postgres_url: str, sampler: str) -> None:
    study = make_study(_rows(12), storage=postgres_url)
    try:
        loaded = optuna.load_study(study_name=study.study_name, storage=postgres_url)
        ctx = make_context(loaded)
        HybridMechanism(sampler=sampler, n_warmup=100, seed=0).prepare(ctx)
        assert _in_space(ctx.params)
    finally:
        optuna.delete_study(study_name=study.study_name, storage=postgres_url)


def test_qmc_walks_one_sequence_per_study() -> None:
    study = make_study(_rows(2))
    seen = []
    for _ in range(4):
        ctx = make_context(study)
        HybridMechanism(sampler="qmc", n_warmup=100).prepare(ctx)
        seen.append(tuple(sorted(ctx.params.items())))
    assert len(set(seen)) == 4


# ----------------------------------------------------------------- in a study


def _objective(trial: optuna.Trial) -> float:
    return (trial.suggest_float("x", -5.0, 5.0) - 1.0) ** 2


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc"])
def test_warmup_trials_do_not_ask_the_model(sampler: str) -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 0.5}))
    llm = LLMSampler(
        preset="level0",
        model=model,
        search_space={"x": FloatDistribution(-5.0, 5.0)},
        seed=0,
        mechanisms=[("hybrid", {"sampler": sampler, "n_warmup": 3})],
    )
    study = optuna.create_study(sampler=llm)
    study.optimize(_objective, n_trials=6)
    sources = [t.user_attrs[_attrs.SOURCE] for t in study.trials]
    assert sources == ["mechanism"] * 3 + ["llm"] * 3
    assert len(model.requests) == 3
    assert all(t.user_attrs["llm:taken_by"] == "hybrid" for t in study.trials[:3])
    assert len({t.params["x"] for t in study.trials[:3]}) == 3


def test_same_seed_same_study() -> None:
    def run() -> list[float]:
        llm = LLMSampler(
            preset="level0",
            model=ScriptedChatModel(lambda r, i: answer_json({"x": 0.5})),
            search_space={"x": FloatDistribution(-5.0, 5.0)},
            seed=3,
            mechanisms=[("hybrid", {"n_warmup": 0, "fraction": 0.5})],
        )
        study = optuna.create_study(sampler=llm)
        study.optimize(_objective, n_trials=14)
        return [t.params["x"] for t in study.trials]

    assert run() == run()


def test_embedded_model_with_a_tpe_warmup() -> None:
    from mechanism_context import embedded_study

    study = embedded_study([("hybrid", {"sampler": "tpe", "n_warmup": 3})], n_trials=6)
    sources = [t.user_attrs[_attrs.SOURCE] for t in study.trials]
    assert sources[:3] == ["mechanism"] * 3
    assert all(s != "mechanism" for s in sources[3:])
    assert all(_attrs.PROMPT_TOKENS not in t.user_attrs for t in study.trials[:3])
