"""The book's public repository: one setting, written everywhere it is used.

The setting is the ``repository:`` block of ``_config.yml`` (``url:`` and ``branch:``): Jupyter
Book reads it there for the repository button and the Colab launch buttons
(``https://colab.research.google.com/github/OWNER/NAME/blob/BRANCH/notebooks/NN.ipynb``), so that
is the one place to change. Everything else that names the repository is a copy of it:

* the first code cell of every notebook: ``%pip install "sat_core[...] @ git+URL@BRANCH"``,
  in ``notebooks/`` and in the committed student copies ``student/notebooks/`` (whose Colab
  buttons, in the student edition of the site, follow ``_config.yml`` like the book's);
* ``notebooks/TEMPLATE.md`` and the prose pages (``book/*.md``) that quote that line;
* ``README.md``: the Colab badge, the link to the repository and to the published site
  (``https://OWNER.github.io/NAME/``).

``python -m sat_core.book set-repository URL [--branch B]`` rewrites the setting and every copy
(only the repository's part of each line changes; notebooks keep their exact JSON layout), and
:func:`disagreements`, which ``tests/test_repository.py`` runs on the tree, lists every copy that
names another repository or branch. A link to another GitHub project on those pages must be listed
in :data:`THIRD_PARTY`, or the test reads it as a stale copy; ``OWNER/NAME``
(:data:`PLACEHOLDER`) stands for "your repository" in instructions and is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from sat_core.errors import UserError

CONFIG = "_config.yml"
# The files that may name the repository (relative to the root; glob patterns).
SCANNED = ("README.md", "ARCHITECTURE.md", "book/**/*.md", "notebooks/*.ipynb", "notebooks/*.md",
           "student/notebooks/*.ipynb")
# "owner/name" of other GitHub projects that the scanned pages may link to.
THIRD_PARTY: tuple[str, ...] = ()
PLACEHOLDER = "OWNER/NAME"  # what the docs write for "your repository": never rewritten

_OWNER = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})"
_NAME = r"[A-Za-z0-9._-]+?"
_BRANCH = r"[A-Za-z0-9_./-]*[A-Za-z0-9_-]"
URL_RE = re.compile(rf"https://github\.com/(?P<owner>{_OWNER})/(?P<name>{_NAME})(?:\.git)?/?")
BRANCH_RE = re.compile(_BRANCH)
# kind -> a reference to the book's repository inside a line of text
PATTERNS: dict[str, re.Pattern[str]] = {
    "pip": re.compile(
        rf"git\+https://github\.com/(?P<owner>{_OWNER})/(?P<name>{_NAME})(?:\.git)?"
        rf"@(?P<branch>{_BRANCH})"),
    "colab": re.compile(
        rf"colab\.research\.google\.com/github/(?P<owner>{_OWNER})/(?P<name>{_NAME})"
        rf"/blob/(?P<branch>{_BRANCH})/(?=(?:student/)?notebooks/)"),
    "pages": re.compile(rf"https://(?P<owner>{_OWNER})\.github\.io/(?P<name>[A-Za-z0-9._-]+)"),
    "link": re.compile(
        rf"https://github\.com/(?P<owner>{_OWNER})/(?P<name>{_NAME})(?:\.git)?"
        r"(?=[/)\s\"'>\]#`]|$)"),
}


class RepositoryError(UserError):
    """A repository URL or branch that the book cannot use, or a tree whose copies disagree."""


@dataclass(frozen=True)
class Repository:
    """A public GitHub repository and the branch the book is published from."""

    owner: str
    name: str
    branch: str = "main"

    @property
    def url(self) -> str:
        """``https://github.com/OWNER/NAME``: what ``_config.yml`` holds."""
        return f"https://github.com/{self.owner}/{self.name}"

    @property
    def pages(self) -> str:
        """Where GitHub Pages publishes the site (``ghp-import`` pushes it to ``gh-pages``)."""
        return f"https://{self.owner.lower()}.github.io/{self.name}/"

    def render(self, kind: str) -> str:
        """The text of a reference of ``kind`` (see :data:`PATTERNS`) to this repository."""
        return {
            "pip": f"git+{self.url}@{self.branch}",
            "colab": f"colab.research.google.com/github/{self.owner}/{self.name}"
                     f"/blob/{self.branch}/",
            "pages": self.pages.rstrip("/"),
            "link": self.url,
        }[kind]

    def same_as(self, owner: str, name: str, branch: str | None = None) -> bool:
        """Whether ``owner/name`` (GitHub ignores case) and ``branch`` (when given) are this one."""
        same = (owner.lower(), name.lower()) == (self.owner.lower(), self.name.lower())
        return same and (branch is None or branch == self.branch)


def parse_repository(url: str, branch: str = "main") -> Repository:
    """Check ``url`` (``https://github.com/OWNER/NAME``, ``.git`` or ``/`` allowed at the end) and
    ``branch``; raise :class:`RepositoryError` saying what is wrong."""
    m = URL_RE.fullmatch(url.strip())
    if m is None:
        raise RepositoryError(
            f"{url!r} is not a GitHub repository URL — give it as https://github.com/OWNER/NAME "
            "(Colab opens notebooks from GitHub only)")
    if m["name"] in (".", "..") or m["owner"].endswith("-"):
        raise RepositoryError(f"{url!r}: {m['owner']}/{m['name']} is not a valid repository name")
    bad = (not BRANCH_RE.fullmatch(branch) or ".." in branch or "//" in branch
           or branch.startswith(("-", "/", ".")) or branch.endswith(".lock"))
    if bad:
        raise RepositoryError(
            f"{branch!r} is not a branch name the book can use — letters, digits and . _ - / "
            "only (e.g. main)")
    return Repository(m["owner"], m["name"], branch)


def read_repository(root: Path) -> Repository:
    """The repository that ``root/_config.yml`` names (``repository: url:`` and ``branch:``)."""
    path = Path(root) / CONFIG
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise RepositoryError(f"cannot read {path}: {err} — run from the repository root "
                              "(or pass --root)") from err
    repo = config.get("repository") or {}
    if not repo.get("url") or not repo.get("branch"):
        raise RepositoryError(f"{path} needs `repository:` with `url:` and `branch:` (Jupyter "
                              "Book's default branch, master, would break every Colab link)")
    return parse_repository(str(repo["url"]), str(repo["branch"]))


@dataclass(frozen=True)
class Reference:
    """One place that names the repository: ``path:line``, its kind and what it says."""

    path: str
    line: int
    kind: str
    owner: str
    name: str
    branch: str | None

    def __str__(self) -> str:
        where = f"{self.owner}/{self.name}" + (f"@{self.branch}" if self.branch else "")
        return f"{self.path}:{self.line}: {self.kind} reference to {where}"


def scanned_files(root: Path) -> list[Path]:
    """The files of :data:`SCANNED` under ``root``, sorted, without duplicates."""
    root = Path(root)
    found = {p for pattern in SCANNED for p in root.glob(pattern) if p.is_file()}
    return sorted(found)


def _ignored(kind: str, owner: str, name: str) -> bool:
    """Whether a match is not the book's repository: :data:`PLACEHOLDER`, or a link to a
    :data:`THIRD_PARTY` project."""
    full = f"{owner}/{name}"
    others = {t.lower() for t in THIRD_PARTY} if kind in ("link", "pages") else set()
    return full == PLACEHOLDER or full.lower() in others


def find_references(root: Path) -> Iterator[Reference]:
    """Every reference to the book's repository in :func:`scanned_files` (config not included)."""
    root = Path(root)
    for path in scanned_files(root):
        rel = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for kind, pattern in PATTERNS.items():
                for m in pattern.finditer(line):
                    if _ignored(kind, m["owner"], m["name"]):
                        continue
                    branch = m.groupdict().get("branch")
                    yield Reference(rel, number, kind, m["owner"], m["name"], branch)


def disagreements(root: Path) -> list[str]:
    """Every reference that names another repository or branch than ``_config.yml``; empty when
    the tree agrees."""
    repo = read_repository(root)
    return [f"{ref} (expected {repo.owner}/{repo.name}@{repo.branch})"
            for ref in find_references(root) if not repo.same_as(ref.owner, ref.name, ref.branch)]


def rewrite_text(text: str, new: Repository) -> str:
    """``text`` with every reference of :data:`PATTERNS` pointing at ``new`` (a link to a
    :data:`THIRD_PARTY` project and the :data:`PLACEHOLDER` are kept); nothing else changes."""

    def replace(kind: str) -> Callable[[re.Match[str]], str]:
        def sub(m: re.Match[str]) -> str:
            if _ignored(kind, m["owner"], m["name"]):
                return m[0]
            return new.render(kind)
        return sub

    for kind, pattern in PATTERNS.items():
        text = pattern.sub(replace(kind), text)
    return text


def _yaml_scalar(value: str) -> str:
    """``value`` as YAML reads it back as the same string (quoted only when it must be)."""
    try:
        plain = yaml.safe_load(f"x: {value}") == {"x": value}
    except yaml.YAMLError:
        plain = False
    return value if plain else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rewrite_config(text: str, new: Repository) -> str:
    """``_config.yml``'s text with ``repository: url:`` and ``branch:`` set to ``new`` (a missing
    ``branch:`` is added after ``url:``); comments and every other line are kept."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if re.match(r"repository:\s*(#.*)?$", ln)), None)
    if start is None:
        raise RepositoryError(f"{CONFIG} has no top-level `repository:` block — add one "
                              "with `url:`, `path_to_book: \"\"` and `branch:`")
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].strip() and not lines[i].startswith((" ", "\t", "#"))), len(lines))
    values = {"url": new.url, "branch": _yaml_scalar(new.branch)}
    seen: dict[str, int] = {}
    for i in range(start + 1, end):
        m = re.match(r"(\s+)(url|branch):(\s*)[^#\n]*?(\s*#.*)?(\r?\n)?$", lines[i])
        if m:
            lines[i] = f"{m[1]}{m[2]}:{m[3] or ' '}{values[m[2]]}{m[4] or ''}{m[5] or ''}"
            seen[m[2]] = i
    if "url" not in seen:
        raise RepositoryError(f"{CONFIG}: `repository:` has no `url:` line — add one")
    if "branch" not in seen:
        indent = re.match(r"\s+", lines[seen["url"]])[0]
        lines.insert(seen["url"] + 1, f"{indent}branch: {values['branch']}\n")
    return "".join(lines)


def set_repository(root: Path, url: str, branch: str = "main") -> list[Path]:
    """Point the book at ``url``/``branch``: ``_config.yml`` and every copy of
    :func:`scanned_files`. Returns the files that changed (none when it already did); raises
    :class:`RepositoryError` before writing anything when ``url`` or ``branch`` is invalid."""
    root = Path(root)
    new = parse_repository(url, branch)
    read_repository(root)  # a readable config with a repository block, or a clear error
    changed = []
    for path in [root / CONFIG, *scanned_files(root)]:
        with open(path, encoding="utf-8", newline="") as f:  # keep \r\n where a file has it
            before = f.read()
        after = rewrite_config(before, new) if path.name == CONFIG else rewrite_text(before, new)
        if after != before:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(after)
            changed.append(path)
    left = disagreements(root)
    if left:  # pragma: no cover - a reference the patterns rewrite but do not read back
        raise RepositoryError("these still disagree after rewriting: " + "; ".join(left))
    return changed


__all__ = [
    "CONFIG", "PATTERNS", "PLACEHOLDER", "SCANNED", "THIRD_PARTY", "Reference", "Repository",
    "RepositoryError", "disagreements", "find_references", "parse_repository", "read_repository",
    "rewrite_config", "rewrite_text", "scanned_files", "set_repository",
]
