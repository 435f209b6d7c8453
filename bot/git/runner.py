"""Running one git command: async, no shell, a timeout, a small clean environment, typed errors."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.git.auth import scrub

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 600.0
_CHUNK_BYTES = 64 * 1024
# What git needs from the process environment: where programs are, TLS trust, proxies.
# Everything else (BATON_*, provider keys) stays out of git.
_PASSED_THROUGH = (
    "PATH",
    "HOME",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
)
_HINTS = (
    (
        ("Authentication failed", "could not read Username", "returned error: 401"),
        "GitHub refused the installation token: check that the GitHub App is installed on this "
        "repository with Contents read and write permission",
    ),
    (
        ("Repository not found", "returned error: 404"),
        "check the repository name and that the GitHub App is installed on it",
    ),
    (
        ("Could not resolve host", "Failed to connect", "Connection refused"),
        "check BATON_GITHUB_URL and that this machine can reach it",
    ),
)


class GitError(Exception):
    """A git command failed. The message names the command and git's own words, with no secret.

    `command` is the command line as run (it never holds a secret), `stderr` git's scrubbed error
    output and `returncode` its exit status (None when it was stopped by the timeout).
    """

    def __init__(
        self, message: str, *, command: str, stderr: str = "", returncode: int | None = None
    ) -> None:
        super().__init__(message)
        self.command = command
        self.stderr = stderr
        self.returncode = returncode


class GitTimeout(GitError):
    """A git command ran longer than its timeout and was stopped."""


@dataclass(frozen=True)
class GitOutput:
    """What a finished git command printed; `stderr` is already scrubbed of secrets."""

    returncode: int
    stdout: str
    stderr: str


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a git process: a few inherited variables plus git's own settings.

    No system or global git configuration is read and git never prompts for credentials.
    """
    environment = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    environment.setdefault("PATH", os.defpath)
    environment.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            # English messages, so rejections and hints can be recognised.
            "LC_ALL": "C",
        }
    )
    environment.update(extra or {})
    return environment


class GitRunner:
    """Runs git commands as child processes with a default timeout."""

    def __init__(self, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.timeout_seconds = timeout_seconds

    async def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        environment: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        stdin: bytes | None = None,
        check: bool = True,
        timeout_seconds: float | None = None,
    ) -> GitOutput:
        """Run `git *args` in `cwd` with `environment` added to the clean one.

        Raises `GitError` when git exits non-zero (unless `check` is false) and `GitTimeout` when
        it outlives the timeout; every text from git is scrubbed of `secrets`.
        """
        command = shlex.join(["git", *args])
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=clean_environment(environment),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group, so a timeout also stops git's helpers (remote-https, …).
            start_new_session=True,
        )
        timeout = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        try:
            raw_out, raw_err = await asyncio.wait_for(process.communicate(stdin), timeout)
        except TimeoutError:
            await _stop(process)
            raise GitTimeout(
                f"`{command}` took longer than {timeout:g} s and was stopped; "
                "check the network to GitHub, or raise the git timeout",
                command=command,
            ) from None
        except BaseException:
            await _stop(process)
            raise
        output = GitOutput(
            returncode=process.returncode if process.returncode is not None else -1,
            stdout=scrub(raw_out.decode(errors="replace"), secrets),
            stderr=scrub(raw_err.decode(errors="replace"), secrets).strip(),
        )
        logger.debug(
            "git finished",
            extra={
                "git_command": command,
                "returncode": output.returncode,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        if check and output.returncode != 0:
            raise failure(command, output)
        return output

    async def run_capped(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        max_bytes: int,
        timeout_seconds: float | None = None,
    ) -> tuple[str, bool]:
        """The first `max_bytes` of what `git *args` prints, and whether there was more (git is
        stopped then): a command whose output a worker decides is never held whole."""
        command = shlex.join(["git", *args])
        process = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=clean_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        assert process.stdout is not None  # stdout=PIPE above
        timeout = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                data = await _read_at_most(process.stdout, max_bytes + 1)
        except TimeoutError:
            raise GitTimeout(
                f"`{command}` took longer than {timeout:g} s", command=command
            ) from None
        finally:
            await _stop(process)
        return data[:max_bytes].decode(errors="replace"), len(data) > max_bytes


async def _read_at_most(stream: asyncio.StreamReader, size: int) -> bytes:
    chunks: list[bytes] = []
    read = 0
    while read < size and (chunk := await stream.read(min(_CHUNK_BYTES, size - read))):
        chunks.append(chunk)
        read += len(chunk)
    return b"".join(chunks)


def failure(command: str, output: GitOutput) -> GitError:
    """The `GitError` for a command that exited non-zero, with a hint when one is known."""
    message = f"`{command}` failed with exit status {output.returncode}: {output.stderr or '-'}"
    hint = next((text for needles, text in _HINTS if any(n in output.stderr for n in needles)), "")
    if hint:
        message = f"{message} ({hint})"
    return GitError(message, command=command, stderr=output.stderr, returncode=output.returncode)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended on its own meanwhile
    await process.wait()
