"""The narrow generation mode: compose existing rules under a JSON schema.

A small model rarely writes a valid Python class, but it can fill a schema: pick one to three
rules from :data:`RULES` (each a tested piece of hook code with one hyperparameter) and a
strength in [0, 1] for each. :func:`render` turns that answer into mechanism source, which goes
through the same gate and runs behind the same boundary as full code: it is generated code too.
The rules' hyperparameters are declared in ``search_space()``, so the outer study can tune them;
the strength sets their defaults.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from bilevel_optuna.exceptions import BilevelOptunaError


@dataclasses.dataclass(frozen=True)
class Rule:
    """One building block: the hook it lives in, its code, and its hyperparameter."""

    hook: str
    description: str
    code: str  # indented for the hook's body; uses ``self.<param>``
    param: str = ""
    distribution: str = ""  # Python expression of its distribution
    low: float = 0.0
    high: float = 1.0
    integer: bool = False

    def default(self, strength: float) -> float | int:
        value = self.low + (self.high - self.low) * min(max(float(strength), 0.0), 1.0)
        return int(round(value)) if self.integer else round(value, 4)


RULES: dict[str, Rule] = {
    "reject_near_history": Rule(
        "review",
        "reject a candidate closer than a radius to a completed trial (breaks copying)",
        "        for t in context.complete_trials:\n"
        "            if context.distance(candidate, t.params) < self.near_radius:\n"
        "                return Review.reject(\n"
        '                    f"too close to trial {t.number}; propose something new"\n'
        "                )\n",
        "near_radius",
        "FloatDistribution(0.0, 0.3)",
        0.0,
        0.3,
    ),
    "avoid_edges": Rule(
        "review",
        "reject a candidate with a value on the edge of its range",
        "        u = context.normalize(candidate)\n"
        "        if ((u < self.edge_margin) | (u > 1 - self.edge_margin)).any():\n"
        '            return Review.reject("a value lies on the edge of its range; move inward")\n',
        "edge_margin",
        "FloatDistribution(0.0, 0.2)",
        0.0,
        0.2,
    ),
    "restart_when_stagnant": Rule(
        "prepare",
        "after this many trials without improvement, take the trial over with a random point",
        "        done = context.complete_trials\n"
        "        best = context.best_trial\n"
        "        if best is not None and len(done) - 1 - done.index(best) >= self.patience:\n"
        "            if context.params is None:\n"
        "                context.params = _random_point(context)\n"
        '                context.record[self.name] = {"restarted": True}\n',
        "patience",
        "IntDistribution(2, 15)",
        2,
        15,
        True,
    ),
    "perturb_best": Rule(
        "prepare",
        "with a probability, take the trial over with a small random step from the best trial",
        "        best = context.best_trial\n"
        "        if best is not None and context.params is None:\n"
        "            if context.rng.random() < self.perturb_probability:\n"
        "                context.params = _step_from(best.params, context, 0.1)\n"
        '                context.record[self.name] = {"perturbed": best.number}\n',
        "perturb_probability",
        "FloatDistribution(0.0, 1.0)",
        0.0,
        1.0,
    ),
    "note_best": Rule(
        "prepare",
        "tell the model the best configuration so far and ask it to move away from it",
        "        best = context.best_trial\n"
        "        if best is not None:\n"
        "            context.notes.append(\n"
        '                f"The best so far is trial {best.number} ({best.value:.4g}); propose a "\n'
        '                "configuration that differs from it in at least two parameters."\n'
        "            )\n",
    ),
    "prefer_far": Rule(
        "choose",
        "evaluate first the candidate farthest from every completed trial",
        "        done = context.complete_trials\n"
        "        candidates = sorted(\n"
        "            candidates,\n"
        "            key=lambda c: -min((context.distance(c, t.params) for t in done), default=1.0),\n"
        "        )\n",
    ),
    "shuffle_history": Rule(
        "prepare",
        "show the history in random order, so the model does not copy the first row",
        "        order = list(context.rng.permutation(len(context.history)))\n"
        "        context.history[:] = [context.history[i] for i in order]\n",
    ),
}

_NAME = re.compile(r"^[a-z][a-z0-9_]{2,30}$")


def compose_schema() -> dict[str, Any]:
    """The JSON schema of a composition answer."""
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{2,30}$"},
            "rules": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "rule": {"type": "string", "enum": sorted(RULES)},
                        "strength": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["rule", "strength"],
                },
            },
        },
        "required": ["name", "rules"],
    }


def describe_rules() -> str:
    return "\n".join(f"- {name}: {rule.description}" for name, rule in sorted(RULES.items()))


class ComposeError(BilevelOptunaError, ValueError):
    """The composition answer cannot be rendered (the message says why, for the repair)."""


def render(answer: Mapping[str, Any], *, idea: str = "") -> str:
    """Mechanism source for a composition answer ``{"name": ..., "rules": [...]}``."""
    name = str(answer.get("name", "")).strip().lower()
    if not _NAME.match(name):
        name = "composed_" + re.sub(r"[^a-z0-9_]", "", name)[:20] if name else "composed"
        if not _NAME.match(name):
            name = "composed"
    picked: dict[str, float] = {}
    for item in answer.get("rules") or []:
        if not isinstance(item, Mapping) or item.get("rule") not in RULES:
            raise ComposeError(f"unknown rule in {item!r}; rules are {sorted(RULES)}")
        try:
            strength = float(item.get("strength", 0.5))
        except (TypeError, ValueError):
            strength = 0.5
        picked.setdefault(str(item["rule"]), strength)  # a rule repeated counts once
    if not picked:
        raise ComposeError(f"no rule was chosen; choose one to three of {sorted(RULES)}")
    rules = [(RULES[r], s) for r, s in picked.items()]
    params = [(rule.param, rule.distribution, rule.default(s)) for rule, s in rules if rule.param]
    lines = [
        f'"""{(idea or "A composition of existing rules.").replace(chr(34), chr(39))[:300]}',
        "",
        f"Rules: {', '.join(picked)}.",
        '"""',
        "",
        "from optuna.distributions import CategoricalDistribution",
        "from optuna.distributions import FloatDistribution",
        "from optuna.distributions import IntDistribution",
        "",
        "from bilevel_optuna.samplers import Mechanism",
        "from bilevel_optuna.samplers import Review",
        "",
        "",
        _HELPERS,
        "",
        "class Composed(Mechanism):",
        f'    name = "{name}"',
        '    version = "1"',
        "",
    ]
    if params:
        args = ", ".join(f"{p}={d!r}" for p, _, d in params)
        lines += [f"    def __init__(self, *, {args}):"]
        lines += [f"        self.{p} = {p}" for p, _, _ in params]
        lines += ["", "    @classmethod", "    def search_space(cls):", "        return {"]
        lines += [f'            "{p}": {dist},' for p, dist, _ in params]
        lines += ["        }", ""]
    for hook, signature, tail in (
        ("prepare", "prepare(self, context)", ""),
        ("review", "review(self, candidate, context)", "        return Review.accept()\n"),
        ("choose", "choose(self, candidates, context)", "        return candidates\n"),
    ):
        bodies = [rule.code for rule, _ in rules if rule.hook == hook]
        if not bodies:
            continue
        lines.append(f"    def {signature}:")
        lines.append("".join(bodies) + tail)
    return "\n".join(lines).rstrip() + "\n"


_HELPERS = '''def _value(u, dist):
    """A parameter value at position u in [0, 1] of its distribution."""
    u = min(max(float(u), 0.0), 1.0)
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    low, high = float(dist.low), float(dist.high)
    if dist.log:
        import math

        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        value = low + u * (high - low)
    if isinstance(dist, IntDistribution):
        return int(min(max(round(value), dist.low), dist.high))
    return min(max(value, low), high)


def _random_point(context):
    return {n: _value(context.rng.random(), d) for n, d in context.search_space.items()}


def _step_from(params, context, scale):
    u = context.normalize(params)
    out = {}
    for i, (n, d) in enumerate(context.search_space.items()):
        if isinstance(d, CategoricalDistribution):
            out[n] = params[n] if context.rng.random() > scale else _value(context.rng.random(), d)
        else:
            out[n] = _value(u[i] + context.rng.normal(0.0, scale), d)
    return out'''
