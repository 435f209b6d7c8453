"""Installing the App creates each repository's trigger label (`label` in `.github/baton.yml`,
default `baton`) when it is missing: over HTTP, from the installation webhooks to the GitHub
double's label endpoints, as a job that is retried and safe to run again."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import sqlalchemy as sa

from bot.labels import LABEL_COLOR, LABEL_DESCRIPTION, LABEL_JOB
from tests.doubles.fixtures import INSTALLATION_ID
from tests.doubles.github import GitHubDouble, RecordedRequest
from tests.support import count_rows, payload, wait_for
from tests.world import World

SPROCKETS = "octo-org/sprockets"  # in the `installation_repositories.added` payload
GADGETS = "octo-org/gadgets"  # in the `installation.created` payload, with octo-org/widgets
LABELS = "/repos/{owner}/{repo}/labels"


def add_repository(world: World, full_name: str, repository_id: int, config: str = "") -> None:
    files = {"README.md": "# A repository\n"}
    if config:
        files[".github/baton.yml"] = config
    world.github.add_repository(full_name, INSTALLATION_ID, files, repository_id=repository_id)


def install(world: World, event: str, action: str) -> None:
    """GitHub telling Baton, with a new delivery id each time, that repositories were added."""
    body = copy.deepcopy(payload(f"{event}.{action}"))
    sent = world.github.send_webhook(world.url, event, body, delivery_id=str(uuid.uuid4()))
    assert (sent.status_code, sent.json()) == (202, {"status": "queued"})


def labels_of(github: GitHubDouble, full_name: str) -> dict[str, dict[str, Any]]:
    return {label["name"]: label for label in github.labels(full_name)}


def label_requests(github: GitHubDouble, full_name: str, method: str) -> list[RecordedRequest]:
    route = f"{method} {LABELS}" + ("/{name}" if method == "GET" else "")
    prefix = f"/repos/{full_name}/labels"
    return [r for r in github.requests if r.route == route and r.path.startswith(prefix)]


def wait_for_label_jobs(engine: sa.Engine, done: int) -> None:
    """Until `done` label jobs succeeded and none is left to run."""
    succeeded = f"name = '{LABEL_JOB}' AND state = 'succeeded'"
    waiting = f"name = '{LABEL_JOB}' AND state IN ('queued', 'running')"
    wait_for(
        lambda: (
            count_rows(engine, "jobs", succeeded) == done
            and count_rows(engine, "jobs", waiting) == 0
        ),
        timeout=30,
    )


def test_an_added_repository_gets_the_label_its_config_names(
    world: World, engine: sa.Engine
) -> None:
    add_repository(world, SPROCKETS, 745123987, config="label: ready-for-baton\n")

    install(world, "installation_repositories", "added")

    made = wait_for(lambda: labels_of(world.github, SPROCKETS).get("ready-for-baton"))
    assert (made["color"], made["description"]) == (LABEL_COLOR, LABEL_DESCRIPTION)
    [created] = label_requests(world.github, SPROCKETS, "POST")
    token = created.headers["authorization"].split()[-1]
    [issued] = [t for t in world.github.tokens_issued if t.token == token]
    assert dict(issued.permissions) == {"contents": "read", "issues": "write", "metadata": "read"}
    assert issued.repository_ids == frozenset({745123987})


def test_a_new_installation_labels_only_repositories_that_lack_the_label(
    world: World, engine: sa.Engine
) -> None:
    add_repository(world, GADGETS, 698765432)
    widgets_labels = labels_of(world.github, "octo-org/widgets")
    assert "baton" in widgets_labels  # its issue 7 carries it already

    install(world, "installation", "created")
    wait_for_label_jobs(engine, done=2)

    assert labels_of(world.github, GADGETS)["baton"]["color"] == LABEL_COLOR
    assert labels_of(world.github, "octo-org/widgets") == widgets_labels
    assert label_requests(world.github, "octo-org/widgets", "POST") == []
    assert len(label_requests(world.github, "octo-org/widgets", "GET")) == 1


def test_adding_a_repository_again_makes_no_second_label(world: World, engine: sa.Engine) -> None:
    add_repository(world, SPROCKETS, 745123987)
    install(world, "installation_repositories", "added")
    wait_for_label_jobs(engine, done=1)

    install(world, "installation_repositories", "added")
    wait_for_label_jobs(engine, done=2)

    assert list(labels_of(world.github, SPROCKETS)) == ["baton"]
    assert len(label_requests(world.github, SPROCKETS, "POST")) == 1


def test_a_label_whose_answer_was_lost_is_found_on_the_next_attempt(
    world: World, engine: sa.Engine
) -> None:
    add_repository(world, SPROCKETS, 745123987)
    # GitHub makes the label, then its front end answers 502: the job fails and runs again.
    world.github.fail_next("POST", "/repos/octo-org/sprockets/labels", 502, after_route=True)

    install(world, "installation_repositories", "added")
    wait_for_label_jobs(engine, done=1)

    assert list(labels_of(world.github, SPROCKETS)) == ["baton"]
    assert [r.status for r in label_requests(world.github, SPROCKETS, "POST")] == [502]
    assert [r.status for r in label_requests(world.github, SPROCKETS, "GET")] == [404, 200]
    failed_once = f"name = '{LABEL_JOB}' AND attempts = 2"
    assert count_rows(engine, "jobs", failed_once) == 1


def test_a_label_made_meanwhile_is_taken_as_it_is(world: World, engine: sa.Engine) -> None:
    add_repository(world, SPROCKETS, 745123987)
    world.github.add_issue(SPROCKETS, 1, "Made by a person", "", "alice", ["baton"])
    # A person made the label between Baton's look and its POST: GitHub answers 422.
    world.github.fail_next("GET", "/repos/octo-org/sprockets/labels/baton", 404)

    install(world, "installation_repositories", "added")
    wait_for_label_jobs(engine, done=1)

    assert [r.status for r in label_requests(world.github, SPROCKETS, "POST")] == [422]
    assert labels_of(world.github, SPROCKETS)["baton"]["description"] is None
    assert count_rows(engine, "jobs", f"name = '{LABEL_JOB}' AND attempts = 1") == 1
