"""The book's public repository is one setting (``_config.yml``); every copy agrees with it, and
``python -m sat_core.book set-repository`` rewrites them all (on a copy of the tree here)."""

from __future__ import annotations

import difflib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from sat_core.book.build import main as book_main
from sat_core.book.repository import (
    Repository,
    RepositoryError,
    disagreements,
    find_references,
    parse_repository,
    read_repository,
    rewrite_config,
    set_repository,
)
from sat_core.book.student import student_copy_drift

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what set-repository reads and writes: the config, README, book/, notebooks/,
    student/."""
    for name in ("_config.yml", "README.md", "ARCHITECTURE.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    for name in ("book", "notebooks", "student"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_copy_agrees_with_the_config():
    assert disagreements(ROOT) == []
    repo = read_repository(ROOT)
    refs = list(find_references(ROOT))
    pip_in = {r.path for r in refs if r.kind == "pip"}
    assert {f"notebooks/{p.name}" for p in NOTEBOOKS} <= pip_in  # every install cell
    assert {f"student/notebooks/{p.name}" for p in NOTEBOOKS} <= pip_in  # and the student copies
    assert "notebooks/TEMPLATE.md" in pip_in
    readme = {r.kind for r in refs if r.path == "README.md"}
    assert {"colab", "pages", "link"} <= readme  # the badge and the links
    badge = re.search(r"colab\.research\.google\.com/github/[^)]*?/(notebooks/[\w.]+\.ipynb)",
                      (ROOT / "README.md").read_text(encoding="utf-8"))
    assert badge and (ROOT / badge[1]).is_file(), "the README's Colab badge opens no chapter"
    assert repo.branch, "Jupyter Book's default branch (master) would break every Colab link"


def test_a_stale_copy_is_reported(tree):
    nb = tree / "notebooks" / NOTEBOOKS[0].name
    nb.write_text(nb.read_text(encoding="utf-8").replace("@main", "@old-branch"), encoding="utf-8")
    readme = tree / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nSee https://github.com/someone/fork.\n",
                      encoding="utf-8")
    found = disagreements(tree)
    assert len(found) == 2, found
    assert f"notebooks/{nb.name}:" in found[1] and "@old-branch" in found[1]
    assert "README.md:" in found[0] and "someone/fork" in found[0]


def test_set_repository_rewrites_every_copy_and_only_them(tree, capsys):
    before = snapshot(tree)
    url, branch = "https://github.com/Jane-Doe/sat.book.git", "release/v1"
    assert book_main(["--root", str(tree), "set-repository", url, "--branch", branch]) == 0
    out = capsys.readouterr().out
    assert "https://github.com/Jane-Doe/sat.book, branch release/v1" in out
    assert "https://jane-doe.github.io/sat.book/" in out
    after = snapshot(tree)
    assert disagreements(tree) == []
    assert read_repository(tree) == Repository("Jane-Doe", "sat.book", "release/v1")
    config = yaml.safe_load((tree / "_config.yml").read_text(encoding="utf-8"))
    assert config["repository"] == {"url": "https://github.com/Jane-Doe/sat.book",
                                    "path_to_book": "", "branch": "release/v1"}
    assert not any(b"sat-book/show-attend-tell" in data for data in after.values())
    for p in NOTEBOOKS:  # notebooks: exactly one line changed, the JSON layout kept
        name = f"notebooks/{p.name}"
        diff = [ln for ln in difflib.unified_diff(before[name].decode().splitlines(),
                                                  after[name].decode().splitlines(), n=0)
                if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
        assert len(diff) == 2 and "%pip install" in diff[0], diff
        assert 'git+https://github.com/Jane-Doe/sat.book@release/v1\\"' in diff[1]
        nb = json.loads(after[name])
        assert after[name] == (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"_config.yml", "README.md", "book/troubleshooting.md",
                       "notebooks/TEMPLATE.md", *(f"notebooks/{p.name}" for p in NOTEBOOKS),
                       *(f"student/notebooks/{p.name}" for p in NOTEBOOKS)}
    assert student_copy_drift(tree) == []  # the student copies still match their chapters

    assert set_repository(tree, url, branch) == []  # idempotent
    assert snapshot(tree) == after
    set_repository(tree, "https://github.com/sat-book/show-attend-tell", "main")
    assert snapshot(tree) == before  # and the way back restores every byte


@pytest.mark.parametrize("url,branch", [
    ("https://gitlab.com/a/b", "main"),
    ("git@github.com:a/b.git", "main"),
    ("https://github.com/a", "main"),
    ("https://github.com/a/b/tree/main", "main"),
    ("https://github.com/-a/b", "main"),
    ("https://github.com/a/b", "bad branch"),
    ("https://github.com/a/b", "a..b"),
    ("https://github.com/a/b", "-x"),
])
def test_bad_urls_and_branches_change_nothing(tree, capsys, url, branch):
    before = snapshot(tree)
    assert book_main(["--root", str(tree), "set-repository", url, f"--branch={branch}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert snapshot(tree) == before
    with pytest.raises(RepositoryError):
        parse_repository(url, branch)


def test_url_forms_and_the_config_block():
    assert parse_repository("https://github.com/o/n.git/", "main") == Repository("o", "n")
    assert parse_repository(" https://github.com/o/n ", "dev").branch == "dev"
    text = "title: x\nrepository:\n  url: https://github.com/a/b  # the repo\n  path_to_book: ''\n"
    new = rewrite_config(text, Repository("c", "d", "1.0"))
    assert new.splitlines()[2] == "  url: https://github.com/c/d  # the repo"
    assert yaml.safe_load(new)["repository"]["branch"] == "1.0"  # quoted: not the float 1.0
    with pytest.raises(RepositoryError, match="no top-level `repository:`"):
        rewrite_config("title: x\n", Repository("c", "d"))
