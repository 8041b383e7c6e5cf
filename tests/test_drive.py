"""Chapters keep their artifacts on Google Drive on Colab (keep_on_drive), and only there."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from sat_core.colab import DriveUnavailable, artifacts_home, drive_mounted, on_colab


def fake_mount(root: Path):
    """A stand-in for Colab's drive.mount that creates MyDrive and records the call."""
    calls = []

    def mount(where: Path) -> None:
        calls.append(Path(where))
        (Path(where) / "MyDrive").mkdir(parents=True)

    mount.calls = calls
    return mount


def test_off_colab_the_path_is_unchanged(tmp_path, capsys):
    (tmp_path / "MyDrive").mkdir()  # even a mounted-looking folder is ignored off Colab
    for choice in ("auto", "no", False):
        assert artifacts_home("../artifacts", choice, colab=False, mount_root=tmp_path) == \
            "../artifacts"
    assert artifacts_home(Path("../artifacts"), colab=False, mount_root=tmp_path) == "../artifacts"
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "MyDrive" / "show-attend-tell").exists()


def test_colab_with_drive_mounted_uses_the_drive_folder(tmp_path, capsys):
    (tmp_path / "MyDrive").mkdir()
    for choice in ("auto", "yes", True):
        home = artifacts_home("../artifacts", choice, colab=True, mount_root=tmp_path,
                              mount=lambda _: pytest.fail("Drive is mounted: no mount call"))
        assert home == str(tmp_path / "MyDrive" / "show-attend-tell" / "artifacts")
        assert Path(home).is_dir()
    assert "artifacts on Google Drive" in capsys.readouterr().out


def test_colab_without_drive_auto_stays_local_and_says_how_to_keep(tmp_path, capsys):
    mount = fake_mount(tmp_path)
    assert artifacts_home("../artifacts", "auto", colab=True, mount_root=tmp_path,
                          mount=mount) == "../artifacts"
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and 'keep_on_drive = "yes"' in out and "../artifacts" in out
    assert mount.calls == [] and not (tmp_path / "MyDrive").exists()  # auto never mounts


def test_colab_yes_mounts_drive_when_needed(tmp_path):
    mount = fake_mount(tmp_path)
    home = artifacts_home("../artifacts", "yes", colab=True, mount_root=tmp_path, mount=mount)
    assert mount.calls == [tmp_path]
    assert Path(home) == tmp_path / "MyDrive" / "show-attend-tell" / "artifacts"
    assert Path(home).is_dir() and drive_mounted(tmp_path)


def test_colab_yes_and_a_failing_mount_is_one_clear_error(tmp_path):
    def refuse(where: Path) -> None:
        raise ValueError("mount failed: the user declined")

    with pytest.raises(DriveUnavailable) as info:
        artifacts_home("../artifacts", "yes", colab=True, mount_root=tmp_path, mount=refuse)
    message = str(info.value)
    assert "\n" not in message and "declined" in message
    assert "drive.mount('/content/drive')" in message and 'keep_on_drive = "no"' in message

    with pytest.raises(DriveUnavailable, match="MyDrive is missing"):  # "mounted", nothing there
        artifacts_home("../artifacts", "yes", colab=True, mount_root=tmp_path, mount=lambda _: None)


def test_yes_off_colab_and_bad_values_are_refused(tmp_path):
    with pytest.raises(DriveUnavailable, match='needs Google Colab.*keep_on_drive = "no"'):
        artifacts_home("../artifacts", "yes", colab=False, mount_root=tmp_path)
    with pytest.raises(ValueError, match='"auto", "yes" or "no"'):
        artifacts_home("../artifacts", "drive", colab=True, mount_root=tmp_path)


def test_no_keeps_the_local_path_even_on_colab_with_drive(tmp_path, capsys):
    (tmp_path / "MyDrive").mkdir()
    assert artifacts_home("../artifacts", "no", colab=True, mount_root=tmp_path) == "../artifacts"
    assert not (tmp_path / "MyDrive" / "show-attend-tell").exists()
    assert capsys.readouterr().out == ""


def test_colab_is_detected_from_its_module(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not on_colab()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert on_colab()
    (tmp_path / "MyDrive").mkdir()  # detection by default, the mount root injected
    assert artifacts_home("a", mount_root=tmp_path) == str(
        tmp_path / "MyDrive" / "show-attend-tell" / "artifacts")


def test_the_default_mount_uses_colabs_drive_module(monkeypatch, tmp_path):
    calls = []
    drive = types.SimpleNamespace(mount=lambda where: calls.append(where) or
                                  (Path(where) / "MyDrive").mkdir())
    colab = types.ModuleType("google.colab")
    colab.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    sys.modules["google"].colab = colab
    home = artifacts_home("a", "yes", mount_root=tmp_path)
    assert calls == [str(tmp_path)] and Path(home).is_dir()


def test_a_lock_left_on_drive_by_a_lost_runtime_goes_stale_and_is_taken_over(tmp_path, capsys):
    """After a disconnect, the run folder on Drive holds the old runtime's lock (another host).
    While that lock is fresh the new runtime stops and says when it may resume; once nobody has
    touched it for STALE_AFTER_S (a live run touches it every HEARTBEAT_S), it is taken over."""
    import json
    import os
    import time

    from sat_core.out_dir import HEARTBEAT_S, STALE_AFTER_S, OutDirError, claim_out_dir

    assert HEARTBEAT_S * 3 <= STALE_AFTER_S  # a live run misses several beats before it looks gone
    run = tmp_path / "MyDrive" / "show-attend-tell" / "artifacts" / "ch10-flickr8k-soft"
    run.mkdir(parents=True)
    lock = run / ".lock"
    lock.write_text(json.dumps({"pid": 1234, "host": "old-colab-runtime"}))
    with pytest.raises(OutDirError) as info, claim_out_dir(run):
        pass
    message = str(info.value)
    assert "old-colab-runtime" in message and f"delete {lock}" in message
    assert "Colab runtime that disconnected" in message and "run again in 5 min" in message
    # the same lock, last touched just over STALE_AFTER_S ago: the old runtime is gone
    old = time.time() - STALE_AFTER_S - 5
    os.utime(lock, (old, old))
    with claim_out_dir(run):
        assert json.loads(lock.read_text())["host"] != "old-colab-runtime"
    assert "taking over the lock" in capsys.readouterr().err


def test_a_running_claim_keeps_its_lock_fresh(tmp_path):
    """The heartbeat thread touches the lock while the run holds it, and stops with it."""
    import os
    import time

    from sat_core.out_dir import heartbeat

    lock = tmp_path / ".lock"
    lock.write_text("{}")
    os.utime(lock, (0, 0))
    with heartbeat(lock, every=0.02):
        deadline = time.time() + 5
        while lock.stat().st_mtime == 0 and time.time() < deadline:
            time.sleep(0.01)
        assert lock.stat().st_mtime > time.time() - 60
    os.utime(lock, (0, 0))
    time.sleep(0.1)
    assert lock.stat().st_mtime == 0  # stopped with the block
