"""A loopback git server that speaks GitHub's smart HTTP protocol through `git http-backend`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from starlette.types import Receive, Scope, Send

TOKEN_USER = "x-access-token"
ACTIONS = ("info/refs", "git-upload-pack", "git-receive-pack")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_CHUNK = 64 * 1024
# A fixed identity and date make the initial commit, and so its sha, the same on every run.
FIXED_IDENTITY = {
    "GIT_AUTHOR_NAME": "Initial Import",
    "GIT_AUTHOR_EMAIL": "import@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_NAME": "Initial Import",
    "GIT_COMMITTER_EMAIL": "import@example.com",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}


class GitRequest(NamedTuple):
    """One request the server answered."""

    full_name: str
    service: str  # git-upload-pack (clone, fetch) or git-receive-pack (push)
    method: str
    status: int


class GitRefusal(NamedTuple):
    """How the server turns down a signed-in request: GitHub's status and message."""

    status: int
    message: str


# (full name, token, service) -> why the token may not run the service there, or None.
Refuse = Callable[[str, str, str], GitRefusal | None]


class _Route(NamedTuple):
    owner: str
    repo: str
    action: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def path_info(self) -> str:
        return f"/{self.owner}/{self.repo}.git/{self.action}"


class GitHttpBackend:
    """ASGI app serving git's smart HTTP protocol (clone, fetch, push) through `git http-backend`.

    `root` holds bare repositories as `root/{owner}/{repo}.git`; `authorize(full_name, token)`
    decides whether an installation token may use a repository, and `refuse(full_name, token,
    service)`, when given, may still turn a signed-in token away from one service (GitHub's 404
    for a repository the token cannot see, 403 for a push it may not make). Like GitHub, it takes
    the token as HTTP Basic auth with user name `x-access-token`, answers 401 with
    `WWW-Authenticate` without it, 404 for an unknown repository, and serves `/{owner}/{repo}`
    with or without `.git`. Every answered request is appended to `requests`.
    """

    def __init__(
        self, root: Path, authorize: Callable[[str, str], bool], refuse: Refuse | None = None
    ) -> None:
        self.root = root.resolve()
        self.authorize = authorize
        self.refuse = refuse
        self.requests: list[GitRequest] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _answer_lifespan(receive, send)
        elif scope["type"] == "http":
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _route(scope["path"])
        if route is None:
            await _send_text(send, 404, "Not Found\n")
            return
        service = _service(route, scope["query_string"])
        status = await self._answer(route, service, scope, receive, send)
        self.requests.append(GitRequest(route.full_name, service, scope["method"], status))

    async def _answer(
        self, route: _Route, service: str, scope: Scope, receive: Receive, send: Send
    ) -> int:
        headers = _headers(scope)
        token = _basic_token(headers.get("authorization", ""))
        if token is None or not self.authorize(route.full_name, token):
            realm = [(b"www-authenticate", b'Basic realm="GitHub"')]
            await _send_text(send, 401, "Invalid username or token.\n", realm)
            return 401
        refusal = self.refuse(route.full_name, token, service) if self.refuse else None
        if refusal is not None:
            await _send_text(send, refusal.status, f"{refusal.message}\n")
            return refusal.status
        if not (self.root / route.owner / f"{route.repo}.git").is_dir():
            await _send_text(send, 404, "Repository not found.\n")
            return 404
        environment = self._cgi_environment(route, scope, headers)
        return await _run_backend(environment, receive, send)

    def _cgi_environment(
        self, route: _Route, scope: Scope, headers: Mapping[str, str]
    ) -> dict[str, str]:
        client = scope.get("client") or ("127.0.0.1", 0)
        environment = {
            "PATH": os.environ.get("PATH", os.defpath),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": route.path_info,
            "REQUEST_METHOD": scope["method"],
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "CONTENT_TYPE": headers.get("content-type", ""),
            # http-backend allows receive-pack for an authenticated user.
            "REMOTE_USER": TOKEN_USER,
            "REMOTE_ADDR": str(client[0]),
        }
        optional = {
            "CONTENT_LENGTH": "content-length",
            "HTTP_CONTENT_ENCODING": "content-encoding",
            "GIT_PROTOCOL": "git-protocol",
        }
        for variable, header in optional.items():
            if header in headers:
                environment[variable] = headers[header]
        return environment


def _route(path: str) -> _Route | None:
    parts = path.strip("/").split("/")
    if len(parts) < 3:
        return None
    owner, repo, action = parts[0], parts[1].removesuffix(".git"), "/".join(parts[2:])
    if action not in ACTIONS or not all(_safe_name(name) for name in (owner, repo)):
        return None
    return _Route(owner, repo, action)


def _safe_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and name not in (".", "..")


def _service(route: _Route, query_string: bytes) -> str:
    if route.action != "info/refs":
        return route.action
    for pair in query_string.decode("latin-1").split("&"):
        key, _, value = pair.partition("=")
        if key == "service":
            return value
    return "dumb"


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _basic_token(authorization: str) -> str | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, separator, token = decoded.partition(":")
    return token if separator and user == TOKEN_USER and token else None


async def _run_backend(environment: dict[str, str], receive: Receive, send: Send) -> int:
    process = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    # Feed the request while reading the answer: a large push would otherwise fill the pipes.
    feeder = asyncio.create_task(_feed_request(receive, process.stdin))
    errors = asyncio.create_task(process.stderr.read())
    try:
        status, headers = await _read_cgi_headers(process.stdout)
        if status == 0:
            await _send_text(send, 500, "git http-backend sent no CGI headers\n")
            return 500
        await send({"type": "http.response.start", "status": status, "headers": headers})
        while chunk := await process.stdout.read(_CHUNK):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return status
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, errors, return_exceptions=True)
        await process.wait()


async def _feed_request(receive: Receive, stdin: asyncio.StreamWriter) -> None:
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body: bytes = message.get("body", b"")
            if body:
                stdin.write(body)
                await stdin.drain()
            if not message.get("more_body", False):
                break
    except (BrokenPipeError, ConnectionResetError):
        pass  # http-backend answered without reading the whole body (an error answer)
    finally:
        stdin.close()


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The CGI status and headers; status 0 when the backend ended before a blank line."""
    status = 200
    headers: list[tuple[bytes, bytes]] = []
    while True:
        line = await stdout.readline()
        if not line:
            return 0, []
        line = line.rstrip(b"\r\n")
        if not line:
            return status, headers
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"status":
            status = int(value.split()[0])
        else:
            headers.append((name.strip().lower(), value.strip()))


async def _send_text(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text.encode(), "more_body": False})


async def _answer_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def init_bare_repository(
    path: Path, files: Mapping[str, str | bytes], default_branch: str = "main"
) -> str:
    """Create a bare repository at `path` with one commit holding `files` on `default_branch`.

    The commit's author, committer and dates are fixed, so the same files give the same sha.
    Pushing over HTTP is allowed. Returns the commit sha.
    """
    environment = {
        "PATH": os.environ.get("PATH", os.defpath),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        **FIXED_IDENTITY,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    init = ["init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path)]
    _git(init, path.parent, environment)
    _git(["config", "http.receivepack", "true"], path, environment)
    with tempfile.TemporaryDirectory() as scratch:
        # A throwaway index lets us build the tree without a working copy.
        indexed = {**environment, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        entries = [
            f"100644 {_write_blob(path, content, indexed)}\t{name}\n"
            for name, content in sorted(files.items())
        ]
        _git(["update-index", "--add", "--index-info"], path, indexed, "".join(entries).encode())
        tree = _git(["write-tree"], path, indexed)
    commit = _git(["commit-tree", tree, "-m", "Initial commit"], path, environment)
    _git(["update-ref", f"refs/heads/{default_branch}", commit], path, environment)
    return commit


def _write_blob(repository: Path, content: str | bytes, environment: dict[str, str]) -> str:
    data = content.encode() if isinstance(content, str) else content
    return _git(["hash-object", "-w", "--stdin"], repository, environment, data)


def _git(
    args: list[str], cwd: Path, environment: dict[str, str], stdin: bytes | None = None
) -> str:
    completed = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=environment,
        input=stdin,
        capture_output=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {completed.stderr.decode().strip()}")
    return completed.stdout.decode().strip()
