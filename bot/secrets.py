"""Secrets in what a worker wrote, found by detect-secrets before it reaches GitHub or a model.

A finding names the file, the line and the kind of secret, never the secret: it is what a worker
is told and what the timeline keeps. `redact` takes the lines holding secrets out of text Baton
stores (a worker's tool calls), so the database never holds one either.

Worker output is hostile, so nothing it writes can turn the check off: the allowlist pragma
(`pragma: allowlist secret`) and the filters that skip files by name (lock files, swagger) are
off. Only detectors of known secret formats run; the entropy and keyword ones would stop
ordinary code.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from detect_secrets.core.scan import scan_line
from detect_secrets.settings import transient_settings
from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchSet

PLUGINS = (
    "ArtifactoryDetector",
    "AWSKeyDetector",
    "AzureStorageKeyDetector",
    "BasicAuthDetector",
    "CloudantDetector",
    "DiscordBotTokenDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "IbmCloudIamDetector",
    "IbmCosHmacDetector",
    "JwtTokenDetector",
    "MailchimpDetector",
    "NpmDetector",
    "OpenAIDetector",
    "PrivateKeyDetector",
    "PypiTokenDetector",
    "SendGridDetector",
    "SlackDetector",
    "SoftlayerDetector",
    "SquareOAuthDetector",
    "StripeDetector",
    "TelegramBotTokenDetector",
    "TwilioKeyDetector",
)
# Filters a worker could satisfy on purpose: a pragma comment, or a file named like a lock file.
EVADABLE_FILTERS = (
    "detect_secrets.filters.allowlist.is_line_allowlisted",
    "detect_secrets.filters.common.is_invalid_file",
    "detect_secrets.filters.heuristic.is_lock_file",
    "detect_secrets.filters.heuristic.is_swagger_file",
    "detect_secrets.filters.heuristic.is_non_text_file",
)
SETTINGS = {"plugins_used": [{"name": name} for name in PLUGINS]}
COMMIT_MESSAGE = "(commit message)"
REDACTED = "[a line holding a secret ({kind}) was removed]"
# A private key's body lines look like any base64; the whole block goes.
_KEY_LABEL = r"[A-Z0-9 ]*PRIVATE KEY[A-Z0-9 ]*-----"
PRIVATE_KEY_BLOCK = re.compile(rf"-----BEGIN{_KEY_LABEL}.*?(-----END{_KEY_LABEL}|\Z)", re.DOTALL)
# detect-secrets keeps its settings in a global: one scan at a time in this process.
_SETTINGS_LOCK = threading.Lock()


class ScanFailed(Exception):
    """The scanner could not read or scan a change: nothing of it may be pushed."""


@dataclass(frozen=True)
class SecretFinding:
    """A secret in a change: where it is and what kind, never its value."""

    path: str
    line: int
    kind: str

    def describe(self) -> str:
        return f"{self.path} line {self.line}: {self.kind}"


def find_in_diff(diff: str) -> list[SecretFinding]:
    """The secrets on the lines a unified diff adds (line numbers in the new file).
    ScanFailed when the diff cannot be read or the scanner cannot run."""
    return find_in_lines(added_lines(diff))


def added_lines(diff: str) -> list[tuple[str, int, str]]:
    """Each line a unified diff adds: its file, its number in the new file and its text."""
    try:
        patches = PatchSet.from_string(diff)
    except (UnidiffParseError, ValueError) as error:
        raise ScanFailed(f"the change could not be read for secrets: {error}") from None
    return [
        (patch.path, line.target_line_no or 0, line.value.rstrip("\r\n"))
        for patch in patches
        for hunk in patch
        for line in hunk
        if line.is_added
    ]


def find_in_lines(lines: Iterable[tuple[str, int, str]]) -> list[SecretFinding]:
    """The secrets on the given `(path, line number, text)` lines, one finding per line and kind."""
    found: dict[SecretFinding, None] = {}
    with _scanning() as scan:
        for path, number, text in lines:
            for kind in scan(text):
                found[SecretFinding(path, number, kind)] = None
    return list(found)


def describe_findings(findings: Iterable[SecretFinding]) -> str:
    """What a worker is told: where each secret is and its kind, and what to do instead."""
    listed = "\n".join(f"- {finding.describe()}" for finding in findings)
    return (
        "Your change holds what looks like a secret, so it was not published:\n"
        f"{listed}\n"
        "Remove it from the files (and from your summary); read secrets from the environment or "
        "use an obviously fake placeholder in tests."
    )


def redact(text: str) -> str:
    """`text` with each line holding a secret replaced by a note of its kind, and each private
    key block removed whole."""
    text = PRIVATE_KEY_BLOCK.sub(REDACTED.format(kind="Private Key"), text)
    lines = text.split("\n")
    with _scanning() as scan:
        for index, line in enumerate(lines):
            kinds = scan(line)
            if kinds:
                lines[index] = REDACTED.format(kind=", ".join(sorted(kinds)))
    return "\n".join(lines)


@contextmanager
def _scanning() -> Iterator[Callable[[str], set[str]]]:
    """detect-secrets with Baton's plugins and filters for the length of a `with` block: a
    function from one line to the kinds of secret on it. ScanFailed when it cannot run."""
    with _SETTINGS_LOCK, ExitStack() as stack:
        try:
            settings = stack.enter_context(transient_settings(SETTINGS))
            settings.disable_filters(*EVADABLE_FILTERS)
        except Exception as error:
            raise ScanFailed(f"the secret scanner could not start: {error}") from error
        yield _kinds_on


def _kinds_on(line: str) -> set[str]:
    try:  # scan_line reads the filters afresh, so those disabled stay off
        return {secret.type for secret in scan_line(line)}
    except Exception as error:  # a scanner that breaks on a line must not let it through
        # Its type only: the error's text might quote the line.
        raise ScanFailed(f"the secret scanner failed ({type(error).__name__})") from None


def redact_json(value: Any) -> Any:
    """A JSON value with `redact` applied to each string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_json(item) for item in value]
    if isinstance(value, dict):
        return {key: redact_json(item) for key, item in value.items()}
    return value


def lines_of(path: str, text: str) -> Iterator[tuple[str, int, str]]:
    """Every line of `text` as `(path, number, text)`, for `find_in_lines`."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield path, number, line
