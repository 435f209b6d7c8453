"""The secret check every change passes before GitHub or a reviewer sees it: the lines a commit
adds to the run branch, and its message, scanned by `bot.secrets`. Lines a merge takes from the
default branch are on GitHub already and are not counted as the change's own."""

from __future__ import annotations

import asyncio

from bot.git.mirror import Mirror
from bot.secrets import COMMIT_MESSAGE, SecretFinding, added_lines, find_in_lines, lines_of

# Larger than any change a review reads; a change past it is not published unchecked.
MAX_CHECKED_BYTES = 64 * 1024 * 1024


class SecretsFound(Exception):
    """A change holds secrets; `findings` say where and of what kind, never what."""

    def __init__(self, findings: list[SecretFinding]) -> None:
        super().__init__("; ".join(finding.describe() for finding in findings))
        self.findings = findings


async def secrets_added(
    mirror: Mirror, base: str, head: str, theirs: str | None = None
) -> list[SecretFinding]:
    """The secrets commit `head` adds to `base` (in its files or its message), leaving out what
    the default branch's commit `theirs` already holds when `head` brings it in by a merge.
    GitError or ScanFailed when the check cannot be made: then nothing may go out."""
    lines = added_lines(await mirror.added_text(base, head, MAX_CHECKED_BYTES))
    if theirs is not None:
        theirs_lacks = {
            (path, text)
            for path, _, text in added_lines(
                await mirror.added_text(theirs, head, MAX_CHECKED_BYTES)
            )
        }
        lines = [line for line in lines if (line[0], line[2]) in theirs_lacks]
    _, _, message = await mirror.commit_fields(head)
    everything = [*lines, *lines_of(COMMIT_MESSAGE, message)]
    return await asyncio.to_thread(find_in_lines, everything)


async def check_no_secrets(mirror: Mirror, base: str, head: str, theirs: str | None = None) -> None:
    """Raise SecretsFound when `secrets_added` finds any."""
    findings = await secrets_added(mirror, base, head, theirs)
    if findings:
        raise SecretsFound(findings)
