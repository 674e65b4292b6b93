"""Content hashes and atomic writes: every file funad writes for later reading goes through here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def json_digest(value: Any, algorithm: str = "sha256") -> str:
    """Hex digest of ``value`` as JSON with sorted keys: the same for equal values, whatever their key order."""
    return hashlib.new(algorithm, json.dumps(value, sort_keys=True).encode()).hexdigest()


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's content, read in chunks (large weights files stay out of memory)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def common_folder(paths: list[Path]) -> Path:
    """The deepest folder holding every one of ``paths`` (absolute paths, at least one)."""
    prefix = paths[0].parent.parts
    for path in paths[1:]:
        parts = path.parent.parts
        length = 0
        while length < min(len(prefix), len(parts)) and prefix[length] == parts[length]:
            length += 1
        prefix = prefix[:length]
    return Path(*prefix)


def refuse_existing_output(path: Path, *, overwrite: bool) -> None:
    """A FileExistsError for an output ``path`` that exists, unless ``overwrite``: a command never replaces
    earlier work the user did not ask it to."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists: pass --overwrite to replace it, or choose another --out")


def error_message(error: BaseException) -> str:
    """One line for a user: an OS error as "reason: file" (not "[Errno 13] Permission denied: 'file'"), any
    other error as it reads."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        return f"{error.strerror}: {error.filename}" + (f" -> {error.filename2}" if error.filename2 else "")
    return str(error)


def write_atomically(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write`` into a temporary sibling, flush it to disk, then rename it over ``target``.

    A reader (or a run killed mid-write) sees the old file or the new one, never half of one;
    the fsync makes sure the rename cannot reach the disk before the data.
    """
    temporary = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename == str(temporary):  # the user named the target
            error.filename, error.filename2 = str(target), None
        raise


def write_text_atomically(target: Path, text: str) -> None:
    """``text`` as UTF-8 into ``target``, through :func:`write_atomically`."""
    write_atomically(target, lambda handle: handle.write(text.encode()))


def read_versioned_json(path: Path, version: int, error: type[ValueError], *, kind: str,
                        advice: str) -> dict[str, Any]:
    """The JSON object in ``path`` when its ``format_version`` is ``version``.

    Anything else (unreadable, not JSON, another version) raises ``error`` naming the file, what is
    wrong with it, and ``advice`` on what to do.
    """
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{path}: unreadable {kind} ({problem}); {advice}") from problem
    found = value.get("format_version") if isinstance(value, dict) else None
    if found != version:
        raise error(f"{path}: {kind} format version {found!r}, but this funad reads {kind} format version "
                    f"{version} only; {advice}")
    manifest: dict[str, Any] = value
    return manifest


def write_directory_atomically(directory: Path, write: Callable[[Path], object]) -> Path:
    """``write`` a folder's files into a temporary sibling folder, then swap it in for ``directory``.

    An existing ``directory`` is replaced only once the new one is complete.
    """
    directory = directory.resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(staging)
        staging.chmod(0o777 & ~_UMASK)  # mkdtemp's 0700 would keep the folder from everyone else
        if directory.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
            os.replace(directory, retired / directory.name)
            os.replace(staging, directory)
            shutil.rmtree(retired)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _read_umask() -> int:
    """The process's file-creation mask, read once at import: reading it means setting it, for a moment."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
