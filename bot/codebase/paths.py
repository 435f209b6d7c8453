"""Repository-relative paths made safe: nothing a model names may lead outside the checkout."""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath

GIT_DIRECTORY = ".git"


class PathRefused(ValueError):
    """A path a model gave cannot be used; the message says why and what to give instead."""


def resolve_inside(root: Path, path: str) -> Path:
    """The absolute, symlink-free location of `path` inside `root`, or `PathRefused`.

    `path` is relative to `root` (`./a` and a trailing slash are fine, `.` is `root` itself). It
    is refused when empty, absolute, holding a NUL or a `..` segment, naming `.git` or anything
    under it, or when its resolved location (symlinks followed at every level, the file need not
    exist) is outside `root` or inside its `.git`. The result stays inside `root`, yet it may
    have been reached through a link: what shows a file's content follows no link at all
    (`bot.codebase.workcopy`), and the edit tools refuse a link on the way.
    """
    _check_spelling(path)
    real_root = root.resolve()
    try:
        resolved = (real_root / path).resolve()
    except (RuntimeError, OSError) as error:  # a symlink loop (RuntimeError before 3.13)
        raise PathRefused(f"`{path}` cannot be resolved ({error}); name a real file") from None
    if not resolved.is_relative_to(real_root):
        raise PathRefused(
            f"`{path}` leads outside the repository through a symlink; "
            "name a file inside the repository instead"
        )
    if _names_git_directory(resolved.relative_to(real_root).parts):
        raise PathRefused(f"`{path}` leads into `.git` through a symlink; git's data is off limits")
    return resolved


def clean_relative(path: str) -> str:
    """`path` as a plain POSIX path from the repository root (`.` for the root itself), or
    `PathRefused` for the spellings `resolve_inside` refuses. Nothing on disk is looked at."""
    _check_spelling(path)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return "/".join(parts) or "."


def relative_inside(root: Path, path: str) -> str:
    """`path` resolved as by `resolve_inside`, as a POSIX path relative to `root` (`.` for it)."""
    resolved = resolve_inside(root, path)
    return resolved.relative_to(root.resolve()).as_posix()


def _check_spelling(path: str) -> None:
    if not path:
        raise PathRefused(
            "the path is empty; give a path relative to the repository root, such as `src/app.py`"
        )
    if "\0" in path:
        raise PathRefused(f"`{path!r}` holds a NUL character; give a plain relative path")
    if PurePosixPath(path).is_absolute():
        raise PathRefused(
            f"`{path}` is absolute; paths are relative to the repository root, such as `src/app.py`"
        )
    parts = path.split("/")
    if ".." in parts:
        plain = posixpath.normpath(path)
        if plain == ".." or plain.startswith("../"):
            raise PathRefused(f"`{path}` leaves the repository; paths are relative to its root")
        raise PathRefused(f"`{path}` holds `..`; write it without, as `{plain}`")
    if _names_git_directory(parts):
        raise PathRefused(f"`{path}` is inside `.git`; git's data is off limits")


def _names_git_directory(parts: tuple[str, ...] | list[str]) -> bool:
    # Any segment, and any case: nested repositories, and case-insensitive file systems.
    return any(part.casefold() == GIT_DIRECTORY for part in parts)
