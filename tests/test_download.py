"""Downloads and extraction, on generated files only: file:// URLs and a loopback HTTP server."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from sat_core.data import download as dl
from sat_core.data.datasets import load_splits
from sat_core.data.download import (
    DATASETS,
    ChecksumError,
    DownloadError,
    ManualDownloadRequired,
    NoSourceLeft,
    UnsafeArchiveError,
    download,
    prepare_dataset,
    safe_extract,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path == "/truncated":  # promises 1000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base_url, served_dir): an HTTP server on 127.0.0.1 serving a temporary folder."""
    root = tmp_path_factory.mktemp("served")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


# -- download --------------------------------------------------------------------------------
def test_http_download_with_checksum(server, tmp_path):
    base, served = server
    data = bytes(range(256)) * 50
    (served / "blob.bin").write_bytes(data)
    dest = tmp_path / "out" / "blob.bin"
    assert download(f"{base}/blob.bin", dest, sha256=sha(data), progress=False) == dest
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["blob.bin"]  # no temporary left


def test_file_url_download(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes(b"hello")
    dest = tmp_path / "dest.txt"
    download(src.as_uri(), dest, progress=False)
    assert dest.read_bytes() == b"hello"


def test_checksum_mismatch_removes_the_file(server, tmp_path):
    base, served = server
    (served / "bad.bin").write_bytes(b"unexpected content")
    wrong = sha(b"what we expected")
    dest = tmp_path / "bad.bin"
    with pytest.raises(ChecksumError) as e:
        download(f"{base}/bad.bin", dest, sha256=wrong, progress=False)
    msg = str(e.value)
    assert wrong in msg and sha(b"unexpected content") in msg  # expected and actual
    assert "checksums.json" in msg  # the advice
    assert list(tmp_path.iterdir()) == []


def test_failed_downloads_leave_nothing(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="stopped after 10 of 1000 bytes") as e:
        download(f"{base}/truncated", tmp_path / "t.bin", progress=False)
    assert f"{base}/truncated" in str(e.value)
    with pytest.raises(DownloadError, match="404"):
        download(f"{base}/no-such-file", tmp_path / "n.bin", progress=False)
    with pytest.raises(DownloadError):
        download((tmp_path / "absent").as_uri(), tmp_path / "a.bin", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_with_right_checksum_is_kept(tmp_path):
    dest = tmp_path / "have.bin"
    dest.write_bytes(b"already here")
    nowhere = (tmp_path / "missing-source").as_uri()  # would fail if fetched
    download(nowhere, dest, sha256=sha(b"already here"), progress=False)
    download(nowhere, dest, progress=False)
    assert dest.read_bytes() == b"already here"


def test_existing_file_with_wrong_checksum_is_fetched_again(tmp_path):
    src = tmp_path / "good.bin"
    src.write_bytes(b"good")
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"stale")
    download(src.as_uri(), dest, sha256=sha(b"good"), progress=False)
    assert dest.read_bytes() == b"good"


# -- safe_extract ----------------------------------------------------------------------------
def _zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return path


def _tar(path: Path, members: dict[str, bytes], links: list[tuple[str, str, bytes]] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target, kind in links:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
    return path


def test_extract_zip_and_tar(tmp_path):
    z = _zip(tmp_path / "a.zip", {"top/x.txt": b"x", "top/sub/y.txt": b"y"})
    assert sorted(safe_extract(z, tmp_path / "z")) == ["top/sub/y.txt", "top/x.txt"]
    assert (tmp_path / "z" / "top" / "sub" / "y.txt").read_bytes() == b"y"
    t = _tar(tmp_path / "a.tar.gz", {"d/x.txt": b"tx"}, [("d/link", "x.txt", tarfile.SYMTYPE)])
    safe_extract(t, tmp_path / "t")
    assert (tmp_path / "t" / "d" / "x.txt").read_bytes() == b"tx"
    assert (tmp_path / "t" / "d" / "link").read_bytes() == b"tx"  # link inside dest: allowed
    only = safe_extract(z, tmp_path / "only", only=lambda n: n.endswith("x.txt"))
    assert only == ["top/x.txt"] and not (tmp_path / "only" / "top" / "sub").exists()


@pytest.mark.parametrize(
    "make,member",
    [
        (lambda p: _zip(p / "a.zip", {"ok.txt": b"1", "../evil.txt": b"2"}), "../evil.txt"),
        (lambda p: _zip(p / "a.zip", {"/abs.txt": b"2"}), "/abs.txt"),
        (lambda p: _zip(p / "a.zip", {"ok.txt": b"1"}, {"ln": "../../etc/passwd"}), "ln"),
        (lambda p: _tar(p / "a.tgz", {"ok.txt": b"1", "a/../../evil.txt": b"2"}),
         "a/../../evil.txt"),
        (lambda p: _tar(p / "a.tgz", {"/etc/abs.txt": b"2"}), "/etc/abs.txt"),
        (lambda p: _tar(p / "a.tgz", {"ok.txt": b"1"}, [("d/ln", "../../x", tarfile.SYMTYPE)]),
         "d/ln"),
        (lambda p: _tar(p / "a.tgz", {}, [("ln", "/etc/passwd", tarfile.SYMTYPE)]), "ln"),
        (lambda p: _tar(p / "a.tgz", {}, [("hard", "../outside", tarfile.LNKTYPE)]), "hard"),
        (lambda p: _tar(p / "a.tgz", {}, [("fifo", "", tarfile.FIFOTYPE)]), "fifo"),
    ],
)
def test_unsafe_members_are_refused_before_writing(tmp_path, make, member):
    archive = make(tmp_path)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError) as e:
        safe_extract(archive, dest)
    assert repr(member) in str(e.value) and str(archive) in str(e.value)
    assert list(dest.iterdir()) == []  # nothing written, not even the safe members
    assert not (tmp_path / "evil.txt").exists()


def test_extract_rejects_non_archives(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        safe_extract(tmp_path / "x.zip", tmp_path / "d")
    with pytest.raises(FileNotFoundError):
        safe_extract(tmp_path / "absent.zip", tmp_path / "d")


# -- registry and prepare_dataset -------------------------------------------------------------
def test_registry_urls_and_no_invented_checksums():
    urls = {f.filename: f.url for spec in DATASETS.values() for f in spec.files}
    sources = {f.filename: f.urls for spec in DATASETS.values() for f in spec.files}
    captions = sources["caption_datasets.zip"]
    assert len(captions) >= 2 and len(set(captions)) == len(captions)  # the original + mirrors
    assert all(u.startswith("https://") for u in captions[1:])
    assert all(f.option == "--captions-zip" for spec in DATASETS.values() for f in spec.files
               if f.filename == "caption_datasets.zip")
    assert urls["caption_datasets.zip"] == (
        "http://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip")
    assert urls["Flickr8k_Dataset.zip"].startswith("https://github.com/jbrownlee/Datasets/")
    assert urls["train2014.zip"] == "http://images.cocodataset.org/zips/train2014.zip"
    assert urls["val2014.zip"] == "http://images.cocodataset.org/zips/val2014.zip"
    assert sources["flickr30k-images.tar.gz"] == () and "--images-archive" in DATASETS[
        "flickr30k"].instructions
    assert all(f.sha256 is None for spec in DATASETS.values() for f in spec.files)
    md5s = {f.filename: f.md5 for spec in DATASETS.values() for f in spec.files if f.md5}
    assert md5s == {"Flickr8k_Dataset.zip": "f18a1e2920de5bd84dae7cf08ec78978"}  # published


def _mirror(tmp_path: Path, write_karpathy_dataset) -> Path:
    """A fake mirror: caption_datasets.zip and Flickr8k_Dataset.zip built from the tiny fixture."""
    src = tmp_path / "src"
    write_karpathy_dataset(src / "dataset_flickr8k.json", src / "Flicker8k_Dataset", size=(8, 8))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "caption_datasets.zip", "w") as zf:
        zf.write(src / "dataset_flickr8k.json", "dataset_flickr8k.json")
        zf.writestr("dataset_coco.json", "{}")
        zf.writestr("__MACOSX/._dataset_flickr8k.json", "junk")
    with zipfile.ZipFile(mirror / "Flickr8k_Dataset.zip", "w") as zf:
        for p in sorted((src / "Flicker8k_Dataset").iterdir()):
            zf.write(p, f"Flicker8k_Dataset/{p.name}")
        zf.writestr("__MACOSX/Flicker8k_Dataset/._x.png", "junk")
    return mirror


def test_prepare_flickr8k_from_a_local_mirror(tmp_path, write_karpathy):
    mirror = _mirror(tmp_path, write_karpathy)
    root = tmp_path / "data"
    # (the registry's md5 of Flickr8k_Dataset.zip is for its own URL: a --mirror is not held to it)
    assert prepare_dataset("flickr8k", root, mirror=mirror.as_uri(), progress=False) == (
        root / "flickr8k")
    assert not (root / "flickr8k" / "dataset_coco.json").exists()
    assert len(list((root / "flickr8k" / "images").glob("*.png"))) == 6
    sums = json.loads((root / "checksums.json").read_text())
    assert sums == {name: sha((mirror / name).read_bytes())
                    for name in ("caption_datasets.zip", "Flickr8k_Dataset.zip")}
    splits = load_splits("flickr8k", data_root=root, image_size=4)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    x = splits["val"].load_image(splits["val"].records[0])
    assert x.shape == (3, 4, 4) and torch.isfinite(x).all()

    # A second run needs no network: everything is in place.
    prepare_dataset("flickr8k", root, mirror=(tmp_path / "gone").as_uri(), progress=False)

    # Later runs verify against checksums.json: a changed upstream file is refused.
    (mirror / "Flickr8k_Dataset.zip").write_bytes(b"tampered")
    (root / "downloads" / "Flickr8k_Dataset.zip").unlink()
    (root / "flickr8k" / ".done-Flickr8k_Dataset.zip").unlink()
    with pytest.raises(NoSourceLeft) as e:
        prepare_dataset("flickr8k", root, mirror=mirror.as_uri(), progress=False)
    assert isinstance(e.value.__cause__, ChecksumError)
    assert isinstance(e.value, ChecksumError)  # `except ChecksumError` still catches it
    assert sums["Flickr8k_Dataset.zip"] in str(e.value) and sha(b"tampered") in str(e.value)
    assert "checksums.json" in str(e.value)  # what to do if the new file is trusted
    assert not (root / "downloads" / "Flickr8k_Dataset.zip").exists()


def test_flickr30k_needs_a_manual_step(tmp_path, capsys):
    root = tmp_path / "data"
    with pytest.raises(ManualDownloadRequired, match="--images-archive") as e:
        prepare_dataset("flickr30k", root, progress=False)
    assert str(root) in str(e.value)
    assert not (root / "downloads").exists()  # failed before downloading anything
    assert dl.main(["flickr30k", "--root", str(root), "--no-progress"]) == 2
    assert "DenotationGraph" in capsys.readouterr().err


def test_flickr30k_from_a_local_images_archive(tmp_path, write_karpathy):
    src = tmp_path / "src"
    write_karpathy(src / "dataset_flickr30k.json", src / "flickr30k-images", size=(8, 8))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "caption_datasets.zip", "w") as zf:
        zf.write(src / "dataset_flickr30k.json", "dataset_flickr30k.json")
    archive = tmp_path / "flickr30k-images.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "flickr30k-images", "flickr30k-images")
    root = tmp_path / "data"
    assert dl.main(["flickr30k", "--root", str(root), "--mirror", mirror.as_uri(),
                    "--images-archive", str(archive), "--no-progress"]) == 0
    splits = load_splits("flickr30k", data_root=root, image_size=4)
    assert splits["test"].load_image(splits["test"].records[0]).shape == (3, 4, 4)


def test_unknown_dataset_and_cli_help():
    with pytest.raises(ValueError, match="flickr8k"):
        prepare_dataset("imagenet", "data")
    out = subprocess.run([sys.executable, "-m", "sat_core.data.download", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "flickr8k" in out and "flickr30k" in out and "coco" in out and "--root" in out


# -- several sources, and none (offline) --------------------------------------------------------
def _with_sources(monkeypatch, captions: list[str], images: list[str],
                  images_md5: str | None = None) -> None:
    """Point the flickr8k registry at these (local) sources."""
    spec = DATASETS["flickr8k"]
    files = (dataclasses.replace(spec.files[0], urls=tuple(captions)),
             dataclasses.replace(spec.files[1], urls=tuple(images), md5=images_md5))
    monkeypatch.setitem(DATASETS, "flickr8k", dataclasses.replace(spec, files=files))


def test_sources_are_tried_in_order(tmp_path, write_karpathy, monkeypatch, capsys):
    mirror = _mirror(tmp_path, write_karpathy)
    html = tmp_path / "page.html"
    html.write_bytes(b"<html><body>moved</body></html>")  # a 200 that is not the zip
    gone = (tmp_path / "gone.zip").as_uri()
    good = (mirror / "caption_datasets.zip").as_uri()
    images = (mirror / "Flickr8k_Dataset.zip").read_bytes()
    other = tmp_path / "other" / "Flickr8k_Dataset.zip"  # a valid zip, but not the published one
    other.parent.mkdir()
    _zip(other, {"Flicker8k_Dataset/x.png": b"not the images"})
    _with_sources(monkeypatch, [gone, html.as_uri(), good],
                  [other.as_uri(), (mirror / "Flickr8k_Dataset.zip").as_uri()],
                  images_md5=hashlib.md5(images).hexdigest())
    root = tmp_path / "data"
    prepare_dataset("flickr8k", root, progress=False)
    err = capsys.readouterr().err
    assert f"{other.as_uri()}: md5 {hashlib.md5(other.read_bytes()).hexdigest()}, expected" in err
    assert len(list((root / "flickr8k" / "images").glob("*.png"))) == 6  # not x.png
    err = err.splitlines()[0] + "\n"
    assert err.startswith(f"caption_datasets.zip: from {good}, after ")
    assert f"{gone}: " in err and f"{html.as_uri()}: caption_datasets.zip is neither a zip nor a tar" in err
    assert "delete it and run again" not in err  # done already: the next source was tried
    sums = json.loads((root / "checksums.json").read_text())
    assert sums["caption_datasets.zip"] == sha((mirror / "caption_datasets.zip").read_bytes())
    assert sums["Flickr8k_Dataset.zip"] == sha(images)
    assert sorted(p.name for p in (root / "downloads").iterdir()) == [
        "Flickr8k_Dataset.zip", "caption_datasets.zip"]  # no page, no partial file
    assert len(load_splits("flickr8k", data_root=root, image_size=4)["train"]) == 4


def test_offline_is_one_message_saying_which_file_and_where(tmp_path, monkeypatch, capsys):
    urls = [(tmp_path / f"gone{i}.zip").as_uri() for i in range(2)]
    _with_sources(monkeypatch, urls, [(tmp_path / "gone-images.zip").as_uri()])
    root = tmp_path / "data"
    with pytest.raises(NoSourceLeft) as e:
        prepare_dataset("flickr8k", root, progress=False)
    msg = str(e.value)
    assert type(e.value) is NoSourceLeft and isinstance(e.value, DownloadError)
    assert msg.startswith("caption_datasets.zip") and all(u in msg for u in urls)
    assert "--captions-zip PATH/TO/caption_datasets.zip" in msg
    assert str(root / "downloads" / "caption_datasets.zip") in msg
    assert f"dataset_flickr8k.json itself in {root / 'flickr8k'}" in msg
    assert not (root / "downloads").exists() or not list((root / "downloads").iterdir())
    capsys.readouterr()
    assert dl.main(["flickr8k", "--root", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: caption_datasets.zip")
    assert "--captions-zip" in err and "Traceback" not in err


def test_files_obtained_by_hand_need_no_network(tmp_path, write_karpathy, monkeypatch):
    mirror = _mirror(tmp_path, write_karpathy)
    before = {p.name: p.read_bytes() for p in mirror.iterdir()}
    _with_sources(monkeypatch, [(tmp_path / "gone.zip").as_uri()],
                  [(tmp_path / "gone-images.zip").as_uri()])
    root = tmp_path / "data"
    assert dl.main(["flickr8k", "--root", str(root), "--no-progress",
                    "--captions-zip", str(mirror / "caption_datasets.zip"),
                    "--images-archive", str(mirror / "Flickr8k_Dataset.zip")]) == 0
    assert len(load_splits("flickr8k", data_root=root, image_size=4)["test"]) == 1
    assert not (root / "downloads").exists()  # read in place, nothing downloaded
    assert {p.name: p.read_bytes() for p in mirror.iterdir()} == before

    # or put by hand where the message says: the zip in downloads/, or the JSON itself
    for placed in ("downloads/caption_datasets.zip", "flickr8k/dataset_flickr8k.json"):
        other = tmp_path / placed.replace("/", "-")
        if placed.endswith(".zip"):
            (other / "downloads").mkdir(parents=True)
            shutil.copy(mirror / "caption_datasets.zip", other / placed)
        else:
            (other / "flickr8k").mkdir(parents=True)
            shutil.copy(root / placed, other / placed)
        prepare_dataset("flickr8k", other, images_archive=mirror / "Flickr8k_Dataset.zip",
                        progress=False)
        assert len(load_splits("flickr8k", data_root=other, image_size=4)["val"]) == 1
    with pytest.raises(FileNotFoundError, match="--captions-zip"):
        prepare_dataset("flickr8k", root, captions_zip=tmp_path / "absent.zip")
