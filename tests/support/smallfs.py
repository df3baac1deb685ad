"""Folders that fail to write the way real disks do: a full filesystem, a read-only one.

Root bypasses file modes (``chmod 0500`` does not stop it), so a read-only
folder has to be a read-only *mount*, and a full disk a filesystem of a few
kilobytes.  Both are tmpfs mounts made by the test and removed when it ends
(lazily, so a process still holding a file there cannot keep it mounted).

Needs root and ``mount``; :func:`mount_unavailable` says why not, for a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

MOUNT = shutil.which("mount")
UMOUNT = shutil.which("umount")


def mount_unavailable() -> str | None:
    """Why a test cannot mount a small filesystem here, or None."""
    if os.geteuid() != 0:
        return "needs root to mount a small tmpfs (a full disk, a read-only folder)"
    if MOUNT is None or UMOUNT is None:
        return "needs mount and umount (util-linux)"
    return None


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def small_filesystem(path: Path, size_bytes: int) -> Iterator[Path]:
    """``path`` (created) as a tmpfs of ``size_bytes``: writes past that fail with ENOSPC, as on a full disk."""
    path.mkdir(parents=True, exist_ok=True)
    assert MOUNT is not None and UMOUNT is not None
    _run(MOUNT, "-t", "tmpfs", "-o", f"size={max(4096, size_bytes)},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run([UMOUNT, "-l", str(path)], capture_output=True, timeout=30)


def fill(path: Path, leave_bytes: int = 0) -> None:
    """Fill the filesystem holding ``path`` until about ``leave_bytes`` are free (a file ``.filler`` holds the rest)."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with contextlib.suppress(OSError), open(path / ".filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """``path`` (created, with what it holds now) made read-only by a read-only bind mount of itself."""
    path.mkdir(parents=True, exist_ok=True)
    assert MOUNT is not None and UMOUNT is not None
    _run(MOUNT, "--bind", str(path), str(path))
    try:
        _run(MOUNT, "-o", "remount,bind,ro", str(path))
        yield path
    finally:
        subprocess.run([UMOUNT, "-l", str(path)], capture_output=True, timeout=30)
