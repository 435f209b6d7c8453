"""A loopback GitHub: REST laid out as GitHub Enterprise Server lays it out (`/api/v3`), git over
smart HTTP, the App Manifest flow and signed webhook deliveries, all from in-memory state.

Answers are GitHub's wire format, so githubkit's generated models parse them, and auth follows
GitHub's rules: App routes need the App's JWT, everything else an unexpired installation token
whose installation holds the repository. A token asked for some repositories sees only those (any
other answers 404), and one asked for some permissions is refused what needs others (403), over
REST and git alike. Branches and file contents live only in bare repositories under `root`, read
with `git`, so a push through the git server is what the REST routes see next.

The modules, by concern: `state` (constants and the records the double keeps), `git_data`
(commits, trees and diffs read with git), `rest` (answers, errors, route declarations, paging),
`app` (the App, installations, tokens and the JWT), `manifest` (the App Manifest flow),
`repositories`, `issues` (with comments, labels, reactions), `pulls` (with reviews), `checks`
(each its REST views and routes), `server` (the ASGI app and router), `webhooks` (signed
deliveries) and `double` (`GitHubDouble`, which tests hold).
"""

from tests.doubles.github.double import GitHubDouble
from tests.doubles.github.rest import APP_AUTH, INSTALLATION_AUTH, NO_AUTH, Handler, HandlerT, Needs
from tests.doubles.github.state import (
    ACCESS_LEVELS,
    API_PREFIX,
    API_VERSION,
    APP_EVENTS,
    APP_PERMISSIONS,
    CHECK_CONCLUSIONS,
    CHECK_STATUSES,
    DOCS,
    FOLDED_PERMISSION,
    JWT_CLOCK_SKEW,
    JWT_MAX_LIFETIME,
    KNOWN_ACCOUNTS,
    NOT_ACCESSIBLE,
    NOT_GRANTED,
    NOT_IN_INSTALLATION,
    RATE_LIMIT,
    REACTIONS,
    REVIEW_STATES,
    ROLES,
    SECONDARY_RATE_LIMIT,
    IssuedToken,
    RecordedRequest,
)

__all__ = [
    "ACCESS_LEVELS",
    "API_PREFIX",
    "API_VERSION",
    "APP_AUTH",
    "APP_EVENTS",
    "APP_PERMISSIONS",
    "CHECK_CONCLUSIONS",
    "CHECK_STATUSES",
    "DOCS",
    "FOLDED_PERMISSION",
    "INSTALLATION_AUTH",
    "JWT_CLOCK_SKEW",
    "JWT_MAX_LIFETIME",
    "KNOWN_ACCOUNTS",
    "NOT_ACCESSIBLE",
    "NOT_GRANTED",
    "NOT_IN_INSTALLATION",
    "NO_AUTH",
    "RATE_LIMIT",
    "REACTIONS",
    "REVIEW_STATES",
    "ROLES",
    "SECONDARY_RATE_LIMIT",
    "GitHubDouble",
    "Handler",
    "HandlerT",
    "IssuedToken",
    "Needs",
    "RecordedRequest",
]
