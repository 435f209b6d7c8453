"""A review's comments are answered once each, even when Baton stops between posting a reply
and recording it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from bot import revisions
from tests.doubles.fixtures import REPOSITORY
from tests.support import count_rows
from tests.world import World, approved, review_tasks, submit_review, wait_explained, wait_for_run


def test_a_reply_posted_just_before_baton_stopped_is_not_posted_again(
    world: World, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    comment_ids: list[int] = []
    approved(world, engine, review_tasks(comment_ids))
    wait_for_run(world, engine, "pr_open")

    # The first reply is posted, then the job stops before recording it, as a killed process
    # would; the executor runs the job again.
    stopped: list[int] = []
    record = revisions._replied

    def stop_once(run_id: str, comment_id: int, text: str) -> Callable[[Session], bool]:
        if not stopped:
            stopped.append(comment_id)
            raise RuntimeError("stopped between posting a reply and recording it")
        return record(run_id, comment_id, text)

    monkeypatch.setattr(revisions, "_replied", stop_once)
    (pull,) = world.github.pulls(REPOSITORY)
    submit_review(world, pull["number"], ["Add a dial.", "And a knob."], comment_ids)

    replied = "kind = 'review.replied'"
    wait_explained(engine, lambda: count_rows(engine, "timeline_events", replied) == 2, "reply")
    assert stopped == comment_ids[:1]
    replies: list[dict[str, Any]] = world.github.review_comment_replies(REPOSITORY, pull["number"])
    assert sorted(reply["in_reply_to_id"] for reply in replies) == sorted(comment_ids)
    assert all("Addressed in " in reply["body"] for reply in replies)
    wait_for_run(world, engine, "pr_open")
