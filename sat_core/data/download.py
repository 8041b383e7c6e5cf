"""Downloading the real datasets: checksummed, atomic downloads and safe archive extraction.

``python -m sat_core.data.download flickr8k --root data`` produces the layout that
:func:`sat_core.data.datasets.load_splits` reads::

    data/downloads/            the archives (kept, so a later run needs no network)
    data/checksums.json        sha256 of every archive downloaded, verified on later runs
    data/flickr8k/dataset_flickr8k.json  data/flickr8k/images/*.jpg

Each archive has one or more sources (the original first, then public mirrors), tried in order
until one downloads and extracts. When none does (offline, or every copy gone), one error says
which file to obtain by hand and where to put it: ``--captions-zip PATH`` / ``--images-archive
PATH``, or ``data/downloads/<archive>``, which later runs use without the network.

We publish no checksums we have not computed ourselves: where :data:`DATASETS` has ``sha256=None``
the first download records what it got in ``checksums.json``, and later runs check against that.
A checksum is recorded only once its archive was extracted: an HTML error page saved in place of
a zip is never trusted.

Extraction is all or nothing. Each archive is extracted into a stage ``data/NAME/.extract-*/``,
arranged as it will be placed, and marked complete (:data:`STAGE_MARKER`, written last); only
then is it moved into place (one rename when the target folder is new) and ``.done-<archive>``
written. A run killed before the marker leaves a stage that the next run deletes before extracting
again; a run killed after it leaves a stage that the next run moves into place. So a dataset is
never reported ready with part of its images. (Do not run two downloads into one ``--root`` at
the same time.)
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from sat_core.errors import ArgumentParser, UserError, command
from sat_core.out_dir import check_writable_dir

CHUNK = 1 << 20
STAGE_PREFIX = ".extract-"  # data/NAME/.extract-*: an extraction in progress
STAGE_MARKER = ".complete"  # written last into a stage whose extraction finished
STAGE_PAYLOAD = "payload"  # what the stage places: a file (``pick``) or a folder


class ChecksumError(UserError, RuntimeError):
    """A file's sha256 is not the expected one (or ``checksums.json`` is unreadable)."""


class UnsafeArchiveError(UserError, RuntimeError):
    """An archive member would be written outside the destination folder."""


class DownloadError(UserError, RuntimeError):
    """A download failed (network error, HTTP error, truncated body). Nothing was written."""


class ArchiveError(UserError, ValueError):
    """A file cannot be extracted: not an archive, corrupt, or without the expected member."""


class ManualDownloadRequired(RuntimeError):
    """The dataset cannot be fetched automatically; the message says how to get it."""


class NoSourceLeft(DownloadError):
    """Every source of a file failed (offline?); the message lists them and says which file to
    obtain by hand and where to put it. It is also the kind of error the last source gave (one of
    the classes below), so ``except ChecksumError`` still catches a copy whose checksum differs."""


class NoSourceLeftChecksum(NoSourceLeft, ChecksumError):
    """:class:`NoSourceLeft`; the last source's copy had another checksum."""


class NoSourceLeftArchive(NoSourceLeft, ArchiveError):
    """:class:`NoSourceLeft`; the last source's copy was not an archive, or a corrupt one."""


class NoSourceLeftUnsafe(NoSourceLeft, UnsafeArchiveError):
    """:class:`NoSourceLeft`; the last source's copy had a member that escapes its folder."""


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------
def sha256_file(path: str | Path, progress: bool = False, algorithm: str = "sha256") -> str:
    """Hex digest (sha256, or ``algorithm``) of a file, read in chunks."""
    path = Path(path)
    h = hashlib.new(algorithm)
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=f"{algorithm} {path.name}", disable=not progress) as bar:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _fetch(url: str, dest: Path, progress: bool) -> tuple[Path, str]:
    """Stream ``url`` into a new temporary file beside ``dest``; return it and its sha256.

    On any failure (network, truncated body, Ctrl-C) the temporary file is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = resp.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      desc=dest.name, disable=not progress) as bar:
                got = 0
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if total is not None and got != int(total):
                raise OSError(f"download of {url} stopped after {got} of {total} bytes")
        return tmp, h.hexdigest()
    except (OSError, http.client.HTTPException) as e:
        tmp.unlink(missing_ok=True)
        err = DownloadError(
            f"downloading {url} to {dest} failed: {e}. Check the URL and your connection and run "
            "again; no partial file was left behind"
        )
        err.reason = str(e)
        raise err from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _download(url: str, dest: Path, sha256: str | None, progress: bool) -> str:
    """:func:`download`, returning the sha256 of ``dest``."""
    expected = sha256.lower() if sha256 else None
    if dest.exists():
        actual = sha256_file(dest, progress)
        if expected is None or actual == expected:
            return actual
        print(f"{dest} exists but its sha256 is {actual}, expected {expected}: downloading again",
              file=sys.stderr)
    tmp, actual = _fetch(url, dest, progress)
    try:
        if expected is not None and actual != expected:
            dest.unlink(missing_ok=True)  # an old copy that failed the same check
            err = ChecksumError(
                f"sha256 mismatch for {dest.name} from {url}: expected {expected}, got {actual}. "
                "The file may be corrupt or may have changed upstream: run again to retry; if it "
                "fails again and you trust the new file, remove its entry from checksums.json "
                f"(or pass sha256=None). The bad download was removed; {dest} was not written."
            )
            err.reason = (f"sha256 mismatch for {dest.name}: got {actual}, expected {expected} "
                          "(if you trust the new file, delete its entry from checksums.json)")
            raise err
        os.replace(tmp, dest)  # atomic on the same filesystem: dest is complete or absent
    finally:
        tmp.unlink(missing_ok=True)
    return actual


def download(
    url: str, dest: str | Path, *, sha256: str | None = None, progress: bool = True
) -> Path:
    """Download ``url`` (``http(s)://`` or ``file://``) to ``dest`` atomically.

    The bytes stream (with a tqdm bar) into a temporary file beside ``dest`` that is renamed to
    ``dest`` only when complete and, if ``sha256`` is given, verified; after any failure no partial
    file is left. If ``dest`` already exists it is kept when ``sha256`` is ``None`` or matches, and
    downloaded again otherwise. A mismatch raises :class:`ChecksumError` with both digests.
    """
    dest = Path(dest)
    _download(url, dest, sha256, progress)
    return dest


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------
def _check_member_path(name: str, archive: Path) -> PurePosixPath:
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or (len(norm) > 1 and norm[0].isalpha() and norm[1] == ":"):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} has an absolute path; refusing to extract"
        )
    if ".." in p.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} escapes the destination with '..'; "
                                 "refusing to extract")
    return p


def _inside(dest: Path, target: Path) -> bool:
    dest = dest.resolve()
    target = target.resolve()
    return target == dest or dest in target.parents


@contextlib.contextmanager
def _corrupt_as_archive_error(archive: Path) -> Iterator[None]:
    """Turn the errors of a damaged zip or tar into :class:`ArchiveError` naming ``archive``."""
    try:
        yield
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise ArchiveError(f"{archive} is corrupt ({type(e).__name__}: {e}) — replace it with a "
                           "good copy (a download: delete it and run again)") from e


def safe_extract(
    archive: str | Path, dest: str | Path, *, only: Callable[[str], bool] | None = None
) -> list[str]:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest``; return the member names.

    Every member is checked first, and nothing is written if one is unsafe: absolute paths,
    ``..`` components, and symbolic or hard links whose target lies outside ``dest`` raise
    :class:`UnsafeArchiveError` naming the member. Device files and FIFOs are refused too.
    ``only``: extract just the members whose name it accepts. A file that is not an archive, or a
    damaged one, raises :class:`ArchiveError` naming it.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if only is None or only(i.filename)]
            for info in infos:
                p = _check_member_path(info.filename, archive)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink entry
                    target = zf.read(info).decode("utf-8", "replace")
                    if target.startswith("/") or not _inside(dest, dest / p.parent / target):
                        raise UnsafeArchiveError(
                            f"{archive}: member {info.filename!r} is a link to {target!r} outside "
                            f"{dest}; refusing to extract")
            with _corrupt_as_archive_error(archive):  # zipfile checks each member's CRC
                zf.extractall(dest, members=infos)  # it writes link entries as small files
            return [i.filename for i in infos]
    if tarfile.is_tarfile(archive):
        with _corrupt_as_archive_error(archive), tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if only is None or only(m.name)]
            for m in members:
                p = _check_member_path(m.name, archive)
                if m.issym() or m.islnk():
                    base = dest / p.parent if m.issym() else dest
                    if m.linkname.startswith("/") or not _inside(dest, base / m.linkname):
                        raise UnsafeArchiveError(
                            f"{archive}: member {m.name!r} is a link to {m.linkname!r} outside "
                            f"{dest}; refusing to extract")
                elif not (m.isfile() or m.isdir()):
                    raise UnsafeArchiveError(
                        f"{archive}: member {m.name!r} is a device file or FIFO; "
                        "refusing to extract")
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.10.12 without extraction filters
                tf.extractall(dest, members=members)
            return [m.name for m in members]
    raise ArchiveError(f"{archive} is neither a zip nor a tar archive (an error page saved in its "
                       "place?) — replace it with a good copy (a download: delete it and run "
                       "again)")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    """One archive a dataset needs.

    ``urls``: where it lives, tried in order (the original first, then public mirrors; empty: no
    public link, see ``DatasetSpec.instructions``);
    ``sha256``: only when known from a trusted source (else recorded in ``checksums.json`` at the
    first download that extracts);
    ``pick``: extract only this file name (found anywhere in the archive) into the dataset folder;
    otherwise the archive goes into ``extract_to``, its single top-level folder stripped when
    ``strip_top`` (``Flicker8k_Dataset/x.jpg`` -> ``images/x.jpg``);
    ``md5``: a digest another project publishes for the same file (checked after each download,
    before extraction; a source whose copy differs is skipped);
    ``option``: the command-line option that takes a copy obtained by hand
    (``--captions-zip``, ``--images-archive``), ``None`` when only ``ROOT/downloads/`` does;
    ``what``: a few words on what it is, for the message that asks for it.
    """

    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None
    pick: str | None = None
    extract_to: str = "images"
    strip_top: bool = False
    md5: str | None = None
    option: str | None = None
    what: str = ""

    @property
    def url(self) -> str | None:
        """The first source, ``None`` when there is no public link."""
        return self.urls[0] if self.urls else None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: tuple[RemoteFile, ...]
    instructions: str = ""
    notes: tuple[str, ...] = ()


# Karpathy's split archive (dataset_{coco,flickr8k,flickr30k}.json). The original address was
# reported gone (404) in 2023; the Hugging Face copy is a re-upload by a third party (gpantaz),
# used as this file's source by other projects. Neither host publishes a checksum: what the first
# download that extracts gets is recorded in ROOT/checksums.json and checked on later downloads.
# (mlverse/torchvision (R) checks md5 4fa8c08369d22fe16e41dc124bd1adc2 for Stanford's original; not
# enforced here: whether the Hugging Face copy is byte for byte the same is not known.)
KARPATHY_ZIP_URL = "http://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
KARPATHY_ZIP_MIRRORS = (
    "https://huggingface.co/datasets/gpantaz/karpathy_split/resolve/main/caption_datasets.zip",
)


def _captions(name: str) -> RemoteFile:
    return RemoteFile("caption_datasets.zip", (KARPATHY_ZIP_URL, *KARPATHY_ZIP_MIRRORS),
                      pick=f"dataset_{name}.json", option="--captions-zip",
                      what=f"Karpathy's splits, the zip that holds dataset_{name}.json")


DATASETS: dict[str, DatasetSpec] = {
    "flickr8k": DatasetSpec("flickr8k", (
        _captions("flickr8k"),
        RemoteFile(  # the Illinois original needs a form; this copy is the one everyone uses
            "Flickr8k_Dataset.zip",
            ("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
             "Flickr8k_Dataset.zip",),
            strip_top=True, option="--images-archive", what="the 8,091 Flickr8k images, 1.1 GB",
            # the md5 that mlverse/torchvision (R) checks after downloading this same URL
            md5="f18a1e2920de5bd84dae7cf08ec78978",
        ),
    )),
    "flickr30k": DatasetSpec(
        "flickr30k",
        (_captions("flickr30k"),
         RemoteFile("flickr30k-images.tar.gz", (), strip_top=True, option="--images-archive")),
        instructions=(
            "Flickr30k images have no public direct link. Request them with the form at "
            "https://shannon.cs.illinois.edu/DenotationGraph/ (terms of use: research only), or "
            "take the 'flickr30k' image archive from a mirror you trust (e.g. Kaggle). Then run\n"
            "  python -m sat_core.data.download flickr30k --root ROOT --images-archive "
            "PATH/TO/flickr30k-images.tar.gz\n"
            "or put the 31,783 .jpg files yourself in ROOT/flickr30k/images/."
        ),
    ),
    "coco": DatasetSpec("coco", (
        _captions("coco"),
        RemoteFile("train2014.zip", ("http://images.cocodataset.org/zips/train2014.zip",),
                   what="the COCO 2014 training images, 13 GB"),
        RemoteFile("val2014.zip", ("http://images.cocodataset.org/zips/val2014.zip",),
                   what="the COCO 2014 validation images, 6 GB"),
    ), notes=("COCO train2014 + val2014 are about 19 GB of zips (and as much again unpacked).",)),
}


# --------------------------------------------------------------------------------------------
# Preparing a dataset
# --------------------------------------------------------------------------------------------
def _load_checksums(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ChecksumError(f"{path} is not valid JSON ({e}) — fix or delete it") from None
    if not isinstance(data, dict):
        raise ChecksumError(f"{path} should map file names to sha256 digests — fix or delete it")
    return data


def _save_checksums(path: Path, sums: dict[str, str]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(sums.items())), indent=2) + "\n")
    os.replace(tmp, path)


def _move_contents(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        target = dst / child.name
        if target.exists():
            if target.is_dir() and child.is_dir():
                _move_contents(child, target)
                continue
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        shutil.move(str(child), str(target))


def _done_name(spec_file: RemoteFile) -> str:
    """The marker file that says ``spec_file`` is extracted and in place."""
    return f".done-{spec_file.pick or spec_file.filename}"


def _extract_payload(archive: Path, spec_file: RemoteFile, stage: Path) -> str:
    """Extract ``archive`` into ``stage`` and arrange :data:`STAGE_PAYLOAD` as it will be placed;
    return the target path relative to the dataset folder."""
    raw = stage / "raw"
    payload = stage / STAGE_PAYLOAD
    if spec_file.pick is not None:
        safe_extract(archive, raw, only=lambda n: PurePosixPath(n).name == spec_file.pick)
        found = [p for p in raw.rglob(spec_file.pick) if p.is_file() and "__MACOSX" not in p.parts]
        if not found:
            raise ArchiveError(f"{archive} holds no file named {spec_file.pick} — replace it "
                               "with a good copy (a download: delete it and run again)")
        os.replace(found[0], payload)
    else:
        safe_extract(archive, raw)
        top = [p for p in raw.iterdir() if p.name != "__MACOSX"]
        src = top[0] if spec_file.strip_top and len(top) == 1 and top[0].is_dir() else raw
        if (src / "__MACOSX").exists():
            shutil.rmtree(src / "__MACOSX")
        os.replace(src, payload)
    if raw.exists():
        shutil.rmtree(raw)  # what was not picked, and __MACOSX
    return spec_file.pick or spec_file.extract_to


def _stage(archive: Path, spec_file: RemoteFile, ds_dir: Path) -> Path:
    """Extract ``archive`` into a new stage ``ds_dir/.extract-*`` and mark it complete last.

    On any failure (Ctrl-C included) the stage is removed; a stage left by a kill has no marker.
    """
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=ds_dir))
    try:
        target = _extract_payload(archive, spec_file, stage)
        marker = stage / f"{STAGE_MARKER}.tmp"
        marker.write_text(json.dumps({"target": target, "done": _done_name(spec_file)}))
        os.replace(marker, stage / STAGE_MARKER)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return stage


def _stage_info(stage: Path) -> dict[str, str] | None:
    """The marker of a complete stage, or ``None`` when its extraction did not finish."""
    try:
        info = json.loads((stage / STAGE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(info, dict) and all(isinstance(info.get(k), str) for k in ("target", "done"))
    return info if ok else None


def _commit_stage(stage: Path, ds_dir: Path) -> None:
    """Move a complete stage's payload into place, write its ``.done-`` marker, drop the stage.

    A new target is one rename; an existing folder is merged into (its other files are kept).
    Safe to repeat after a kill: what was moved already is not moved again.
    """
    info = _stage_info(stage)
    if info is None:
        raise RuntimeError(f"{stage} is not a complete extraction")  # pragma: no cover - a bug
    payload, target = stage / STAGE_PAYLOAD, ds_dir / info["target"]
    if payload.is_dir() and target.is_dir():
        _move_contents(payload, target)
    elif payload.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(payload, target)
    (ds_dir / info["done"]).touch()
    shutil.rmtree(stage)


def _recover_stages(ds_dir: Path) -> None:
    """Finish what an interrupted run left in ``ds_dir``: a complete stage is moved into place,
    an unfinished one (no marker) is deleted, so that its archive is extracted again."""
    for stage in sorted(ds_dir.glob(f"{STAGE_PREFIX}*")):
        if not stage.is_dir():
            continue
        if _stage_info(stage) is None:
            print(f"removing {stage}: an extraction that was interrupted (it is done again)",
                  file=sys.stderr)
            shutil.rmtree(stage)
        else:
            print(f"finishing {stage}: an extraction that was interrupted while being moved",
                  file=sys.stderr)
            _commit_stage(stage, ds_dir)


def _unpack(archive: Path, spec_file: RemoteFile, ds_dir: Path) -> None:
    """Extract ``archive`` into ``ds_dir`` all or nothing (stage, marker, move, ``.done-``)."""
    _commit_stage(_stage(archive, spec_file, ds_dir), ds_dir)


def _reason(err: BaseException, archive: Path) -> str:
    """What went wrong with one source, in a few words (for :class:`NoSourceLeft`)."""
    reason = getattr(err, "reason", None)  # set where the error is raised: already short
    text = reason or " ".join(str(err).split()).split(" — ")[0]  # what, not what to do
    text = str(text).replace(str(archive), archive.name)
    return text if reason or len(text) <= 160 else text[:157] + "..."


def _no_source_left(f: RemoteFile, root: Path, name: str,
                    failures: list[tuple[str, Exception]]) -> NoSourceLeft:
    """The one message for a file that no source gave: which file, where to put it."""
    archive = root / "downloads" / f.filename
    tried = "; ".join(f"{src}: {_reason(e, archive)}" for src, e in failures)
    how = f"run again with {f.option} PATH/TO/{f.filename}, or " if f.option else ""
    pick = f" (or {f.pick} itself in {root / name}/)" if f.pick else ""
    what = f" ({f.what})" if f.what else ""
    last = failures[-1][1]
    kind = next((k for k in (NoSourceLeftChecksum, NoSourceLeftArchive, NoSourceLeftUnsafe)
                 if isinstance(last, k.__bases__[1])), NoSourceLeft)
    err = kind(
        f"{f.filename}{what}: every source failed [{tried}] — get {f.filename} by hand (from one "
        f"of those addresses where there is internet, or a copy you trust) and {how}put it at "
        f"{archive}{pick}; the next run uses it without the network")
    err.reason = "every source failed"
    return err


def _obtain(f: RemoteFile, urls: Sequence[str], archive: Path, ds_dir: Path,
            expected: str | None, md5: str | None,
            progress: bool) -> tuple[str, list[tuple[str, Exception]]]:
    """Get ``f`` into ``archive`` and extract it into ``ds_dir``: a copy already in ``archive``
    first, then each of ``urls`` in order, until one extracts. A source that fails (network,
    sha256 ``expected`` or ``md5``, not an archive) is removed and the next one tried. Returns
    the sha256 of the one that worked and the failures before it (source, error); when no source
    is left, ``("", failures)`` (errors of the local disk and interruptions are raised)."""
    failures: list[tuple[str, Exception]] = []
    sources: list[str | None] = [None] if archive.exists() else []
    for url in [*sources, *urls]:
        try:
            if url is None:
                actual = sha256_file(archive, progress)
                if expected is not None and actual != expected:
                    raise ChecksumError(f"sha256 {actual}, expected {expected}")
            else:
                actual = _download(url, archive, expected, progress)
            if md5 is not None and (got := sha256_file(archive, algorithm="md5")) != md5:
                raise ChecksumError(f"md5 {got}, expected {md5}")
            _unpack(archive, f, ds_dir)
        except (DownloadError, ChecksumError, ArchiveError, UnsafeArchiveError) as e:
            failures.append((url or f"{archive} (already there)", e))
            archive.unlink(missing_ok=True)
            continue
        if failures:  # said after success only: offline, the one error line says it all
            tried = "; ".join(f"{src}: {_reason(e, archive)}" for src, e in failures)
            print(f"{f.filename}: from {url or archive}, after {tried}", file=sys.stderr)
        return actual, failures
    return "", failures


def _local_copies(captions_zip: str | Path | None,
                  images_archive: str | Path | None) -> dict[str, Path]:
    """``{option: path}`` for the files given on the command line (each must exist)."""
    given = {"--captions-zip": captions_zip, "--images-archive": images_archive}
    out = {}
    for option, path in given.items():
        if path is None:
            continue
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist — check the path given to {option}")
        out[option] = Path(path)
    return out


def _is_done(f: RemoteFile, ds_dir: Path) -> bool:
    """Whether ``f`` is already unpacked in ``ds_dir``: its done-marker is there or, for a file
    of which one member is picked (``pick``), that member is (e.g. a ``dataset_NAME.json`` put
    there by hand)."""
    by_hand = f.pick is not None and (ds_dir / f.pick).is_file()
    return by_hand or (ds_dir / _done_name(f)).exists()


def _placed_by_hand(f: RemoteFile, ds_dir: Path) -> bool:
    """Whether the folder ``f`` extracts to already holds something (a copy put there by hand)."""
    target = ds_dir / f.extract_to
    return target.is_dir() and any(target.iterdir())


def prepare_dataset(
    name: str,
    root: str | Path = "data",
    *,
    mirror: str | None = None,
    images_archive: str | Path | None = None,
    captions_zip: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Download and unpack dataset ``name`` into ``root/name`` (see the module docstring).

    Each file's sources (:data:`DATASETS`) are tried in order until one downloads and extracts;
    when none does, :class:`NoSourceLeft` says which file to obtain and where to put it.
    ``mirror``: a base URL (``http://...`` or ``file:///...``) that replaces every registry URL by
    ``mirror/<filename>`` (for an institutional mirror, or the tests). ``images_archive`` and
    ``captions_zip``: local copies (only read, never downloaded again), for Flickr30k's images or
    when offline. A ``dataset_NAME.json`` already in ``root/name`` counts as extracted. Downloads
    are verified against :data:`DATASETS` or against ``root/checksums.json``, where a download's
    sha256 is recorded once it was extracted. Unpacking is all or nothing and skipped when done;
    what an interrupted run left is finished or removed first. Returns ``root/name``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    local = _local_copies(captions_zip, images_archive)
    spec, root = DATASETS[name], Path(root)
    ds_dir, sums_path = root / name, root / "checksums.json"
    sums = _load_checksums(sums_path)
    if ds_dir.is_dir():
        _recover_stages(ds_dir)
    for note in spec.notes:
        print(note, file=sys.stderr)

    # Fail before downloading anything when a file can only be obtained by hand.
    for f in spec.files:
        if not (f.urls or f.option in local or mirror or _is_done(f, ds_dir)
                or _placed_by_hand(f, ds_dir)):
            raise ManualDownloadRequired(spec.instructions.replace("ROOT", str(root)))

    ds_dir.mkdir(parents=True, exist_ok=True)
    for f in (f for f in spec.files if not _is_done(f, ds_dir)):
        if f.option in local:  # given by hand: only read, its checksum not recorded
            _unpack(local[f.option], f, ds_dir)
            continue
        if not (f.urls or mirror):
            continue  # placed by hand (checked above)
        urls = [f"{mirror.rstrip('/')}/{f.filename}"] if mirror else f.urls
        md5 = None if mirror else f.md5  # published for the registry's URLs, not a mirror's
        actual, failures = _obtain(f, urls, root / "downloads" / f.filename, ds_dir,
                                   f.sha256 or sums.get(f.filename), md5, progress)
        if not actual:
            raise _no_source_left(f, root, name, failures) from failures[-1][1]
        if sums.get(f.filename) != actual:  # extracted: now trusted
            sums[f.filename] = actual
            _save_checksums(sums_path, sums)
    return ds_dir


@command(OSError)
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sat_core.data.download NAME``; a user error is one line, status 2."""
    parser = ArgumentParser(
        prog="python -m sat_core.data.download",
        description="Download a Karpathy-split dataset (captions JSON + images) into ROOT/NAME.",
    )
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--root", default="data", help="data folder (default: data)")
    parser.add_argument("--mirror", default=None,
                        help="base URL replacing the official ones (MIRROR/<archive name>)")
    parser.add_argument("--images-archive", default=None,
                        help="local archive of the images (needed for flickr30k)")
    parser.add_argument("--captions-zip", default=None,
                        help="local caption_datasets.zip (Karpathy's splits), e.g. when offline")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    check_writable_dir(Path(args.root), flag="--root")  # a file, or read-only: before any download
    try:
        path = prepare_dataset(args.dataset, args.root, mirror=args.mirror,
                               images_archive=args.images_archive, captions_zip=args.captions_zip,
                               progress=not args.no_progress)
    except ManualDownloadRequired as e:  # not a mistake: the steps to take, over several lines
        print(str(e), file=sys.stderr)
        return 2
    print(f"{args.dataset} ready in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
