"""One integrity layer for every file the course writes and reads back: checkpoints, saved incremental weights and
their label space, the feature and extractor cache, a training run's ``run.json``.

Two rules, the same everywhere:

* **Written whole or not at all.** :func:`atomic_write` writes a temporary file beside the target, flushes it to
  disk and renames it into place (``os.replace`` is atomic on POSIX and Windows), so a reader never sees a
  half-written file, even after ``kill -9``.
* **Read back only if unchanged.** After a directory of files is written, :func:`write_manifest` records the
  sha256 of each (``{relative path: sha256}``, a JSON file written last); :func:`verify` recomputes them before
  anything is loaded and raises :class:`IntegrityError` naming the first file that is missing or whose bytes
  changed. Orbax itself stores float arrays without a checksum (a flipped byte restores silently as other
  weights, measured in :mod:`course.checkpoint`), and ``numpy.load`` of a damaged ``.npz`` may succeed too.

JSON the course reads back (a manifest, ``run.json``, ``classes.json``) goes through :func:`read_json`: a missing,
empty or unparsable file is an :class:`IntegrityError` naming the file and saying what to do, never a bare
``JSONDecodeError``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable


class IntegrityError(ValueError):
    """A file the course wrote is missing, damaged or unreadable; the message names it and says what to do.
    ``path``: the file; ``problem``: "missing", "changed" (sha256 mismatch) or "unreadable"."""

    def __init__(self, message: str, path: Path | None = None, problem: str = "unreadable"):
        super().__init__(message)
        self.path, self.problem = path, problem


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def atomic_write(path: str | Path, content: bytes | Callable[[Any], None]) -> None:
    """Write ``path`` (``content``: bytes, or a function writing to a binary file object) into a temporary file
    beside it, then rename it into place, so that ``path`` holds either its old bytes or all the new ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys, written atomically."""
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: str | Path, fix: str = "") -> Any:
    """The JSON in ``path``; a missing, empty or unparsable file is an :class:`IntegrityError` naming it (and ending
    with ``fix``, what the reader should do, when given)."""
    path = Path(path)
    then = f"; {fix}" if fix else ""
    if not path.is_file():
        raise IntegrityError(f"{path} is missing{then}", path, "missing")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        what = "is empty" if path.stat().st_size == 0 else f"is not valid JSON ({e})"
        raise IntegrityError(f"{path} {what}{then}", path) from None


def sums(root: str | Path, files: Iterable[str | Path] | None = None) -> dict[str, str]:
    """``{path relative to root: sha256}`` of ``files`` (paths under ``root``), or of every file under ``root``."""
    root = Path(root)
    paths = sorted(root.rglob("*")) if files is None else [root / f for f in files]
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in paths if p.is_file()}


def write_manifest(manifest: str | Path, root: str | Path, files: Iterable[str | Path] | None = None) -> dict:
    """Record :func:`sums` of ``files`` under ``root`` (default: all of them) in the JSON file ``manifest``,
    atomically; write it after the files themselves, so a save cut short leaves no manifest that vouches for it."""
    digests = sums(root, files)
    write_json(manifest, digests)
    return digests


def verify(manifest: str | Path, root: str | Path, fix: str = "") -> dict[str, str]:
    """Check every file listed in the JSON file ``manifest`` (see :func:`check`) and return the listing; a missing or
    unreadable manifest is an :class:`IntegrityError` too."""
    then = f"; {fix}" if fix else ""
    listed = read_json(manifest, f"the files under {root} cannot be verified without it{then}")
    if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
        raise IntegrityError(f"{manifest} is not a sha256 manifest ({{file: sha256}}){then}", Path(manifest))
    check(root, listed, fix)
    return listed


def check(root: str | Path, listed: dict[str, str], fix: str = "") -> None:
    """Raise :class:`IntegrityError` naming the first file of ``listed`` (``{path under root: sha256}``) that is
    missing or whose bytes changed; its ``path`` and ``problem`` ("missing" or "changed") say which and how. The
    message ends with ``fix``, what to do about it, when given."""
    then = f"; {fix}" if fix else ""
    for name, digest in listed.items():
        path = Path(root) / name
        if not path.is_file():
            raise IntegrityError(f"{path} is missing{then}", path, "missing")
        if file_sha256(path) != digest:
            raise IntegrityError(f"{path} changed since it was saved (sha256 mismatch){then}", path, "changed")
