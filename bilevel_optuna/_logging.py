"""The package logger: silent by default, one NullHandler, secrets filtered from records."""

from __future__ import annotations

import logging
import os
import re

_ROOT = "bilevel_optuna"
_SECRET_ENV_VARS = ("OPENAI_API_KEY", "BILEVEL_OPTUNA_API_KEY", "DEEPSEEK_API_KEY")
_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9_\-\.]{8,})")


def redact(text: str) -> str:
    """Remove anything that looks like an API key, and the values of known key variables."""
    for var in _SECRET_ENV_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return _KEY_PATTERN.sub("***", text)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


def get_logger(name: str) -> logging.Logger:
    """Return a logger under the package logger; records pass through the key filter."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RedactingFilter) for f in logger.filters):
        logger.addFilter(_RedactingFilter())
    return logger


_package_logger = logging.getLogger(_ROOT)
_package_logger.addHandler(logging.NullHandler())
