"""Exceptions and warnings of bilevel-optuna: one root error, one subclass per failure users
handle differently, and every warning class the package emits.

Every error the package raises on purpose is a :class:`BilevelOptunaError` (the CLI prints it as
one line and exits 1); those that were raised as built-in errors before keep that base too
(``ConfigurationError`` is a ``ValueError``), so existing ``except`` clauses still catch them.
"""

from __future__ import annotations

from typing import Any


class BilevelOptunaError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigurationError(BilevelOptunaError, ValueError):
    """A setting, spec or argument is wrong; the message names it and says how to fix it."""


class StorageError(BilevelOptunaError):
    """The storage's server cannot be reached or refuses: the message says which and the fix.

    For a wrong URL or a missing driver, see :class:`ConfigurationError`.
    """


class SchemaVersionError(StorageError):
    """The work-queue tables in the database are of another release's schema (older or newer).

    The message names the command that upgrades them (``bilevel-optuna storage upgrade``) or
    the package.
    """


class RunFailedError(BilevelOptunaError):
    """A task of the run failed (its objective raised); the run cannot finish until it is fixed.

    Formerly ``RunFailed`` (still importable from ``bilevel_optuna.studies``, deprecated).
    """


class OptunaCompatibilityError(BilevelOptunaError, AttributeError):
    """The installed Optuna lacks a private name this package reads (a release it was not
    tested with); ``bilevel_optuna/_optuna_private.py`` is the one place that reads them."""


class ChatModelError(BilevelOptunaError):
    """A chat model could not answer.

    Attributes:
        status_code: HTTP status where there was one.
        request_id: The endpoint's request id where it gave one.
        raw: The raw text of the answer or error body, where there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        raw: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.request_id = request_id
        self.raw = raw


class ChatConnectionError(ChatModelError):
    """The endpoint could not be reached (refused, DNS, dropped connection)."""


class ChatTimeoutError(ChatModelError):
    """The endpoint did not answer within the timeout."""


class ChatRateLimitError(ChatModelError):
    """The endpoint kept answering 429 after every retry."""


class ChatAuthenticationError(ChatModelError):
    """The endpoint refused the key (401/403)."""


class ChatModelNotFoundError(ChatModelError):
    """The endpoint does not serve the requested model (404)."""


class ChatServerError(ChatModelError):
    """The endpoint kept failing with 5xx after every retry."""


class ChatAnswerError(ChatModelError):
    """The answer was not valid JSON or did not match the requested schema.

    Attributes:
        raw: The answer's text as the model wrote it (also for repairs).
        reply: The whole reply, a :class:`~bilevel_optuna.chat.ChatReply` (token usage,
            latency, finish reason), so a caller can still account for the call and record or
            repair the answer. Typed ``Any`` here: this module is the bottom layer and imports
            nothing of the package.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        raw: str | None = None,
        reply: Any = None,
    ) -> None:
        super().__init__(message, status_code=status_code, request_id=request_id, raw=raw)
        self.reply = reply


class ReplayMissError(ChatModelError):
    """A replay model was asked a request that was never recorded."""


# --- Warnings -----------------------------------------------------------------------------------


class DegenerateDataWarning(RuntimeWarning):
    """The data make a statistic undefined: all values equal, all differences zero, n < 2.

    The statistic and p-value come back as NaN; nothing is raised.
    """


class NoPowerWarning(UserWarning):
    """The sample is too small for the test to ever reach the significance level.

    Example: the two-sided Wilcoxon signed-rank test on 5 pairs cannot give a p-value below
    ``2 / 2**5 = 0.0625``. The p-value then comes back as NaN and the result says why.
    """


class MechanismInactiveWarning(UserWarning):
    """A configured mechanism never ran, or ran and never changed a proposal."""
