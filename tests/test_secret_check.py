"""No secret is ever pushed, end to end over HTTP: a worker that writes a cloud key into a file
is sent back with where it is and what kind, never the key; nothing of it reaches GitHub, a
later prompt, a log line or the database; the fixed attempt becomes the draft pull request.
And the check itself on real git commits: what a change adds, its message, a merge's own lines."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.git import GitError, Mirror, Mirrors
from bot.runs.secret_check import secrets_added
from bot.secrets import COMMIT_MESSAGE, SecretFinding
from tests.doubles.fixtures import REPOSITORY
from tests.doubles.models import ModelReply, RecordedCall
from tests.support import git
from tests.world import (
    ACCEPT,
    BRANCH,
    FILES,
    World,
    approved,
    attempts,
    branch_log,
    plan,
    submit,
    task,
    tool,
    wait_explained,
    wait_for_run,
    who,
)

# Made up, in the real formats; assembled so that no scanner flags this file itself.
KEY_ID = "AKIA" + "R4ND0MK3YF0RT3ST"
SECRET_KEY = "u8Jk2LmN4pQ6rS8tV0wX" + "2yZ4aB6cD8eF0gH2iJ4k"
PIECES = (KEY_ID, KEY_ID[4:], SECRET_KEY, SECRET_KEY[:20], SECRET_KEY[20:])
LEAKY = f'KEY_ID = "{KEY_ID}"\naws_secret_access_key = "{SECRET_KEY}"\n'
FIXED = 'import os\n\nKEY_ID = os.environ["KEY_ID"]\n'
TOLD = "looks like a secret"
FOUND = f"{FILES['T1']} line 1: AWS Access Key"
ONE_TASK = plan(task("T1", [], [FILES["T1"]]))


def holds_a_secret(text: str) -> bool:
    return any(piece in text for piece in PIECES)


def first_prompt(call: RecordedCall) -> str:
    return str(call.json["messages"][0]["content"][0]["text"])


def leaking_until_told(call: RecordedCall) -> ModelReply:
    """A worker that writes the key, and once told of the finding reads it from the
    environment instead."""
    role, _ = who(call)
    if role == "planner":
        return submit(ONE_TASK)
    if role == "reviewer":
        return ACCEPT
    if len(call.json["messages"]) > 1:
        return tool("finish", summary="Wrote the settings.", confidence=0.9)
    content = FIXED if TOLD in first_prompt(call) else LEAKY
    return tool("write_file", path=FILES["T1"], content=content)


def always_leaking(call: RecordedCall) -> ModelReply:
    if who(call)[0] == "worker" and len(call.json["messages"]) == 1:
        return tool("write_file", path=FILES["T1"], content=LEAKY)
    return leaking_until_told(call)


def sent_to_github(world: World) -> list[str]:
    """Every request body GitHub got (blobs decoded) and every object in its repository."""
    texts = []
    for request in world.github.requests:
        texts.append(json.dumps(request.json))
        if isinstance(request.json, dict) and request.json.get("encoding") == "base64":
            texts.append(base64.b64decode(request.json["content"]).decode("latin-1"))
    git_dir = world.github.root / f"{REPOSITORY}.git"
    objects = subprocess.run(
        ["git", "--git-dir", str(git_dir), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        check=True,
    )
    texts.append(objects.stdout.decode("latin-1"))
    texts += [comment["body"] for comment in world.github.issue_comments(REPOSITORY, 7)]
    texts += [json.dumps(pull) for pull in world.github.pulls(REPOSITORY)]
    texts += [json.dumps(check) for check in world.github.check_runs(REPOSITORY)]
    return texts


def database_text(engine: sa.Engine) -> list[str]:
    """Every value of every table, as text."""
    texts = []
    tables = sa.inspect(engine).get_table_names()
    with engine.connect() as connection:
        for table in tables:
            for row in connection.execute(sa.text(f'SELECT * FROM "{table}"')):
                texts += [_as_text(value) for value in row]
    return texts


def _as_text(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("latin-1")
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)


def test_a_key_a_worker_wrote_is_sent_back_and_never_leaves(
    world: World, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")  # Baton's own lines, all of them
    approved(world, engine, leaking_until_told)
    wait_for_run(world, engine, "pr_open")

    assert [(row.number, row.status, row.review_verdict) for row in attempts(engine)] == [
        (1, "retried", "revise"),
        (2, "succeeded", "accept"),
    ]
    assert branch_log(world.github) == ["T1: Step T1"]
    calls = world.models.calls
    told = next(i for i, call in enumerate(calls) if TOLD in first_prompt(call))
    assert FOUND in first_prompt(calls[told])
    # Only the leaking worker's own turns held the key; no review and no later prompt did.
    leaking = [i for i, call in enumerate(calls) if holds_a_secret(call.body.decode())]
    assert leaking
    assert max(leaking) < told
    assert all(who(calls[i]) == ("worker", "T1") for i in leaking)
    assert [who(call)[0] for call in calls].count("reviewer") == 1
    assert not any(holds_a_secret(text) for text in sent_to_github(world))
    assert not any(holds_a_secret(text) for text in database_text(engine))
    assert not any(holds_a_secret(record.getMessage()) for record in caplog.records)
    assert any(FOUND in text for text in database_text(engine))  # where, kept for people


def test_a_worker_that_keeps_writing_a_key_fails_after_its_review_rounds(
    world: World, engine: sa.Engine
) -> None:
    approved(world, engine, always_leaking, "review_rounds: 2\n")
    wait_explained(
        engine,
        lambda: [row.status for row in attempts(engine)] == ["retried", "failed"],
        "fail T1 after two rounds",
    )

    assert world.github.branch_sha(REPOSITORY, BRANCH) is None
    assert [who(call)[0] for call in world.models.calls].count("reviewer") == 0
    assert not any(holds_a_secret(text) for text in sent_to_github(world))
    assert not any(holds_a_secret(text) for text in database_text(engine))


def test_the_integration_stops_a_key_an_attempt_let_through(
    world: World, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last door: were the attempt's own check to miss a key, the integration's finds it
    before GitHub gets a byte, and the task goes back to its worker as a round of review."""

    async def missed(*args: object) -> list[SecretFinding]:
        return []

    monkeypatch.setattr("bot.runs.attempt.secrets_added", missed)
    approved(world, engine, leaking_until_told)
    wait_for_run(world, engine, "pr_open")

    assert [(row.number, row.status, row.review_verdict) for row in attempts(engine)] == [
        (1, "retried", "accept"),
        (2, "succeeded", "accept"),
    ]
    assert branch_log(world.github) == ["T1: Step T1"]
    told = [call for call in world.models.calls if TOLD in first_prompt(call)]
    assert told
    assert FOUND in first_prompt(told[0])
    assert not any(holds_a_secret(text) for text in sent_to_github(world))
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM commit_bundles")).scalar() == 0


async def no_token() -> str:
    raise AssertionError("the check never reaches the network")


def local_mirror(tmp_path: Path) -> Mirror:
    """A mirror whose repository is made here by hand, commit by commit."""
    mirror = Mirrors(tmp_path / "data", "https://github.invalid").mirror(REPOSITORY, no_token)
    mirror.path.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=main", cwd=mirror.path)
    return mirror


def committed(mirror: Mirror, files: dict[str, str], message: str = "A change") -> str:
    for name, content in files.items():
        (mirror.path / name).write_text(content)
    git("add", "--all", cwd=mirror.path)
    git("commit", "--quiet", "-m", message, cwd=mirror.path)
    return git("rev-parse", "HEAD", cwd=mirror.path)


async def test_the_check_counts_what_a_commit_adds_and_its_message(tmp_path: Path) -> None:
    mirror = local_mirror(tmp_path)
    base = committed(mirror, {"settings.py": f'OLD = "{KEY_ID}"\nA = 1\n'})
    removed = committed(mirror, {"settings.py": "A = 1\n"})
    added = committed(mirror, {"settings.py": f"A = 1\n{LEAKY}"}, f"Add keys\n\nKEY={KEY_ID}")

    assert await secrets_added(mirror, base, removed) == []  # a key taken out is no finding
    assert await secrets_added(mirror, removed, added) == [
        SecretFinding("settings.py", 2, "AWS Access Key"),
        SecretFinding("settings.py", 3, "AWS Access Key"),
        SecretFinding(COMMIT_MESSAGE, 3, "AWS Access Key"),
    ]


async def test_a_merge_is_held_to_its_own_lines_not_the_default_branchs(tmp_path: Path) -> None:
    mirror = local_mirror(tmp_path)
    base = committed(mirror, {"app.py": "A = 1\n", "keys.py": "\n"})
    # A person put a key on the default branch: it is on GitHub already.
    theirs = committed(mirror, {"keys.py": f'LEGACY = "{KEY_ID}"\n'})
    git("checkout", "--quiet", "-b", "run", base, cwd=mirror.path)
    ours = committed(mirror, {"app.py": "A = 2\n"})
    git("merge", "--quiet", "--no-commit", theirs, cwd=mirror.path)
    resolved = committed(mirror, {"app.py": f"A = 2\n{LEAKY}"}, "Merge")

    own = [
        SecretFinding("app.py", 2, "AWS Access Key"),
        SecretFinding("app.py", 3, "AWS Access Key"),
    ]
    assert await secrets_added(mirror, ours, resolved) == [
        *own,
        SecretFinding("keys.py", 1, "AWS Access Key"),
    ]
    assert await secrets_added(mirror, ours, resolved, theirs) == own


async def test_a_change_the_check_cannot_read_is_not_passed(tmp_path: Path) -> None:
    mirror = local_mirror(tmp_path)
    base = committed(mirror, {"app.py": "A = 1\n"})

    with pytest.raises(GitError):
        await secrets_added(mirror, base, "0" * 40)
