"""Webhook ingress throughput and latency: Baton against a bare FastAPI endpoint.

Both servers receive the same signed `issues.labeled` delivery (`tests/payloads`) on `POST
/api/github/webhooks` and answer 202:

- bare (`benchmarks/bare_endpoint.py`) verifies the signature and answers;
- Baton verifies, parses the fields it needs, commits a `deliveries` row (SQLite with
  synchronous=FULL by default, or PostgreSQL), then answers. With `--body queued` the delivery
  has its installation and Baton also commits its `jobs` row; by default it has none (as the
  body of the `wrk` reference measurement) and Baton answers "ignored".

The load comes from `wrk` (`signed_deliveries.lua`: a unique X-GitHub-Delivery per request)
when it is installed, so that this benchmark and `../shared/bench/ingress-wrk.sh`, the reference
for the goal, measure the same way; `--load python` uses this process instead, one keep-alive
connection per worker over raw asyncio streams. Both servers run under uvicorn on free 127.0.0.1
ports. At each concurrency level bare is measured, then Baton, so both see the same machine
noise. Afterwards `deliveries` must hold one row per 202 Baton gave (wrk does not count the
answers in flight when it stops, so up to two runs' connections more), and each queued delivery
its job. With `--body queued`, Baton's executor tries the jobs it deferred while deliveries
streamed in (each try fails: there is no GitHub here), and the benchmark waits until every job
was tried once.

Why it once printed about 60% where `wrk` measured 43% on SQLite: this process was the load
generator and took 32-39% of a core, slowing bare, which is CPU-bound, more than Baton, which
waits on its commits; Baton logged at WARNING here but at its default INFO under wrk; the bare
endpoints differed (`bare_endpoint.py` answered a JSON body, the wrk one an empty 202); and the
bodies took different paths (this one queued after one parse, wrk's, without an installation,
ignored after three). Now the load generator, log level, body and bare's answer are the same.

Run from the repository root:

    .venv/bin/python benchmarks/ingress.py                  # SQLite in a fresh data directory
    .venv/bin/python benchmarks/ingress.py --postgres       # a fresh database on 127.0.0.1:5432
    .venv/bin/python benchmarks/ingress.py --seconds 3 --concurrency 1,16

Exit status: 0 after a clean measurement (whether or not the goal holds), 1 when an answer was
wrong or the database disagrees with the answers, 2 when setup failed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import http.client
import json
import math
import os
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HOST = "127.0.0.1"
WEBHOOK_PATH = "/api/github/webhooks"
EXPECTED_STATUS = 202
# Bare answers an empty 202 whatever the body; Baton "queued" or "ignored" as the body asks.
ACCEPTED = ("queued", "ignored")
WARMUP_SECONDS = 1.0
PAUSE_SECONDS = 1.0
REQUEST_TIMEOUT = 10.0
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
DRAIN_LIMIT = 300.0
DRAIN_POLL = 0.25
MAX_ERROR_SAMPLES = 5
GOAL_CONCURRENCY = 16
GOAL_RATIO = 0.60
GOAL_P99_MS = 50.0
WRK_THREADS = 2
POSTGRES_ADMIN = f"host={HOST} port=5432 user=postgres dbname=postgres"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PAYLOAD_PATH = REPO_ROOT / "tests" / "payloads" / "issues.labeled.json"
WRK_SCRIPT = BENCH_DIR / "signed_deliveries.lua"
# Jobs the executor has not tried yet (without GitHub credentials every try fails and is retried
# later, so "none queued" would never come).
BACKLOG_SQL = "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running') AND attempts = 0"
QUEUED_DELIVERIES_SQL = "SELECT count(*) FROM deliveries WHERE job IS NOT NULL"

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """The command line: measured seconds per row, concurrency levels, database."""

    seconds: float
    concurrency: list[int]
    postgres: bool
    load: str
    body: str


class BenchmarkError(RuntimeError):
    """Setup failed (a server did not start, a database could not be created)."""


# ---------------------------------------------------------------------------------------------
# The delivery


@dataclass(frozen=True)
class RequestTemplate:
    """The request's bytes around the delivery id, so building a request is one concatenation."""

    head: bytes
    tail: bytes

    @classmethod
    def signed(cls, port: int, secret: str, body: bytes) -> RequestTemplate:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        head = (
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\n"
            f"Host: {HOST}:{port}\r\n"
            "User-Agent: GitHub-Hookshot/benchmark\r\n"
            "Accept: */*\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "X-GitHub-Event: issues\r\n"
            "X-GitHub-Hook-ID: 498765432\r\n"
            "X-GitHub-Hook-Installation-Target-Type: integration\r\n"
            "X-GitHub-Hook-Installation-Target-ID: 876543\r\n"
            f"X-Hub-Signature-256: sha256={digest}\r\n"
            "X-GitHub-Delivery: "
        ).encode()
        return cls(head, b"\r\n\r\n" + body)

    def build(self) -> bytes:
        return self.head + str(uuid.uuid4()).encode() + self.tail


def delivery_body(kind: str) -> bytes:
    """The tests' `issues.labeled` payload, compact, exactly as it is sent and signed; for
    `ignored`, without its installation (as `../shared/bench`'s body: Baton records it and
    queues no job)."""
    payload = json.loads(PAYLOAD_PATH.read_text())
    if kind == "ignored":
        payload.pop("installation")
    return json.dumps(payload, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    """A server subprocess on a loopback port, its output going to `log_path`."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process (all its threads), from /proc."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return math.nan
        fields = stat.rsplit(")", 1)[1].split()
        # After the command name: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    name: str, command: list[str], env: dict[str, str], cwd: Path, port: int
) -> Server:
    log_path = cwd / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Server(name, port, process, log_path)
    wait_healthy(server)
    return server


def wait_healthy(server: Server) -> None:
    """Poll `GET /healthz` until it answers 200; fail if the process exits or time runs out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchmarkError(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        connection = http.client.HTTPConnection(HOST, server.port, timeout=2)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    raise BenchmarkError(f"{server.name} not healthy after {STARTUP_TIMEOUT:.0f} s")


def stop_server(server: Server) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `STOP_TIMEOUT`."""
    if server.process.poll() is not None:
        return
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"{server.name} ignored SIGTERM for {STOP_TIMEOUT:.0f} s; killing it")
        server.process.kill()
        server.process.wait(timeout=STOP_TIMEOUT)


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any BATON_ setting, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BATON_")}
    env.update(extra)
    return env


def baton_command() -> str:
    beside = Path(sys.executable).parent / "baton"
    found = str(beside) if beside.exists() else shutil.which("baton")
    if not found:
        raise BenchmarkError("no `baton` command next to this Python or on PATH")
    return found


def start_baton(workdir: Path, secret: str, database_url: str | None) -> Server:
    """`baton db upgrade`, then `baton serve`, in `workdir` (so no stray `.env` is read)."""
    port = free_port()
    settings = {
        "BATON_HOST": HOST,
        "BATON_PORT": str(port),
        "BATON_DATA_DIR": str(workdir / "data"),
        "BATON_WEBHOOK_SECRET": secret,
    }
    if database_url:
        settings["BATON_DATABASE_URL"] = database_url
    env = clean_environment(**settings)
    baton = baton_command()
    upgrade = subprocess.run(
        [baton, "db", "upgrade"], env=env, cwd=workdir, capture_output=True, timeout=120
    )
    if upgrade.returncode != 0:
        output = (upgrade.stdout + upgrade.stderr).decode(errors="replace")
        raise BenchmarkError(f"baton db upgrade failed ({upgrade.returncode}):\n{output}")
    return start_server("baton", [baton, "serve"], env, workdir, port)


def start_bare(workdir: Path, secret: str) -> Server:
    port = free_port()
    env = clean_environment(BENCH_WEBHOOK_SECRET=secret)
    command = [sys.executable, str(BENCH_DIR / "bare_endpoint.py"), "--host", HOST]
    return start_server("bare", [*command, "--port", str(port)], env, workdir, port)


# ---------------------------------------------------------------------------------------------
# Baton's database


@dataclass(frozen=True)
class Database:
    """Where Baton keeps its rows: a SQLite file, or a PostgreSQL database on HOST:5432."""

    sqlite_path: Path | None = None
    postgres_name: str | None = None

    @property
    def backend(self) -> str:
        return "PostgreSQL" if self.postgres_name else "SQLite"

    @property
    def url(self) -> str | None:
        if self.postgres_name:
            return f"postgresql+psycopg://postgres@{HOST}:5432/{self.postgres_name}"
        return None

    def count(self, sql: str) -> int:
        return int(self.first(sql) or 0)

    def first(self, sql: str) -> Any:
        """The first column of the first row `sql` returns (None if no row), read-only."""
        if self.postgres_name:
            import psycopg

            dsn = f"host={HOST} port=5432 user=postgres dbname={self.postgres_name}"
            with psycopg.connect(dsn, autocommit=True) as db:
                row = db.execute(sql).fetchone()
        else:
            uri = f"file:{self.sqlite_path}?mode=ro"
            with closing(sqlite3.connect(uri, uri=True)) as db:
                row = db.execute(sql).fetchone()
        return row[0] if row else None


@contextmanager
def baton_database(workdir: Path, use_postgres: bool) -> Iterator[Database]:
    """A fresh database for Baton, dropped afterwards when it is a Postgres one."""
    if not use_postgres:
        yield Database(sqlite_path=workdir / "data" / "baton.db")
        return
    import psycopg

    name = f"baton_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as error:
        raise BenchmarkError(f"could not create Postgres database {name}: {error}") from None
    try:
        yield Database(postgres_name=name)
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Drain:
    """The job backlog a Baton row left, and how long the executor took to run it."""

    backlog: int
    seconds: float
    finished: bool

    @property
    def rate(self) -> float:
        return self.backlog / self.seconds if self.seconds > 0 else math.nan


def wait_for_drain(database: Database) -> Drain:
    """Poll until no job is queued or running, for at most `DRAIN_LIMIT` seconds."""
    started = time.perf_counter()
    backlog = left = database.count(BACKLOG_SQL)
    while left and time.perf_counter() - started < DRAIN_LIMIT:
        time.sleep(DRAIN_POLL)
        left = database.count(BACKLOG_SQL)
    seconds = time.perf_counter() - started
    if left:
        print(
            f"WARNING: {left} of {backlog} jobs still queued or running after"
            f" {DRAIN_LIMIT:.0f} s; the rows that follow share the machine with them",
            flush=True,
        )
    return Drain(backlog, seconds, finished=not left)


# ---------------------------------------------------------------------------------------------
# Load generator


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ProtocolError(Exception):
    """The server's answer was not a well-formed HTTP/1.1 response."""


CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ProtocolError,
    ValueError,
)


@dataclass
class WorkerStats:
    latencies: list[float] = field(default_factory=list)
    queued: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(message)


@dataclass(frozen=True)
class Window:
    """A row's clock: requests that start at `measure_from` or later and finish before `stop_at`
    are measured; the ones before are the warmup."""

    measure_from: float
    stop_at: float


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection stays open, for one Content-Length response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    length: int | None = None
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    if length is None:
        raise ProtocolError("response without Content-Length")
    body = await reader.readexactly(length)
    return int(parts[1]), body, not close


def check_answer(status: int, body: bytes, empty: bool = False) -> str | None:
    """None for an expected `202 {"status": "queued" or "ignored"}` (with `empty`, bare's empty
    `202`), else what was wrong."""
    if empty:
        return None if (status, body) == (EXPECTED_STATUS, b"") else f"{status} {body[:200]!r}"
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if status == EXPECTED_STATUS and isinstance(parsed, dict) and parsed.get("status") in ACCEPTED:
        return None
    return f"{status} {body[:200]!r}"


async def worker(
    port: int, template: RequestTemplate, window: Window, empty_answers: bool
) -> WorkerStats:
    """Send requests on one keep-alive connection until `stop_at`, reconnecting after a failure."""
    stats = WorkerStats()
    streams: Streams | None = None
    while time.perf_counter() < window.stop_at:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                if streams is None:
                    streams = await asyncio.open_connection(HOST, port)
                reader, writer = streams
                started = time.perf_counter()
                writer.write(template.build())
                await writer.drain()
                status, body, keep_alive = await read_response(reader)
                finished = time.perf_counter()
        except CONNECTION_ERRORS as error:
            stats.error(f"{type(error).__name__}: {error}")
            await close_streams(streams)
            streams = None
            await asyncio.sleep(0.01)
            continue
        if not keep_alive:
            await close_streams(streams)
            streams = None
        problem = check_answer(status, body, empty_answers)
        if problem:
            stats.error(problem)
            continue
        stats.queued += 1
        if started >= window.measure_from and finished <= window.stop_at:
            stats.latencies.append(finished - started)
    await close_streams(streams)
    return stats


async def close_streams(streams: Streams | None) -> None:
    """Close the connection, if any."""
    if streams is None:
        return
    writer = streams[1]
    writer.close()
    try:
        async with asyncio.timeout(1):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        pass


@dataclass(frozen=True)
class CpuUse:
    """CPU over the measured window: client and server as % of one core, machine as % of all."""

    client: float
    server: float
    machine: float


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return math.nan, math.nan
    ticks = [int(value) for value in first.split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    clock = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / clock, sum(ticks) / clock


async def cpu_during(window: Window, server: Server) -> CpuUse:
    """CPU use while the window is measured (the warmup is not counted)."""
    await asyncio.sleep(max(0.0, window.measure_from - time.perf_counter()))
    client_start, server_start = time.process_time(), server.cpu_seconds()
    busy_start, total_start = machine_cpu_seconds()
    await asyncio.sleep(max(0.0, window.stop_at - time.perf_counter()))
    client_used = time.process_time() - client_start
    server_used = server.cpu_seconds() - server_start
    busy_end, total_end = machine_cpu_seconds()
    seconds = window.stop_at - window.measure_from
    machine = (busy_end - busy_start) / (total_end - total_start) if total_end > total_start else 0
    return CpuUse(client_used / seconds * 100, server_used / seconds * 100, machine * 100)


@dataclass
class Measurement:
    target: str
    concurrency: int
    seconds: float
    requests: int
    p50_ms: float
    p99_ms: float
    queued: int
    errors: int
    error_samples: list[str]
    cpu: CpuUse
    drain: Drain | None = None
    # Requests sent but not counted when the load generator stopped (wrk drops its last ones).
    uncounted: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def percentile_ms(latencies: list[float], fraction: float) -> float:
    """Nearest-rank percentile of latencies (seconds), in milliseconds."""
    if not latencies:
        return math.nan
    ordered = sorted(latencies)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1] * 1000


async def measure(
    server: Server, template: RequestTemplate, concurrency: int, seconds: float
) -> Measurement:
    """Warm up for `WARMUP_SECONDS`, then measure for `seconds`, with `concurrency` workers."""
    now = time.perf_counter()
    window = Window(measure_from=now + WARMUP_SECONDS, stop_at=now + WARMUP_SECONDS + seconds)
    cpu = asyncio.ensure_future(cpu_during(window, server))
    results = await asyncio.gather(
        *(worker(server.port, template, window, server.name == "bare") for _ in range(concurrency))
    )
    latencies = [latency for stats in results for latency in stats.latencies]
    return Measurement(
        target=server.name,
        concurrency=concurrency,
        seconds=seconds,
        requests=len(latencies),
        p50_ms=percentile_ms(latencies, 0.50),
        p99_ms=percentile_ms(latencies, 0.99),
        queued=sum(stats.queued for stats in results),
        errors=sum(stats.errors for stats in results),
        error_samples=[sample for stats in results for sample in stats.error_samples][
            :MAX_ERROR_SAMPLES
        ],
        cpu=await cpu,
    )


def measure_with_wrk(
    server: Server, secret: str, body_path: Path, concurrency: int, seconds: float
) -> Measurement:
    """The same row measured by `wrk` (`signed_deliveries.lua`): a warmup run, then the measured
    one. Client CPU is wrk's, from the resources of waited-for children."""
    signature = "sha256=" + hmac.new(secret.encode(), body_path.read_bytes(), "sha256").hexdigest()
    warmup = run_wrk(server, signature, body_path, concurrency, WARMUP_SECONDS)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = server.cpu_seconds()
    busy_before, total_before = machine_cpu_seconds()
    result = run_wrk(server, signature, body_path, concurrency, seconds)
    busy_after, total_after = machine_cpu_seconds()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    measured = result["duration_us"] / 1e6
    client = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    machine = (busy_after - busy_before) / (total_after - total_before)
    errors = result["non2xx"] + result["socket_errors"]
    return Measurement(
        target=server.name,
        concurrency=concurrency,
        seconds=measured,
        requests=result["requests"],
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        queued=sum(run["requests"] - run["non2xx"] for run in (warmup, result)),
        errors=errors,
        error_samples=[f"wrk: {errors} non-2xx answers or socket errors"] if errors else [],
        uncounted=2 * concurrency,
        cpu=CpuUse(
            client / measured * 100,
            (server.cpu_seconds() - server_before) / measured * 100,
            machine * 100,
        ),
    )


def run_wrk(
    server: Server, signature: str, body_path: Path, concurrency: int, seconds: float
) -> dict[str, int]:
    """One wrk run (two threads, as many connections as `concurrency`); its RESULT figures."""
    command = [
        "wrk",
        f"--threads={min(WRK_THREADS, concurrency)}",
        f"--connections={concurrency}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={REQUEST_TIMEOUT:.0f}s",
        f"--script={WRK_SCRIPT}",
        f"http://{HOST}:{server.port}{WEBHOOK_PATH}",
        "--",
        uuid.uuid4().hex,
        signature,
        str(body_path),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    line = next((line for line in output.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise BenchmarkError(f"wrk printed no RESULT line:\n{output}")
    return {key: int(value) for key, value in (pair.split("=") for pair in line.split()[1:])}


def run_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def run_all(
    servers: tuple[Server, Server],
    database: Database,
    body_path: Path,
    secret: str,
    args: Options,
) -> list[Measurement]:
    """At each concurrency level measure bare, then Baton, then wait for Baton's job backlog."""
    bare, baton = servers
    measurements = []
    for concurrency in args.concurrency:
        for server in servers:
            time.sleep(PAUSE_SECONDS)
            if args.load == "wrk":
                result = measure_with_wrk(server, secret, body_path, concurrency, args.seconds)
            else:
                template = RequestTemplate.signed(server.port, secret, body_path.read_bytes())
                result = run_loop(measure(server, template, concurrency, args.seconds))
            if server is baton and args.body == "queued":
                result.drain = wait_for_drain(database)
            print_row(result)
            measurements.append(result)
    return measurements


# ---------------------------------------------------------------------------------------------
# Report

HEADER = (
    f"{'target':<7} {'conc':>5} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    f" {'errors':>7} {'client CPU':>11} {'server CPU':>11} {'machine':>8}"
    f" {'backlog':>8} {'drain s':>8} {'drain jobs/s':>13}"
)


def print_row(result: Measurement) -> None:
    drain = result.drain
    drained = f" {drain.backlog:>8} {drain.seconds:>8.1f} {drain.rate:>13.0f}" if drain else ""
    print(
        f"{result.target:<7} {result.concurrency:>5} {result.requests:>9}"
        f" {result.rate:>9.0f} {result.p50_ms:>8.2f}"
        f" {result.p99_ms:>8.2f} {result.errors:>7} {result.cpu.client:>10.0f}%"
        f" {result.cpu.server:>10.0f}% {result.cpu.machine:>7.0f}%{drained}",
        flush=True,
    )


def print_preamble(args: Options, body: bytes, backend: str) -> None:
    what = "a delivery row and a job row" if args.body == "queued" else "a delivery row"
    load = "wrk, 2 threads" if args.load == "wrk" else "this process, one connection a worker"
    print(
        f"Webhook ingress: signed issues.labeled deliveries ({PAYLOAD_PATH.name},"
        f" {'without installation, ' if args.body == 'ignored' else ''}{len(body)} bytes),"
        f" a unique X-GitHub-Delivery each, answered 202 {args.body}. Load: {load}.\n"
        "  bare:  verify the signature, answer.\n"
        f"  Baton: verify the signature, parse the fields it needs, commit {what}"
        f" ({backend}{', synchronous=FULL' if backend == 'SQLite' else ''}), answer.\n"
        + (
            "Baton's executor defers jobs while deliveries stream in, so each Baton row leaves"
            " a backlog; after it the benchmark waits until every job was tried once (without"
            " GitHub credentials each try fails): 'backlog' jobs, 'drain s' to try them.\n"
            if args.body == "queued"
            else ""
        )
        + "Baton logs at its default level (INFO)."
        f" Per row: {WARMUP_SECONDS:.0f} s warmup, {args.seconds:g} s measured,"
        f" after a {PAUSE_SECONDS:.0f} s pause. {os.cpu_count()} CPUs shared by client"
        " and servers; client/server CPU = % of one core (server excludes Postgres backends),"
        " machine = % of all cores.\n",
        flush=True,
    )


def pairs(measurements: list[Measurement]) -> Iterator[tuple[int, Measurement, Measurement]]:
    by_key = {(m.target, m.concurrency): m for m in measurements}
    for concurrency in dict.fromkeys(m.concurrency for m in measurements):
        bare, baton = by_key.get(("bare", concurrency)), by_key.get(("baton", concurrency))
        if bare and baton:
            yield concurrency, bare, baton


def print_comparison(measurements: list[Measurement]) -> None:
    print("\nBaton against bare, per concurrency:")
    print(f"{'conc':>5} {'Baton/bare req/s':>17} {'Baton p99 ms':>13}")
    for concurrency, bare, baton in pairs(measurements):
        ratio = baton.rate / bare.rate if bare.rate else math.nan
        print(f"{concurrency:>5} {ratio:>16.0%} {baton.p99_ms:>13.2f}")


def print_goal(measurements: list[Measurement]) -> None:
    goal = (
        f"at concurrency {GOAL_CONCURRENCY}, Baton >= {GOAL_RATIO:.0%} of bare req/s"
        f" and Baton p99 < {GOAL_P99_MS:.0f} ms"
    )
    at_goal = [(bare, baton) for c, bare, baton in pairs(measurements) if c == GOAL_CONCURRENCY]
    if not at_goal:
        print(f"\nGoal ({goal}): not measured (concurrency {GOAL_CONCURRENCY} not in the run)")
        return
    bare, baton = at_goal[0]
    ratio = baton.rate / bare.rate if bare.rate else 0.0
    p99 = baton.p99_ms
    verdict = "HOLDS" if ratio >= GOAL_RATIO and p99 < GOAL_P99_MS else "DOES NOT HOLD"
    print(f"\nGoal ({goal}): {verdict} (ratio {ratio:.0%}, p99 {p99:.2f} ms)")


def check_errors(measurements: list[Measurement]) -> bool:
    total = sum(m.errors for m in measurements)
    print(f"\nErrors (any answer other than 202 {' or '.join(ACCEPTED)}): {total}")
    for m in measurements:
        for sample in m.error_samples:
            print(f"  {m.target} c={m.concurrency}: {sample}")
    return total == 0


def check_database(database: Database, measurements: list[Measurement]) -> bool:
    """One delivery row per 202 Baton gave and one job per queued delivery."""
    answered = sum(m.queued for m in measurements if m.target == "baton")
    uncounted = sum(m.uncounted for m in measurements if m.target == "baton")
    stored = database.count("SELECT count(*) FROM deliveries")
    stored_ok = answered <= stored <= answered + uncounted
    queued = database.count(QUEUED_DELIVERIES_SQL)
    jobs = database.count("SELECT count(*) FROM jobs WHERE delivery_id IS NOT NULL")
    print(
        f"Durability: Baton answered 202 {answered} times, and up to {uncounted} answers went"
        f" uncounted; rows in deliveries: {stored} ({'ok' if stored_ok else 'MISMATCH'});"
        f" queued deliveries {queued},"
        f" jobs {jobs} ({'ok' if jobs == queued else 'MISMATCH'})"
    )
    drained = all(m.drain.finished for m in measurements if m.drain)
    if not drained:
        print(f"Jobs: some were not tried within {DRAIN_LIMIT:.0f} s of their row")
    return stored_ok and jobs == queued


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Webhook ingress: Baton against a bare FastAPI endpoint."
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measured seconds per row (default 5)"
    )
    parser.add_argument(
        "--concurrency",
        type=concurrency_levels,
        default=[1, 16, 64],
        help="comma-separated concurrency levels (default 1,16,64)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help=f"run Baton on a fresh PostgreSQL database on {HOST}:5432 (user postgres)",
    )
    parser.add_argument(
        "--load",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk (the default when installed) or this process",
    )
    parser.add_argument(
        "--body",
        choices=("ignored", "queued"),
        default="ignored",
        help="ignored (no installation: a delivery row) or queued (a delivery and a job row)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")
    return Options(args.seconds, args.concurrency, args.postgres, args.load, args.body)


def concurrency_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not levels or any(not 1 <= level <= 1024 for level in levels):
        raise argparse.ArgumentTypeError("levels must be integers in 1..1024")
    return levels


def benchmark(args: Options, workdir: Path, database: Database) -> int:
    secret = secrets.token_hex(20)
    body = delivery_body(args.body)
    servers: list[Server] = []
    try:
        servers.append(start_bare(workdir, secret))
        servers.append(start_baton(workdir, secret, database.url))
        print_preamble(args, body, database.backend)
        print(HEADER)
        body_path = workdir / "delivery.json"
        body_path.write_bytes(body)
        measurements = run_all((servers[0], servers[1]), database, body_path, secret, args)
        print_comparison(measurements)
        print_goal(measurements)
        clean = check_errors(measurements)
        clean = check_database(database, measurements) and clean
    finally:
        for server in reversed(servers):
            stop_server(server)
    if not clean:
        print("FAILED")
        for server in servers:
            print(f"--- {server.name} log (last lines) ---\n{server.log_tail()}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    try:
        with baton_database(workdir, args.postgres) as database:
            return benchmark(args, workdir, database)
    except BenchmarkError as error:
        print(f"setup failed: {error}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
