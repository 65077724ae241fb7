"""stdout and stderr of every command, and the one error boundary (app.main runs every command in it).

Data goes to stdout: a stdout that cannot take it (closed, a full disk, a reader that went away)
is an `OutputError` (exit 8), never a traceback, and never a silent success. Messages go to
stderr, best effort: when stderr itself is gone there is nobody left to tell, and the exit code
still says what happened.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from ocicache.base.errors import OcicacheError, OutputError
from ocicache.cli.textsafe import safe

EXIT_INTERNAL = 70  # a bug in ocicache (EX_SOFTWARE); rerun with --debug for the traceback
EXIT_INTERRUPTED = 130


def guard_fds() -> None:
    """Give a closed stdin, stdout or stderr /dev/null, so that no file this process opens
    later takes fd 0, 1 or 2 (Python already set `sys.stdout` to None: writing data is still
    an error, see `out`)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def out(text: str | bytes) -> None:
    """Write one text (and a newline) to stdout, now (flushed); OutputError when it cannot.
    ASCII bytes (a JSON document: render.dumps) go to the stream's buffer as they are."""
    stream = sys.stdout
    if stream is None:
        raise OutputError("cannot write the output: stdout is closed")
    try:
        if isinstance(text, bytes):
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                stream.flush()
                buffer.write(text)
                buffer.write(b"\n")
                buffer.flush()
                return
            text = text.decode("ascii")
        stream.write(text)  # (not text + "\n": that would copy a 20 MB document once more)
        stream.write("\n")
        stream.flush()
    except OSError as e:
        raise output_error(e) from None
    except ValueError:  # "I/O operation on closed file"
        raise OutputError("cannot write the output: stdout is closed") from None


def output_error(e: OSError) -> OutputError:
    if e.errno == errno.EPIPE:
        return OutputError("cannot write the output: the reader went away (broken pipe)", quiet=True)
    if e.errno == errno.EBADF:
        return OutputError("cannot write the output: stdout is closed")
    return OutputError(f"cannot write the output: {e.strerror or e}")


class GuardedStdout:
    """sys.stdout for code that writes to it itself (click printing --help): a write or flush
    that fails raises OutputError, as `out` does; everything else is the stream's own."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream  # None: stdout is closed

    def write(self, text: str) -> int:
        if self._stream is None:
            raise OutputError("cannot write the output: stdout is closed")
        try:
            return int(self._stream.write(text))
        except OSError as e:
            raise output_error(e) from None

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except OSError as e:
            raise output_error(e) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def err(text: str) -> None:
    """Write one line to stderr, best effort."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(text)  # (not text + "\n": that would copy a 20 MB document once more)
        stream.write("\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def warn(lines: list[str]) -> None:
    """Warnings go to stderr, one escaped line each; stdout carries data only."""
    for line in lines:
        err(f"ocicache: warning: {safe(line)}")


def error_lines(e: OcicacheError) -> list[str]:
    """What the boundary prints for an error: `ocicache: error: <file>: <where>: <what>`, and
    a hint line when there is one; nothing for a broken pipe."""
    if isinstance(e, OutputError) and e.quiet:
        return []
    lines = [f"ocicache: error: {safe(e)}"]
    if e.hint:
        lines.append(f"hint: {safe(e.hint)}")
    return lines


def stdout_failed() -> bool:
    """True when stdout holds output it cannot write (a flush fails now)."""
    stream = sys.stdout
    if stream is None:
        return False
    try:
        stream.flush()
    except (OSError, ValueError):
        return True
    return False


def _discard_stdout() -> None:
    """After a failed write, let what is still buffered go to /dev/null, so that the flush at
    interpreter exit does not fail again (and print "Exception ignored ...")."""
    stream = sys.stdout
    if stream is None:
        return
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's StringIO): nothing is flushed at exit
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass


def run(body: Callable[[], None], debug: Callable[[], bool]) -> NoReturn:
    """Run a command's body and exit with its documented code: an OcicacheError is one line
    (and a hint) on stderr; Ctrl-C is 130; an unwritable stdout is 8; anything else is a bug
    (70), with the traceback under --debug."""
    try:
        body()
        if sys.stdout is not None:
            sys.stdout.flush()
    except OcicacheError as e:
        _fail(e, debug)
    except KeyboardInterrupt:
        err("ocicache: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except OSError as e:
        if stdout_failed():  # e.g. click printing --help to a full stdout
            _fail(output_error(e), debug)
        _internal(e, debug)
    except Exception as e:
        _internal(e, debug)
    sys.exit(0)


def _fail(e: OcicacheError, debug: Callable[[], bool]) -> NoReturn:
    if debug():
        raise e
    if isinstance(e, OutputError) or stdout_failed():
        _discard_stdout()
    for line in error_lines(e):
        err(line)
    sys.exit(e.exit_code)


def _internal(e: BaseException, debug: Callable[[], bool]) -> NoReturn:
    if debug():
        raise e
    err(f"ocicache: internal error: {type(e).__name__}: {safe(e)} (rerun with --debug)")
    sys.exit(EXIT_INTERNAL)
