"""The outside world a job talks to: GitHub, git mirrors and models, made once per process."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from bot.git import Mirror, Mirrors
from bot.github.client import GitHubApp, GitHubTuning
from bot.github.repo import RepoClient
from bot.github.scopes import TokenScope
from bot.llm.budget import InFlight
from bot.llm.pricing import PriceTable
from bot.llm.registry import make_model
from bot.llm.types import Model
from bot.settings import Settings


class NotConfigured(RuntimeError):
    """A job needs GitHub App credentials that this process does not have."""


@dataclass
class Integrations:
    """GitHub (None in setup mode), the repository mirrors, how models are made, and what
    this process's model calls under way may cost (for the daily cap, over all runs)."""

    github: GitHubApp | None
    mirrors: Mirrors
    prices: PriceTable
    model_factory: Callable[[str], Model]
    spending: InFlight = field(default_factory=InFlight)
    # Draws which runs one agent works for comparison; tests seed it to know the draws.
    chance: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_settings(
        cls, settings: Settings, github_tuning: GitHubTuning | None = None
    ) -> Integrations:
        github = GitHubApp(settings, github_tuning) if settings.has_app_credentials else None
        return cls(
            github=github,
            mirrors=Mirrors(settings.data_dir, settings.github_url),
            prices=PriceTable.from_settings(settings),
            model_factory=partial(make_model, settings=settings),
        )

    def require_github(self) -> GitHubApp:
        if self.github is None:
            raise NotConfigured(
                "no GitHub App credentials: set BATON_GITHUB_APP_ID and BATON_GITHUB_PRIVATE_KEY"
            )
        return self.github

    def repo_client(self, scope: TokenScope) -> RepoClient:
        """`scope.repository` on GitHub, through a token for that repository alone that holds
        only `scope.permissions`."""
        return RepoClient(self.require_github().client(scope), scope.repository)

    def mirror(self, scope: TokenScope) -> Mirror:
        """The mirror of `scope.repository`, fetched and pushed with the scope's token. No I/O."""
        github = self.require_github()
        return self.mirrors.mirror(scope.repository, lambda: github.token(scope))
