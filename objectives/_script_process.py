"""Process supervision for :class:`~bilevel_optuna.objectives.ScriptObjective`.

One script per trial, in a process group of its own: its output streamed line by line to the
caller (for metrics and intermediate values), a timeout, and on every way out (the end, a
timeout, pruning, Ctrl-C) the whole group stopped, SIGTERM first and SIGKILL after a grace
period. Nothing here knows about metrics or parameters.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from bilevel_optuna._logging import get_logger

_logger = get_logger(__name__)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
TAIL_CHARS = 2000
_MAX_LINE_CHARS = 1 << 20
_POLL_S = 0.5
_DRAIN_S = 5.0


@dataclasses.dataclass(frozen=True)
class ProcessResult:
    """How a script's process ended.

    Attributes:
        exit_code: Its exit status (negative: killed by that signal); None if it never started.
        timed_out: Whether it was stopped for running past the timeout.
        tail: The last lines of its output (stdout and stderr together).
        start_error: Why it could not start, or None.
    """

    exit_code: int | None
    timed_out: bool
    tail: Tail
    start_error: str | None = None


class DevicePool:
    """Devices handed to concurrent trials, one each; a trial waits while all are taken."""

    def __init__(self, devices: Sequence[str]) -> None:
        self._free: queue.Queue[str] = queue.Queue()
        for device in devices:
            self._free.put(device)

    def acquire(self) -> str:
        return self._free.get()

    def release(self, device: str) -> None:
        self._free.put(device)


class Tail:
    """The last lines of the output, enough of them to fill ``chars`` characters."""

    def __init__(self, chars: int) -> None:
        self._chars = chars
        # Each line takes at least one character with its line break.
        self._lines: collections.deque[str] = collections.deque(maxlen=chars)

    def extend(self, batch: list[str]) -> None:
        limit = self._chars
        self._lines.extend(line if len(line) <= limit else line[-limit:] for line in batch)

    def lines(self) -> list[str]:
        return list(self._lines)

    def text(self) -> str:
        return "\n".join(self._lines)[-self._chars :]


def _read_lines(stream: IO[bytes], lines: queue.Queue[list[str] | None]) -> None:
    """Put the lines of ``stream`` on ``lines`` as they arrive, a list per read; ``None`` at
    the end. ``\\r`` ends a line too, so that progress bars redrawn in place count as lines."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    fd = stream.fileno()
    try:
        while True:
            chunk = os.read(fd, 65536)
            text = decoder.decode(chunk, final=not chunk)
            if text:
                parts = _LINE_BREAK.split(pending + text)
                # A "\r\n" split across two reads leaves an empty line: harmless.
                pending = parts.pop()
                if len(pending) > _MAX_LINE_CHARS:
                    parts.append(pending)
                    pending = ""
                if parts:
                    lines.put(parts)
            if not chunk:
                break
    except OSError:  # The pipe was closed under us: the trial is over.
        pass
    finally:
        if pending:
            lines.put([pending])
        lines.put(None)


def kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process group the script leads (to the script alone off POSIX)."""
    killpg = getattr(os, "killpg", None)
    try:
        if killpg is not None:
            killpg(proc.pid, sig)
        elif proc.poll() is None:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_process(
    command: list[str],
    *,
    env: dict[str, str],
    workdir: Path,
    timeout: float | None,
    kill_grace: float,
    log_path: Path | None,
    on_lines: Callable[[list[str]], None],
) -> ProcessResult:
    """Run ``command`` in ``workdir`` until it ends or times out, passing its output to
    ``on_lines`` a batch at a time. An exception from ``on_lines`` (``TrialPruned``) stops
    the script and propagates."""
    _logger.debug(f"Running {shlex.join(command)} in {workdir}")
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    tail = Tail(TAIL_CHARS)
    try:
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as err:
        return ProcessResult(None, False, tail, start_error=str(err.strerror or err))
    assert proc.stdout is not None
    lines: queue.Queue[list[str] | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()

    log = log_path.open("w") if log_path is not None else None
    timed_out = False
    try:
        timed_out = _watch(proc, lines, deadline, tail, log, on_lines)
    finally:
        # On every path (the end, a timeout, pruning, Ctrl-C): the script and whatever it
        # started are stopped, the reader ends, the pipe is closed.
        if log is not None:
            log.close()
        stop(proc, kill_grace)
        reader.join(timeout=_DRAIN_S)
        if reader.is_alive():
            # A process that left the group still holds the pipe; closing it under the
            # reader could hand its file number to another file, so leave both be.
            _logger.warning(
                "A process the script started outside its process group still holds its "
                "output open; it was not stopped."
            )
        else:
            proc.stdout.close()
    _logger.debug(f"Exit code {proc.returncode} after {time.monotonic() - start:.2f} s")
    return ProcessResult(proc.returncode, timed_out, tail)


def _watch(
    proc: subprocess.Popen[bytes],
    lines: queue.Queue[list[str] | None],
    deadline: float | None,
    tail: Tail,
    log: IO[str] | None,
    on_lines: Callable[[list[str]], None],
) -> bool:
    """Follow the output until the script ends; return whether it timed out."""
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            return True
        wait = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
        try:
            batch = lines.get(timeout=max(wait, 0.0))
        except queue.Empty:
            if proc.poll() is not None:
                # The script is gone but something it started holds the pipe open.
                kill_group(proc, signal.SIGKILL)
            continue
        if batch is None:
            break
        if log is not None:
            log.writelines(line + "\n" for line in batch)
        tail.extend(batch)
        on_lines(batch)
    # End of output; the script may still be finishing.
    try:
        proc.wait(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        return True
    return False


def stop(proc: subprocess.Popen[bytes], kill_grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after the grace period."""
    if proc.poll() is None:
        kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=kill_grace)
        except subprocess.TimeoutExpired:
            pass
    kill_group(proc, signal.SIGKILL)
    proc.wait()
