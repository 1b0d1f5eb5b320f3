"""Start external commands safely: the only place in the agent that creates processes.

Every command is an argv list (never a shell string), runs with stdin from /dev/null in its
own process group, has its merged stdout/stderr read incrementally (so a job's output grows
live), redacted and kept as a bounded tail, and is killed with its whole process group when
its timeout expires.
"""

from __future__ import annotations

import codecs
import collections
import logging
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .redaction import mask_known_secrets, redact_text

# redact_text is part of this module's interface: every caller that runs commands also redacts.
__all__ = [
    "CommandResult",
    "CommandStream",
    "StartFailed",
    "minimal_env",
    "redact_text",
    "resolve_binary",
    "run_command",
    "start_stream",
]

log = logging.getLogger(__name__)

# After SIGTERM to the group, how long the command gets to exit before SIGKILL.
KILL_GRACE_SECONDS = 5.0
# After the command itself exited, how long to keep reading output that processes it left
# behind (still holding the pipe) may write, before giving up on them.
DRAIN_AFTER_EXIT_SECONDS = 2.0
# A partial line longer than this is passed on without waiting for its newline.
MAX_LINE_CHARS = 8_192
READ_CHUNK = 65_536

TRUNCATION_NOTE = "[... earlier output cut ...]\n"


@dataclass
class CommandResult:
    """What happened to one command."""

    argv: list[str]
    exit_code: int | None
    output: str  # merged stdout+stderr tail, bounded and redacted
    timed_out: bool = False
    error: str | None = None  # why it could not run or did not finish, for an operator

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None


# --------------------------------------------------------------------------- environment


#: Where docker and fm find the engine (rootless docker, remote engines, contexts, TLS):
#: passed on when the agent has them, so `docker`/`fm` reach the same engine it was set up for.
DOCKER_ENV = (
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "XDG_RUNTIME_DIR",
)


def minimal_env() -> dict[str, str]:
    """The environment a command gets when the caller passes none: PATH, HOME, a UTF-8 locale and
    the docker engine settings (:data:`DOCKER_ENV`) the agent has.

    Nothing else of the agent's own environment (which may hold the API token or other secrets) is passed on.
    """
    env = {
        "PATH": os.environ.get("PATH") or os.defpath,
        "HOME": os.environ.get("HOME") or "/",
        "LANG": "C.UTF-8",
    }
    env.update({name: os.environ[name] for name in DOCKER_ENV if os.environ.get(name)})
    return env


def put_first_on_path(binary: str) -> None:
    """Put the directory of an absolute ``binary`` (agent.docker_binary) first on the agent's PATH.

    Every command gets the agent's PATH (:func:`minimal_env`), and ``fm`` finds docker on it on
    its own: without this, fm would run another docker than the one configured (and checked).
    """
    if not os.path.isabs(binary):
        return
    directory = os.path.dirname(os.path.normpath(binary))
    parts = [p for p in (os.environ.get("PATH") or os.defpath).split(os.pathsep) if p and p != directory]
    os.environ["PATH"] = os.pathsep.join([directory, *parts])


def resolve_binary(name: str, search_path: str | None = None) -> str | None:
    """The full path of an executable ``name`` (searched on ``search_path`` or PATH), or None."""
    if not name:
        return None
    return shutil.which(name, path=search_path)


# --------------------------------------------------------------------------- running


class OutputTail:
    """The last ``limit`` characters of an output appended in pieces (lines): a command's or a job's.

    Cheap to append to (whole pieces are dropped from the front) and to read often (the text is kept
    until the next append).  A cut text starts with :data:`TRUNCATION_NOTE` and, where one is near, at
    the start of a whole line.
    """

    def __init__(self, limit: int):
        self.limit = max(int(limit), 1)
        self._chunks: collections.deque[str] = collections.deque()
        self._size = 0
        self._cut = False
        self._text: str | None = ""

    def append(self, text: str) -> None:
        self._chunks.append(text)
        self._size += len(text)
        while self._size > self.limit and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft())
            self._cut = True
        self._text = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self._render()
        return self._text

    def _render(self) -> str:
        text = "".join(self._chunks)
        if not self._cut and len(text) <= self.limit:
            return text
        budget = max(self.limit - len(TRUNCATION_NOTE), 0)
        text = text[-budget:] if budget else ""
        first_newline = text.find("\n")
        if 0 <= first_newline < 200 and first_newline < len(text) - 1:
            text = text[first_newline + 1 :]  # start at a whole line
        return (TRUNCATION_NOTE + text)[-self.limit :]


class _LineReader:
    """Turns a command's byte stream into redacted lines, passes each on and keeps them in ``keep``."""

    def __init__(
        self,
        secrets: Sequence[str],
        on_output: Callable[[str], None] | None,
        parsed_only: bool = False,
        keep: OutputTail | None = None,
    ):
        self.secrets = list(secrets)
        self.redact = mask_known_secrets if parsed_only else redact_text
        self.on_output = on_output
        self.keep = keep
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.partial = ""
        self.callback_failed = False

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self.partial + self.decoder.decode(data, final)
        # \r alone is how progress bars redraw; treat it as a line end.
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        *complete, self.partial = text.split("\n")
        for line in complete:
            self._emit(line)
        while len(self.partial) > MAX_LINE_CHARS:
            self._emit(self.partial[:MAX_LINE_CHARS])
            self.partial = self.partial[MAX_LINE_CHARS:]
        if final and self.partial:
            self._emit(self.partial)
            self.partial = ""

    def _emit(self, line: str) -> None:
        line = self.redact(line, self.secrets)
        if self.on_output is not None and not self.callback_failed:
            try:
                self.on_output(line)
            except Exception:  # a broken listener must not break the command
                self.callback_failed = True
                log.exception("output callback failed; further output is only kept in the result")
        if self.keep is not None:
            self.keep.append(line + "\n")


def _describe_start_failure(program: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        if os.sep in program:
            return f"`{program}` does not exist; check the path in the agent's config."
        return f"`{program}` was not found on PATH; install it or set its full path in the agent's config."
    if isinstance(exc, PermissionError):
        return f"`{program}` could not be started: permission denied (is it executable?)."
    return f"`{program}` could not be started: {exc.strerror or exc}."


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is left in the group.

    Zombies are ignored: their parent (often PID 1 in a container) reaps them, not us.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:  # no procfs: ask the kernel, counting zombies too
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _wait_group(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait until the leader has exited and the group is empty; False if ``timeout`` ran out."""
    end = time.monotonic() + timeout
    while True:
        if proc.poll() is not None and not _group_alive(proc.pid):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the command's whole process group, then SIGKILL whatever is left after ``grace``."""
    pgid = proc.pid  # start_new_session=True made the command its group's leader
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if _wait_group(proc, grace):
        return
    # Children may ignore SIGTERM or outlive the leader; the leader is not reaped before
    # this point unless the group is otherwise empty, so the pgid cannot have been reused.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    _wait_group(proc, 1.0)  # SIGKILL is delivered asynchronously


def _start_in_own_group(argv: list[str], cwd: str | None, env: dict | None, *, stdin_pipe: bool = False):
    """argv (never a shell) in a new session, so a timeout can kill its whole process group;
    stdin from /dev/null (or a pipe the caller feeds), stderr merged into stdout, a minimal environment
    unless one is given."""
    return subprocess.Popen(
        argv,
        shell=False,
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=minimal_env() if env is None else env,
        start_new_session=True,
        close_fds=True,
    )


def _feed_stdin(proc: subprocess.Popen, data: bytes) -> None:
    """Write ``data`` to the command's stdin and close it (a command that exits early just drops the rest)."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
    except OSError:  # BrokenPipeError: it stopped reading
        pass
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


def run_command(
    argv: list[str],
    *,
    timeout: float,
    cwd: str | None = None,
    env: dict | None = None,
    on_output: Callable[[str], None] | None = None,
    redact: Sequence[str] = (),
    max_output: int = 64_000,
    parsed_only: bool = False,
    input: bytes | None = None,
) -> CommandResult:
    """Run ``argv`` to completion or until ``timeout`` seconds pass; never raises for command failures.

    ``on_output`` is called with each redacted output line (without its newline) as it arrives.
    ``env`` is the complete environment of the command; None means :func:`minimal_env`.
    Each string in ``redact`` is replaced by ``***`` in the output, as are values that look like
    passwords (``fm info`` prints database passwords).  ``parsed_only`` says the caller parses the
    output and shows none of it (``ps --format json``): then only the ``redact`` strings are masked,
    and a caller that does show a line of it (an error) passes that line through :func:`redact_text`.
    ``input`` is written to the command's stdin (then closed): how a secret-bearing statement reaches
    ``mariadb`` without appearing in any argv.
    """
    if isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple)):
        raise TypeError("run_command takes an argv list, never a shell string")
    argv = [os.fspath(a) for a in argv]
    if not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError("run_command needs a non-empty argv list of strings")
    secrets = list(redact)
    tail = OutputTail(max_output)
    reader = _LineReader(secrets, on_output, parsed_only, keep=tail)
    try:
        proc = _start_in_own_group(argv, cwd, env, stdin_pipe=input is not None)
    except OSError as exc:
        if cwd is not None and isinstance(exc, FileNotFoundError) and not os.path.isdir(cwd):
            error = f"the working directory {cwd} does not exist."
        else:
            error = _describe_start_failure(argv[0], exc)
        return CommandResult(argv=argv, exit_code=None, output="", timed_out=False, error=error)

    if input is not None:
        threading.Thread(target=_feed_stdin, args=(proc, input), name="stdin-feed", daemon=True).start()
    deadline = time.monotonic() + timeout
    timed_out = False
    stdout = proc.stdout
    assert stdout is not None  # started with stdout=PIPE
    fd = stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    exited_at = None
    try:
        while True:
            now = time.monotonic()
            if now >= deadline and proc.poll() is None:
                timed_out = True
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at >= DRAIN_AFTER_EXIT_SECONDS:
                break  # something the command left running still holds the pipe; stop listening
            wait = min(0.2, max(deadline - now, 0.0)) if exited_at is None else 0.05
            if selector.select(wait):
                data = os.read(fd, READ_CHUNK)
                if not data:
                    break  # EOF: every writer is gone
                reader.feed(data)
        if timed_out:
            _kill_group(proc, KILL_GRACE_SECONDS)
            # Pick up what the dying processes wrote; the pipe may still be held by a stray.
            end = time.monotonic() + 0.5
            while time.monotonic() < end and selector.select(0.05):
                data = os.read(fd, READ_CHUNK)
                if not data:
                    break
                reader.feed(data)
        else:
            proc.wait()
    finally:
        selector.close()
        stdout.close()
        if proc.poll() is None:  # only on an unexpected exception above
            _kill_group(proc, 0.5)
    reader.feed(b"", final=True)

    failure: str | None = None
    if timed_out:
        failure = f"timed out after {round(timeout, 1):g} s; its process group was killed."
    return CommandResult(argv=argv, exit_code=proc.returncode, output=tail.text, timed_out=timed_out, error=failure)


# --------------------------------------------------------------------------- streaming

#: After SIGTERM, how long a streamed command (e.g. `docker compose logs --follow`) gets before SIGKILL.
STREAM_KILL_GRACE_SECONDS = 1.0


class StartFailed(Exception):
    """The command could not be started; ``str()`` says why, for an operator."""


class CommandStream:
    """A running command whose redacted output lines the caller pulls with :meth:`read_lines`.

    For output that never ends (a followed log): nothing is kept beyond the lines of one read,
    so memory stays constant however long it runs.  :meth:`close` kills the command's whole
    process group (SIGTERM, SIGKILL after ``STREAM_KILL_GRACE_SECONDS``) and is safe to call twice.
    """

    def __init__(self, proc: subprocess.Popen, secrets: Sequence[str]):
        assert proc.stdout is not None  # started with stdout=PIPE
        self.proc = proc
        self._stdout = proc.stdout
        self._pending: list[str] = []
        self._lines = _LineReader(secrets, self._pending.append)  # nothing kept beyond one read
        self._fd = proc.stdout.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._eof = False
        self._closed = False

    def read_lines(self, timeout: float) -> list[str] | None:
        """The complete lines that arrive within ``timeout`` seconds ([] if none); None once the output ended."""
        if self._eof or self._closed:
            return None
        if self._selector.select(timeout):
            data = os.read(self._fd, READ_CHUNK)
            if data:
                self._lines.feed(data)
            else:
                self._eof = True
                self._lines.feed(b"", final=True)
        lines, self._pending[:] = list(self._pending), []
        if self._eof and not lines:
            return None
        return lines

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.proc.poll() is None or _group_alive(self.proc.pid):
                _kill_group(self.proc, STREAM_KILL_GRACE_SECONDS)
            else:
                self.proc.wait()
        finally:
            self._selector.close()
            self._stdout.close()


def start_stream(
    argv: list[str], *, cwd: str | None = None, env: dict | None = None, redact: Sequence[str] = ()
) -> CommandStream:
    """Start ``argv`` (merged stdout/stderr, stdin /dev/null, own process group) for streaming.

    Raises :class:`StartFailed` when it cannot be started.  The caller must :meth:`CommandStream.close` it.
    """
    if isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple)) or not argv:
        raise TypeError("start_stream takes a non-empty argv list, never a shell string")
    argv = [os.fspath(a) for a in argv]
    try:
        proc = _start_in_own_group(argv, cwd, env)
    except OSError as exc:
        raise StartFailed(_describe_start_failure(argv[0], exc)) from None
    return CommandStream(proc, list(redact))


# --------------------------------------------------------------------------- stream filters


class StreamFilter:
    """A command that transforms a byte stream: bytes go in through feed(), its stdout goes to ``sink``.

    Used to decrypt encrypted backup parts while they are copied (``gpg --decrypt``).  ``secret``,
    when given, is written to a pipe whose read end the command gets as fd ``secret_fd`` (see
    :attr:`secret_fd`), so a passphrase never appears in an argv or the environment.
    """

    def __init__(
        self,
        argv_for_fd: Callable[[int | None], list[str]],
        sink: Callable[[bytes], None],
        *,
        secret: str | None = None,
        env: dict | None = None,
    ):
        read_fd = write_fd = None
        if secret is not None:
            read_fd, write_fd = os.pipe()
        self.secret_fd = read_fd
        argv = argv_for_fd(read_fd)
        try:
            self.proc = subprocess.Popen(
                argv,
                shell=False,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=minimal_env() if env is None else env,
                start_new_session=True,
                close_fds=True,
                pass_fds=(read_fd,) if read_fd is not None else (),
            )
        except OSError as exc:
            for fd in (read_fd, write_fd):
                if fd is not None:
                    os.close(fd)
            raise RuntimeError(_describe_start_failure(argv[0], exc)) from None
        if read_fd is not None and write_fd is not None and secret is not None:
            os.close(read_fd)
            try:
                os.write(write_fd, secret.encode() + b"\n")  # a passphrase is far below the pipe's buffer
            finally:
                os.close(write_fd)
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self._stdin, self._stdout, self._stderr_pipe = self.proc.stdin, self.proc.stdout, self.proc.stderr
        self._sink = sink
        self._error: BaseException | None = None
        self._stderr = b""
        self._reader = threading.Thread(target=self._read_stdout, name="stream-filter-out", daemon=True)
        self._errors = threading.Thread(target=self._read_stderr, name="stream-filter-err", daemon=True)
        self._reader.start()
        self._errors.start()
        self._closed = False

    def _read_stdout(self) -> None:
        try:
            while True:
                data = self._stdout.read1(READ_CHUNK)  # type: ignore[attr-defined]  # a BufferedReader
                if not data:
                    return
                if self._error is None:
                    self._sink(data)
        except BaseException as exc:  # handed to finish()
            self._error = exc
            self._drain(self._stdout)

    @staticmethod
    def _drain(stream) -> None:
        try:
            while stream.read1(READ_CHUNK):
                pass
        except (OSError, ValueError):
            pass

    def _read_stderr(self) -> None:
        data = self._stderr_pipe.read()
        self._stderr = data[-4000:] if data else b""

    @property
    def failed(self) -> BaseException | None:
        return self._error

    def feed(self, data) -> None:
        if self._closed:
            return
        try:
            self._stdin.write(data)
        except BrokenPipeError:
            self._closed = True  # the command stopped reading; finish() reports why

    def finish(self, timeout: float = 60.0) -> tuple[int | None, str]:
        """Close its input, wait for it; returns (exit code, stderr tail). Re-raises a sink error."""
        if not self._closed:
            self._closed = True
            try:
                self._stdin.close()
            except BrokenPipeError:
                pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc, 1.0)
            code = None
        self._reader.join()
        self._errors.join()
        if self._error is not None:
            raise self._error
        return code, self._stderr.decode("utf-8", "replace")

    def abort(self) -> None:
        """Stop it now (after a failure elsewhere)."""
        if self.proc.poll() is None:
            _kill_group(self.proc, 1.0)
        for stream in (self._stdin, self._stdout, self._stderr_pipe):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
