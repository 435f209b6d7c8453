"""Webhook ingress throughput and latency: Baton against a bare FastAPI endpoint.

Both servers receive the same signed `issues.labeled` delivery (`tests/payloads`) on `POST
/api/github/webhooks` and answer `202 {"status": "queued"}`:

- bare (`benchmarks/bare_endpoint.py`) verifies the signature and answers;
- Baton verifies, parses the fields it needs, commits a `deliveries` row and a `jobs` row (SQLite
  with synchronous=FULL by default, or PostgreSQL), then answers.

Baton runs its jobs in the same process, but its executor defers them while deliveries stream in
(it claims at most once a second), so a Baton row leaves a backlog of queued jobs. After each
Baton row the benchmark waits until the `jobs` table has no queued or running job and reports
how long that took. Both servers run under uvicorn on free 127.0.0.1 ports; the load generator is
this process, one keep-alive HTTP/1.1 connection per concurrent worker over raw asyncio streams
(uvloop when importable). At each concurrency level bare is measured, then Baton, so both see the
same machine noise. Every answer is checked; afterwards `deliveries` must hold one row per 202
Baton gave, and no job may have failed.

Why it once printed about 60% where `wrk` (`../shared/bench/ingress-wrk.sh`, the reference for
the goal) measured 43% on SQLite: this process is the load generator and took 32-39% of a core,
slowing bare (about 5,000 req/s here against 6,700-9,600 under wrk), which is CPU-bound, more than
Baton, which waits on its commits; Baton logged at WARNING here but at its default INFO under wrk
(the per-delivery log line was about 7% of Baton's CPU under py-spy); the bare endpoints differ
(`bare_endpoint.py` answers a JSON body, the wrk one an empty 202); and the bodies take different
paths (this one queued after one parse, wrk's, without an installation, ignored). Baton now logs at
its default level here, as under wrk; the load generator still shares the CPUs, so quote `wrk`.

Run from the repository root:

    .venv/bin/python benchmarks/ingress.py                  # SQLite in a fresh data directory
    .venv/bin/python benchmarks/ingress.py --postgres       # a fresh database on 127.0.0.1:5432
    .venv/bin/python benchmarks/ingress.py --seconds 3 --concurrency 1,16

Exit status: 0 after a clean measurement (whether or not the goal holds), 1 when an answer was
wrong, a job failed or the database disagrees with the answers, 2 when setup failed.
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
EXPECTED_BODY = {"status": "queued"}
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
POSTGRES_ADMIN = f"host={HOST} port=5432 user=postgres dbname=postgres"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PAYLOAD_PATH = REPO_ROOT / "tests" / "payloads" / "issues.labeled.json"
BACKLOG_SQL = "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
FAILED_SQL = "SELECT count(*) FROM jobs WHERE state = 'failed'"

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """The command line: measured seconds per row, concurrency levels, database."""

    seconds: float
    concurrency: list[int]
    postgres: bool


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


def delivery_body() -> bytes:
    """The tests' `issues.labeled` payload, compact, exactly as it is sent and signed."""
    payload = json.loads(PAYLOAD_PATH.read_text())
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


def check_answer(status: int, body: bytes) -> str | None:
    """None for the expected `202 {"status": "queued"}`, else what was wrong."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if status == EXPECTED_STATUS and parsed == EXPECTED_BODY:
        return None
    return f"{status} {body[:200]!r}"


async def worker(port: int, template: RequestTemplate, window: Window) -> WorkerStats:
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
        problem = check_answer(status, body)
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
    latencies: list[float]
    queued: int
    errors: int
    error_samples: list[str]
    cpu: CpuUse
    drain: Drain | None = None

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        """Nearest-rank percentile of the measured latencies, in milliseconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
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
        *(worker(server.port, template, window) for _ in range(concurrency))
    )
    return Measurement(
        target=server.name,
        concurrency=concurrency,
        seconds=seconds,
        latencies=[latency for stats in results for latency in stats.latencies],
        queued=sum(stats.queued for stats in results),
        errors=sum(stats.errors for stats in results),
        error_samples=[sample for stats in results for sample in stats.error_samples][
            :MAX_ERROR_SAMPLES
        ],
        cpu=await cpu,
    )


def run_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def run_all(
    servers: tuple[Server, Server], database: Database, body: bytes, secret: str, args: Options
) -> list[Measurement]:
    """At each concurrency level measure bare, then Baton, then wait for Baton's job backlog."""
    bare, baton = servers
    measurements = []
    for concurrency in args.concurrency:
        for server in servers:
            time.sleep(PAUSE_SECONDS)
            template = RequestTemplate.signed(server.port, secret, body)
            result = run_loop(measure(server, template, concurrency, args.seconds))
            if server is baton:
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
        f"{result.target:<7} {result.concurrency:>5} {len(result.latencies):>9}"
        f" {result.rate:>9.0f} {result.percentile_ms(0.50):>8.2f}"
        f" {result.percentile_ms(0.99):>8.2f} {result.errors:>7} {result.cpu.client:>10.0f}%"
        f" {result.cpu.server:>10.0f}% {result.cpu.machine:>7.0f}%{drained}",
        flush=True,
    )


def print_preamble(args: Options, body: bytes, backend: str) -> None:
    print(
        f"Webhook ingress: signed issues.labeled deliveries ({PAYLOAD_PATH.name}, {len(body)}"
        ' bytes), a unique X-GitHub-Delivery each, answered 202 {"status": "queued"}.\n'
        "  bare:  verify the signature, answer.\n"
        "  Baton: verify the signature, parse the fields it needs, commit a delivery row and a"
        f" job row ({backend}{', synchronous=FULL' if backend == 'SQLite' else ''}), answer.\n"
        "Baton's executor defers running jobs while deliveries stream in (one claim a second at"
        " most), so each Baton row leaves a backlog; after it the benchmark waits until no job"
        " is queued or running: 'backlog' jobs at the row's end, 'drain s' to run them,"
        " 'drain jobs/s' = backlog / drain s.\n"
        "Baton logs at its default level (INFO)."
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
        print(f"{concurrency:>5} {ratio:>16.0%} {baton.percentile_ms(0.99):>13.2f}")


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
    p99 = baton.percentile_ms(0.99)
    verdict = "HOLDS" if ratio >= GOAL_RATIO and p99 < GOAL_P99_MS else "DOES NOT HOLD"
    print(f"\nGoal ({goal}): {verdict} (ratio {ratio:.0%}, p99 {p99:.2f} ms)")


def check_errors(measurements: list[Measurement]) -> bool:
    total = sum(m.errors for m in measurements)
    print(f"\nErrors (any answer other than 202 {json.dumps(EXPECTED_BODY)}): {total}")
    for m in measurements:
        for sample in m.error_samples:
            print(f"  {m.target} c={m.concurrency}: {sample}")
    return total == 0


def check_database(database: Database, measurements: list[Measurement]) -> bool:
    """One delivery row per 202 Baton gave, every backlog drained, no failed job."""
    answered = sum(m.queued for m in measurements if m.target == "baton")
    stored = database.count("SELECT count(*) FROM deliveries")
    failed = database.count(FAILED_SQL)
    drained = all(m.drain.finished for m in measurements if m.drain)
    print(
        f"Durability: Baton answered 202 queued {answered} times; rows in deliveries: {stored}"
        f" ({'ok' if stored == answered else 'MISMATCH'})"
    )
    print(
        f"Jobs: failed {failed} ({'ok' if failed == 0 else 'FAILED'});"
        f" every backlog drained within {DRAIN_LIMIT:.0f} s: {'yes' if drained else 'NO'}"
    )
    if failed:
        error = database.first("SELECT last_error FROM jobs WHERE state = 'failed' LIMIT 1")
        print(f"  a failed job's last error: {error}")
    return stored == answered and failed == 0


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
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")
    return Options(args.seconds, args.concurrency, args.postgres)


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
    body = delivery_body()
    servers: list[Server] = []
    try:
        servers.append(start_bare(workdir, secret))
        servers.append(start_baton(workdir, secret, database.url))
        print_preamble(args, body, database.backend)
        print(HEADER)
        measurements = run_all((servers[0], servers[1]), database, body, secret, args)
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
