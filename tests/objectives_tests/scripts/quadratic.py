"""Test script: prints a metric computed from its parameters, however they were passed.

Parameters come, in this order of precedence, from the module constants below (rewritten per
trial by params_via="constants"), HP_X / HP_Y variables, a JSON or TOML file named by
BILEVEL_OPTUNA_PARAMS_FILE, and --x / --y arguments.
"""

import argparse
import json
import os
import tomllib

X = 0.0  # rewritten by the constants tests
Y = 0  # an int constant
KIND = "plain"  # a categorical constant

params = {"x": X, "y": Y, "kind": KIND}
for name in params:
    if f"HP_{name.upper()}" in os.environ:
        params[name] = os.environ[f"HP_{name.upper()}"]
path = os.environ.get("BILEVEL_OPTUNA_PARAMS_FILE")
if path:
    with open(path, "rb") as f:
        params.update(tomllib.load(f) if path.endswith(".toml") else json.load(f))
parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float)
parser.add_argument("--y", type=int)
parser.add_argument("--kind")
for name, value in vars(parser.parse_args()).items():
    if value is not None:
        params[name] = value

x, y = float(params["x"]), int(params["y"])
bonus = 10.0 if params["kind"] == "shifted" else 0.0
print("loading data ... done")
print(f"params: {json.dumps(params)}")
print(f"objective: {(x - 1.0) ** 2 + (y - 2) ** 2 + bonus:.6f}")
