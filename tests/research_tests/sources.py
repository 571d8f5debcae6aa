"""Known good and known bad mechanism sources for the gate and boundary tests.

``{path}`` and ``{port}`` are filled in by the tests: a file the attack tries to write and a
port on 127.0.0.1 where the test listens for the connection it tries to make.
"""

GOOD = '''
"""Reject candidates close to a completed trial; note the best value; prefer far candidates."""
import math

import optuna
from bilevel_optuna.samplers import Mechanism, Review


class FarFromHistory(Mechanism):
    name = "far_from_history"
    version = "1"

    def __init__(self, *, radius: float = 0.05) -> None:
        self.radius = radius

    @classmethod
    def search_space(cls):
        return {"radius": optuna.distributions.FloatDistribution(0.0, 0.3)}

    def prepare(self, context):
        best = context.best_trial
        if best is not None:
            context.notes.append(f"best so far: {best.value:.4g}")
        context.record[self.name] = {"seen": len(context.complete_trials)}

    def review(self, candidate, context):
        for t in context.complete_trials:
            if context.distance(candidate, t.params) < self.radius:
                return Review.reject(f"too close to trial {t.number}")
        return Review.accept()

    def choose(self, candidates, context):
        done = context.complete_trials
        def gap(c):
            return min((context.distance(c, t.params) for t in done), default=math.inf)
        return sorted(candidates, key=gap, reverse=True)

    def after_trial(self, study, trial, state, values):
        self.last = trial.number
'''

SYNTAX_ERROR = """
from bilevel_optuna.samplers import Mechanism
class Broken(Mechanism)
    name = "broken"
"""

WRONG_INTERFACE = """
from bilevel_optuna.samplers import Mechanism, Review
class Wrong(Mechanism):
    name = "wrong"
    def review(self, candidate):
        return Review.accept()
"""

FORBIDDEN_IMPORT = """
import os
from bilevel_optuna.samplers import Mechanism
class Env(Mechanism):
    name = "env"
    def prepare(self, context):
        context.notes.append(os.environ.get("OPENAI_API_KEY", ""))
"""

OBFUSCATED_IMPORT = """
from bilevel_optuna.samplers import Mechanism
class Sneaky(Mechanism):
    name = "sneaky"
    def prepare(self, context):
        b = [].__class__.__base__.__subclasses__()
        imp = getattr(__builtins__, "__imp" + "ort__")
        imp("o" + "s").system("touch {path}")
"""

ENDLESS_LOOP = """
from bilevel_optuna.samplers import Mechanism
class Spin(Mechanism):
    name = "spin"
    def prepare(self, context):
        while True:
            pass
"""

MEMORY_HOG = """
from bilevel_optuna.samplers import Mechanism
class Hog(Mechanism):
    name = "hog"
    def prepare(self, context):
        blocks = []
        while True:
            blocks.append(bytearray(64 * 1024 * 1024))
"""

SYSTEM_EXIT = """
from bilevel_optuna.samplers import Mechanism
class Quit(Mechanism):
    name = "quit"
    def prepare(self, context):
        raise SystemExit(3)
"""

KEYBOARD_INTERRUPT = """
from bilevel_optuna.samplers import Mechanism, Review
class Interrupt(Mechanism):
    name = "interrupt"
    def review(self, candidate, context):
        raise KeyboardInterrupt
"""

# The attacks below pass the pre-filter's eye only when it is switched off (``_prefilter=False``
# in tests): they show what the boundary alone stops.
FORK = """
import os
from bilevel_optuna.samplers import Mechanism
class Forker(Mechanism):
    name = "forker"
    def prepare(self, context):
        pid = os.fork()
        if pid == 0:
            open("{path}", "w").write("child")
            os._exit(0)
        os.waitpid(pid, 0)
"""

WRITE_FILE = """
from bilevel_optuna.samplers import Mechanism
class Writer(Mechanism):
    name = "writer"
    def prepare(self, context):
        with open("{path}", "w") as f:
            f.write("written by generated code")
"""

OPEN_SOCKET = """
import socket
from bilevel_optuna.samplers import Mechanism
class Caller(Mechanism):
    name = "caller"
    def prepare(self, context):
        socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"leak")
"""

READ_ENV = """
import os
from bilevel_optuna.samplers import Mechanism
class Leak(Mechanism):
    name = "leak"
    def prepare(self, context):
        context.notes.append("env:" + repr(sorted(os.environ.items())))
"""

HARD_EXIT = """
import os
from bilevel_optuna.samplers import Mechanism
class Die(Mechanism):
    name = "die"
    def prepare(self, context):
        os._exit(7)
"""


def fill(source: str, *, path: object = "/nonexistent", port: int = 9) -> str:
    return source.replace("{path}", str(path)).replace("{port}", str(port))
