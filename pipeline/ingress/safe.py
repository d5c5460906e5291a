"""Reading the watched folder safely: nothing here follows a link, waits on a pipe or reads more than
a cap. The folder is a trust boundary (anyone who can write into it can start jobs), so everything read
from it goes through these functions."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import DropRefused, RetryableError
from pipeline.submit import too_large, what_it_is

MAX_FOLDER_ENTRIES = 200
"""Files and subfolders a dropped folder may hold (a job takes one voice and at most 32 avatars)."""
LINK_HINT = "copy the file itself into the folder instead of linking to it"
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def entries_in(folder: Path) -> Iterator[Path]:
    """The entries directly inside ``folder`` (not hidden), whatever their kind."""
    with os.scandir(folder) as it:
        for entry in it:
            if not entry.name.startswith("."):
                yield Path(entry.path)


def walk(folder: Path, name: str) -> list[Path]:
    """The regular files in a dropped folder (hidden ones skipped); ``DropRefused`` for a link, a pipe, a
    device or a socket inside it, or for more than ``MAX_FOLDER_ENTRIES`` entries."""
    files: list[Path] = []
    pending, seen = [folder], 0
    while pending:
        with os.scandir(pending.pop()) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                seen += 1
                if seen > MAX_FOLDER_ENTRIES:
                    raise DropRefused(
                        f"folder {name} holds more than {MAX_FOLDER_ENTRIES} files: a job takes one voice "
                        "clip and at most 32 avatars",
                        code="folder_too_many",
                    )
                mode = entry.stat(follow_symlinks=False).st_mode
                shown = f"{name}/{Path(entry.path).relative_to(folder)}"
                if stat.S_ISLNK(mode):
                    raise DropRefused(
                        f"{shown} is a link, and links are not taken: {LINK_HINT}", code="inbox_link"
                    )
                if stat.S_ISDIR(mode):
                    pending.append(Path(entry.path))
                elif (kind := what_it_is(mode)) is not None:
                    raise DropRefused(
                        f"{shown} is {kind}, not a file: put only files into the folder",
                        code="inbox_not_a_file",
                    )
                else:
                    files.append(Path(entry.path))
    return sorted(files)


def sizes(path: Path) -> dict[str, int]:
    """What the entry looks like now (names and sizes, by lstat), to see when it stops changing."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            return {path.name: st.st_size, "mode": st.st_mode}
        sizes = {}
        for count, (root, dirs, names) in enumerate(os.walk(path)):  # os.walk never follows links
            for item in [*dirs, *names]:
                item_path = os.path.join(root, item)
                sizes[item_path] = os.lstat(item_path).st_size
            if count > MAX_FOLDER_ENTRIES or len(sizes) > MAX_FOLDER_ENTRIES:
                break
        return sizes
    except OSError:
        return {"unreadable": -1}


def _open_regular(path: Path, shown: str) -> tuple[int, os.stat_result]:
    """An fd of ``path`` opened without following a link or waiting on a pipe, checked on the fd to be
    a regular file (so nothing swapped in after an lstat gets read); ``DropRefused`` otherwise."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DropRefused(
                f"{shown} is a link, and links are not taken: {LINK_HINT}", code="inbox_link"
            ) from None
        if exc.errno == errno.ENOENT:
            raise RetryableError(f"{shown} disappeared while it was being taken", defer=1.0) from None
        raise DropRefused(
            f"{shown} cannot be read ({exc.strerror}): check its permissions", code="inbox_unreadable"
        ) from None
    st = os.fstat(fd)
    kind = what_it_is(st.st_mode)
    if kind is not None:
        os.close(fd)
        raise DropRefused(f"{shown} is {kind}, not a file: drop the file itself", code="inbox_not_a_file")
    return fd, st


def read_small(path: Path, limit: int) -> bytes:
    """A small file's bytes (a spec), read safely; ``DropRefused`` when larger than ``limit``."""
    fd, st = _open_regular(path, path.name)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DropRefused(
            f"job spec {path.name} is {st.st_size // 1024} KB; a spec is a small JSON or YAML file",
            code="spec_too_large",
        )
    return data


def copy_regular(src: Path, dst: Path, limit: int, shown: str) -> None:
    """Copy a regular file (never a link, pipe or device) of at most ``limit`` bytes to ``dst``."""
    fd, st = _open_regular(src, shown)
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise DropRefused(too_large(shown, st.st_size, limit), code="file_too_large")
        copied = 0
        with dst.open("wb") as out:
            while chunk := f.read(1024 * 1024):
                copied += len(chunk)
                if copied > limit:
                    raise DropRefused(too_large(shown, copied, limit), code="file_too_large")
                out.write(chunk)
