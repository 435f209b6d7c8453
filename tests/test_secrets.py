"""The secret scanner: which added lines hold a secret, and that what it says of one never
holds any of it. The secrets are made up here at run time, so this file holds none."""

from __future__ import annotations

import pytest

from bot.secrets import (
    SecretFinding,
    describe_findings,
    find_in_diff,
    find_in_lines,
    lines_of,
    redact,
)

# Fake, but in the real formats; assembled so that no scanner flags this file itself.
AWS_KEY_ID = "AKIA" + "Q7WZ3XKD5MRT2PLV"
AWS_SECRET = "Wx3k9PqLmZt7Rv2N" + "bY8cJd5FhGs4Ka6Ee1UoIi0T"
GITHUB_TOKEN = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
KEY_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw"
PRIVATE_KEY = "\n".join(
    ["-----BEGIN RSA " + "PRIVATE KEY-----", KEY_BODY, "-----END RSA " + "PRIVATE KEY-----"]
)
ORDINARY_CODE = '''\
import hashlib
import os

API_URL = "https://api.example.com/v1"
DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def token() -> str:
    """The token from the environment, never from a file."""
    return os.environ["SERVICE_TOKEN"]


def fingerprint(data: bytes) -> str:
    password = os.environ.get("PASSWORD", "")
    return hashlib.sha256(data + password.encode()).hexdigest()
'''


def added_file(path: str, text: str) -> str:
    """A unified diff that adds `path` holding `text`, as git prints one."""
    lines = text.split("\n")
    body = "".join(f"+{line}\n" for line in lines)
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..1111111\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n{body}"
    )


def shares_a_piece(text: str, secret: str, width: int = 4) -> bool:
    return any(secret[start : start + width] in text for start in range(len(secret) - width + 1))


def test_an_aws_key_and_its_secret_are_found_with_file_and_line() -> None:
    text = f'import os\n\nKEY_ID = "{AWS_KEY_ID}"\naws_secret_access_key = "{AWS_SECRET}"\n'

    findings = find_in_diff(added_file("src/settings.py", text))

    assert findings == [
        SecretFinding("src/settings.py", 3, "AWS Access Key"),
        SecretFinding("src/settings.py", 4, "AWS Access Key"),
    ]


def test_a_private_key_block_is_found() -> None:
    findings = find_in_diff(added_file("deploy/id_rsa", PRIVATE_KEY))

    assert findings == [SecretFinding("deploy/id_rsa", 1, "Private Key")]


def test_a_github_token_is_found() -> None:
    findings = find_in_lines(lines_of("ci/publish.sh", f"export TOKEN={GITHUB_TOKEN}\n"))

    assert findings == [SecretFinding("ci/publish.sh", 1, "GitHub Token")]


def test_ordinary_code_has_no_finding() -> None:
    assert find_in_diff(added_file("src/service.py", ORDINARY_CODE)) == []


def test_only_added_lines_count() -> None:
    diff = (
        "diff --git a/src/settings.py b/src/settings.py\nindex 1111111..2222222 100644\n"
        "--- a/src/settings.py\n+++ b/src/settings.py\n@@ -2 +2 @@\n"
        f'-KEY_ID = "{AWS_KEY_ID}"\n+KEY_ID = os.environ["KEY_ID"]\n'
    )

    assert find_in_diff(diff) == []


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("src/keys.py", f'KEY = "{AWS_KEY_ID}"  # pragma: allowlist secret'),
        ("poetry.lock", f'KEY = "{AWS_KEY_ID}"'),
        ("docs/swagger/keys.yaml", f"key: {AWS_KEY_ID}"),
    ],
    ids=["allowlist-pragma", "lock-file-name", "swagger-path"],
)
def test_what_a_worker_writes_cannot_turn_the_check_off(path: str, line: str) -> None:
    assert find_in_diff(added_file(path, line)) == [SecretFinding(path, 1, "AWS Access Key")]


@pytest.mark.parametrize(
    ("text", "secrets"),
    [
        (f'KEY_ID = "{AWS_KEY_ID}"\naws_secret_access_key = "{AWS_SECRET}"', [AWS_SECRET]),
        (PRIVATE_KEY, [KEY_BODY]),
        (f"TOKEN={GITHUB_TOKEN}", [GITHUB_TOKEN]),
    ],
    ids=["aws", "private-key", "github-token"],
)
def test_a_findings_description_holds_no_part_of_the_secret(text: str, secrets: list[str]) -> None:
    findings = find_in_diff(added_file("src/leak.py", text))
    told = describe_findings(findings)

    assert findings
    for secret in [*secrets, AWS_KEY_ID[4:]]:
        assert not shares_a_piece(told, secret)
        assert not any(shares_a_piece(found.describe(), secret) for found in findings)
    assert "src/leak.py line 1:" in told


def test_redact_keeps_the_rest_and_drops_every_secret() -> None:
    text = f'a = 1\nKEY_ID = "{AWS_KEY_ID}"\n{PRIVATE_KEY}\nTOKEN={GITHUB_TOKEN}\nb = 2'

    kept = redact(text)

    assert kept.splitlines()[0] == "a = 1"
    assert kept.splitlines()[-1] == "b = 2"
    for secret in (AWS_KEY_ID, KEY_BODY, GITHUB_TOKEN):
        assert not shares_a_piece(kept, secret[4:], width=8)
    assert "[a line holding a secret (AWS Access Key) was removed]" in kept
    assert redact(ORDINARY_CODE) == ORDINARY_CODE
