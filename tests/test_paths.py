"""Paths in messages are relative to the reader's folder; chapter scratch folders start empty."""

from pathlib import Path

import pytest

from sat_core.paths import scratch_dir, shown_path


def test_shown_path_is_relative_inside_and_near_the_working_directory(tmp_path, monkeypatch):
    work = tmp_path / "repo" / "notebooks"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert shown_path(work / "a" / "b.pt") == str(Path("a/b.pt"))
    assert shown_path(tmp_path / "repo" / "artifacts" / "f") == str(Path("../artifacts/f"))
    assert shown_path("../artifacts/f") == str(Path("../artifacts/f"))
    assert shown_path(work) == "."
    # three levels up is no longer "near": shown as it is (or under ~)
    far = Path("/") / "nowhere-near" / "x"
    assert shown_path(far, max_up=0) == str(far)


def test_shown_path_uses_tilde_for_the_home_folder(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "elsewhere" / "a" / "b" / "c"
    work.mkdir(parents=True)
    (home / ".cache").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert shown_path(home / ".cache" / "torch") == str(Path("~/.cache/torch"))


def test_scratch_dir_is_fresh_each_time_and_stays_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = scratch_dir("artifacts", "ch02")
    assert first == Path("artifacts/scratch/ch02") and first.is_dir()
    (first / "old.txt").write_text("stale")
    again = scratch_dir("artifacts", "ch02")
    assert again == first and list(again.iterdir()) == []


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x"])
def test_scratch_dir_refuses_anything_but_one_folder_name(tmp_path, name):
    with pytest.raises(ValueError, match="one folder name"):
        scratch_dir(tmp_path, name)


def test_feature_caches_print_relative_from_the_books_linked_stage(tmp_path, monkeypatch):
    """The book runs chapters in ``_build/stage/notebooks`` with ``_build/stage/artifacts`` a link
    to the repository's ``artifacts``: the feature folder a chapter prints must stay
    ``../artifacts/features``, not the build machine's absolute path (resolving the link did)."""
    from sat_core.config import TrainConfig
    from sat_core.train import features_root

    repo = tmp_path / "repo"
    (repo / "artifacts").mkdir(parents=True)
    stage = repo / "_build" / "stage"
    (stage / "notebooks").mkdir(parents=True)
    (stage / "artifacts").symlink_to(repo / "artifacts", target_is_directory=True)
    monkeypatch.chdir(stage / "notebooks")
    cfg = TrainConfig(out_dir="../artifacts/soft")
    assert shown_path(features_root(cfg) / "key" / "train") == str(
        Path("../artifacts/features/key/train"))
    assert features_root(cfg).resolve() == (repo / "artifacts" / "features").resolve()
