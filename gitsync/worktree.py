"""Apply file operations to a checkout without ever reaching outside it.

Every write, move, delete, directory change and commit read of a working tree goes
through this module. Paths are relative to the repository root and hostile: they come
from the Relay's folder index and from trees on the Git remote, and the working tree
itself may hold links someone planted.

Containment holds by construction, not by a check followed by a use: each operation
opens the repository root, then every directory of the path one segment at a time with
``O_DIRECTORY | O_NOFOLLOW`` relative to the directory opened before, and acts with the
``*at`` calls (``dir_fd=``) on the last directory it holds. A symbolic link or a file
where a directory is expected is refused, never followed; swapping a directory for a
link after the walk cannot redirect the operation, because it no longer uses names above
the directory it holds. The root itself is trusted (it comes from the configuration);
``.git`` is refused as a segment anywhere.

Nothing is ever replaced by accident: a new file is written to a temporary name in its
directory and renamed into place only with ``overwrite=True``, otherwise with
``RENAME_NOREPLACE`` (or a hard link, see :func:`_rename_noreplace`), and a move never
overwrites. Reads for a commit use ``O_NOFOLLOW`` and accept regular files only.

All functions are thread-safe: they share no state besides the file system.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from .plan import TMP_PREFIX

__all__ = [
    "Held",
    "PathRefused",
    "Reader",
    "TMP_PREFIX",
    "check",
    "delete_file",
    "lstat",
    "make_dirs",
    "move",
    "opened",
    "read_file",
    "remove_empty_dir",
    "write_file",
]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC
_WALK_FLAGS = _DIR_FLAGS | os.O_NOFOLLOW
_RENAME_NOREPLACE = 1  # linux/fs.h
_NOT_SUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}

StrPath = str | os.PathLike


class PathRefused(OSError):
    """An operation on a working-tree path was refused; nothing was done.

    ``errno`` says why: ``ELOOP`` a symbolic link is on the way (an ancestor, or the path
    itself where a link must not be read); ``ENOTDIR`` an ancestor is not a directory;
    ``EPERM`` the name is not acceptable (``.git``, ``..``, empty) or the path is neither
    a regular file nor a directory. ``path`` is the refused path, ``reason`` the why.
    """

    def __init__(self, path: str, reason: str, code: int = errno.EPERM):
        super().__init__(code, f"path {path!r} refused: {reason}")
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return str(self.strerror)


def _segments(rel: str) -> list[str]:
    """The segments of a repository-relative posix path, or PathRefused."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\0" in rel:
        raise PathRefused(str(rel), "not a relative path")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise PathRefused(rel, f"{part!r} is not a usable name")
        if part.rstrip(". ").lower() == ".git":
            raise PathRefused(rel, "'.git' is the repository's own directory")
    return parts


def _refusal(rel: str, dir_fd: int, name: str, shown: str) -> PathRefused:
    """Why ``name`` in ``dir_fd`` cannot be walked through, as a PathRefused."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return PathRefused(rel, f"{shown!r} cannot be opened as a directory", errno.ENOTDIR)
    if stat.S_ISLNK(st.st_mode):
        return PathRefused(
            rel, f"{shown!r} is a symbolic link, and links are never followed "
            "(they can lead outside the repository)", errno.ELOOP)
    return PathRefused(rel, f"{shown!r} is not a directory", errno.ENOTDIR)


def _open_nofollow(dir_fd: int, name: str, rel: str, shown: str) -> int:
    try:
        return os.open(name, _WALK_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _refusal(rel, dir_fd, name, shown) from None
        raise


def _open_dir(dir_fd: int, name: str, rel: str, shown: str, *, create: bool) -> int:
    """Open the directory ``name`` below ``dir_fd`` without following a link."""
    try:
        return _open_nofollow(dir_fd, name, rel, shown)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    except FileExistsError:
        pass  # made meanwhile: the open below checks what it is
    return _open_nofollow(dir_fd, name, rel, shown)


@contextmanager
def _walk(root: StrPath, parts: list[str], rel: str, *, create: bool) -> Iterator[int]:
    """A descriptor of the directory ``root/parts...``, each segment opened without links."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for depth, name in enumerate(parts):
            shown = "/".join(parts[: depth + 1])
            next_fd = _open_dir(fd, name, rel, shown, create=create)
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _parent(root: StrPath, rel: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """``(descriptor of the parent directory, last name)`` of ``rel``.

    Raises:
        PathRefused: a bad name, or a link or non-directory among the ancestors.
        FileNotFoundError: an ancestor is missing (and ``create`` is false).
    """
    parts = _segments(rel)
    with _walk(root, parts[:-1], rel, create=create) as fd:
        yield fd, parts[-1]


def check(root: StrPath, rel: str) -> None:
    """Refuse ``rel`` now if an operation on it would be refused (checked before acting).

    Lets a caller record intent (a path to commit) only for paths it may touch; the
    operation itself checks again, without a race. Missing ancestors are fine.

    Raises:
        PathRefused: a bad name, or a link or non-directory among the existing ancestors.
    """
    try:
        with _parent(root, rel):
            pass
    except FileNotFoundError:
        pass


def lstat(root: StrPath, rel: str) -> os.stat_result | None:
    """The ``lstat`` of ``rel`` (a link is not followed), or None when nothing is there.

    Raises:
        PathRefused: a bad name, or a link or non-directory among the ancestors.
    """
    try:
        with _parent(root, rel) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


@contextmanager
def open_file(root: StrPath, rel: str) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """The regular file ``rel`` opened for reading (never through a link), with its ``fstat``.

    Raises:
        FileNotFoundError: nothing is there (or an ancestor is missing).
        IsADirectoryError: ``rel`` is a directory.
        PathRefused: ``rel`` is a link or not a regular file (a FIFO, a device), or a
            link or non-directory is among its ancestors.
    """
    with _parent(root, rel) as (dir_fd, name), _open_regular(dir_fd, name, rel) as opened_file:
        yield opened_file


@contextmanager
def _open_regular(dir_fd: int, name: str, rel: str) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """:func:`open_file` in the directory ``dir_fd`` already walked to."""
    before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(before.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", rel)
    if stat.S_ISLNK(before.st_mode):
        raise PathRefused(rel, "it is a symbolic link, and links are never read", errno.ELOOP)
    if not stat.S_ISREG(before.st_mode):
        raise PathRefused(rel, "it is not a regular file")
    # O_NONBLOCK: a FIFO swapped in after the stat must not block the open.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathRefused(rel, "it became a symbolic link while being read", errno.ELOOP) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise PathRefused(rel, "it was replaced while being read")
        yield handle, st


def read_file(root: StrPath, rel: str) -> tuple[bytes, os.stat_result]:
    """The bytes and ``fstat`` of the regular file ``rel``, never read through a link.

    Raises: as :func:`open_file`.
    """
    with open_file(root, rel) as (handle, st):
        return handle.read(), st


class Reader:
    """Reads many files, walking to a directory once for a run of paths in it.

    For a commit of thousands of files: sorted by parent directory, the paths of one
    directory cost one walk between them instead of one each. The directory is held
    open only until a path of another directory comes (or :meth:`close`); the
    guarantees are those of :func:`read_file`. Use under the locks that keep the
    service's own moves out while it runs (a commit holds them).
    """

    def __init__(self, root: StrPath):
        self.root = root
        self._parent: tuple[str, ...] | None = None
        self._fd: int | None = None

    def read(self, rel: str) -> tuple[bytes, os.stat_result]:
        """As :func:`read_file`."""
        parts = _segments(rel)
        if not self._enter(parts, rel):
            return read_file(self.root, rel)  # the walk's error, named after this path
        assert self._fd is not None
        with _open_regular(self._fd, parts[-1], rel) as (handle, st):
            return handle.read(), st

    def lstat(self, rel: str) -> os.stat_result | None:
        """As :func:`lstat`."""
        parts = _segments(rel)
        if not self._enter(parts, rel):
            return lstat(self.root, rel)
        try:
            return os.stat(parts[-1], dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _enter(self, parts: list[str], rel: str) -> bool:
        """Hold the parent directory of ``parts``; False when the walk to it fails."""
        parent = tuple(parts[:-1])
        if parent != self._parent:
            self.close()
            try:
                with _walk(self.root, list(parent), rel, create=False) as fd:
                    self._fd = os.dup(fd)
            except OSError:
                return False
            self._parent = parent
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._parent = None, None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def hash_file(root: StrPath, rel: str) -> tuple[str, os.stat_result]:
    """sha256 (hex) of the regular file ``rel``, read in chunks (attachments can be large).

    Raises: as :func:`open_file`.
    """
    hasher = hashlib.sha256()
    with open_file(root, rel) as (handle, st):
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest(), st


def place_file(root: StrPath, staged: StrPath, rel: str, *, mode: int = 0o644,
               overwrite: bool = False) -> None:
    """Move ``staged``, a finished temporary file directly in ``root``, to ``rel``.

    For downloads streamed to disk: the same guarantees as :func:`write_file` (no link
    followed, nothing replaced unless ``overwrite``), without the bytes in memory.

    Raises:
        PathRefused: a bad name, or a link or non-directory among the ancestors.
        FileExistsError: something is at ``rel`` and ``overwrite`` is false.
    """
    staged_name = os.path.basename(os.fspath(staged))
    if os.path.dirname(os.path.abspath(os.fspath(staged))) != os.path.abspath(os.fspath(root)):
        raise ValueError("the staged file must be directly in the repository directory")
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        fd = os.open(staged_name, os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC, dir_fd=root_fd)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        with _parent(root, rel, create=True) as (dir_fd, name):
            if overwrite:
                os.replace(staged_name, name, src_dir_fd=root_fd, dst_dir_fd=dir_fd)
            else:
                _rename_noreplace(root_fd, staged_name, dir_fd, name)
    finally:
        os.close(root_fd)


def write_file(root: StrPath, rel: str, data: bytes, *, mode: int = 0o644, overwrite: bool = False,
               fsync: bool = True) -> os.stat_result:
    """Write ``data`` to ``rel`` atomically: readers see the old bytes or the new, never half.

    The bytes go to a temporary ``.gitsync-tmp-*.tmp`` file in the target's directory,
    then are renamed into place. Missing parent directories are created.

    Args:
        mode: permission bits of the file.
        overwrite: replace whatever file or link is at ``rel``. Without it, an existing
            entry makes the write fail: pass it only for a file the caller wrote.
        fsync: flush the file and its directory before returning (a state saved
            afterwards must not describe bytes a power cut could lose).

    Returns:
        The ``lstat`` of the written file.

    Raises:
        PathRefused: a bad name, or a link or non-directory among the ancestors.
        FileExistsError: something is at ``rel`` and ``overwrite`` is false.
        IsADirectoryError: a directory is at ``rel``.
    """
    with opened(root, rel, create=True) as at:
        at.write(data, mode=mode, overwrite=overwrite, fsync=fsync)
        st = at.lstat()
    if st is None:  # removed right after the rename: report it as the caller would see it
        raise FileNotFoundError(errno.ENOENT, "removed right after it was written", rel)
    return st


class Held:
    """The parent directory of one path, held open: several operations, one walk.

    From :func:`opened`. The engine looks at what is at a path, decides, then writes:
    with one walk for all three, a directory swapped for a link between them cannot
    redirect the write (it acts on the directory it holds), and the walk is paid once.
    """

    __slots__ = ("fd", "name", "rel")

    def __init__(self, fd: int, name: str, rel: str):
        self.fd, self.name, self.rel = fd, name, rel

    def lstat(self) -> os.stat_result | None:
        """The ``lstat`` of the path (a link is not followed), or None when nothing is there."""
        try:
            return os.stat(self.name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def read(self) -> tuple[bytes, os.stat_result]:
        """The bytes and ``fstat`` of the regular file there (see :func:`read_file`)."""
        with _open_regular(self.fd, self.name, self.rel) as (handle, st):
            return handle.read(), st

    def write(self, data: bytes, *, mode: int = 0o644, overwrite: bool = False, fsync: bool = True) -> None:
        """Write ``data`` atomically (see :func:`write_file`)."""
        tmp = f"{TMP_PREFIX}{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC, 0o600,
                     dir_fd=self.fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, mode)
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.replace(tmp, self.name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            else:
                _rename_noreplace(self.fd, tmp, self.fd, self.name)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except FileNotFoundError:
                pass
            raise
        if fsync:
            os.fsync(self.fd)


@contextmanager
def opened(root: StrPath, rel: str, *, create: bool = False) -> Iterator[Held]:
    """The parent directory of ``rel`` held open (walked without links) for several operations.

    Raises:
        PathRefused: a bad name, or a link or non-directory among the ancestors.
        FileNotFoundError: an ancestor is missing (and ``create`` is false).
    """
    with _parent(root, rel, create=create) as (fd, name):
        yield Held(fd, name, rel)


def move(root: StrPath, src: str, dst: str, *, fsync: bool = True) -> bool:
    """Rename the regular file ``src`` to ``dst``; never overwrites anything at ``dst``.

    Both paths are walked without following links; missing parents of ``dst`` are
    created. Returns False (and does nothing) when ``src`` is not a regular file: gone,
    a directory, or a link (a link is never moved into place).

    Raises:
        PathRefused: a bad name, or a link or non-directory among either path's ancestors.
        FileExistsError: something is at ``dst``.
    """
    try:
        with _parent(root, src) as (src_fd, src_name):
            try:
                st = os.stat(src_name, dir_fd=src_fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not stat.S_ISREG(st.st_mode):
                return False
            with _parent(root, dst, create=True) as (dst_fd, dst_name):
                try:
                    _rename_noreplace(src_fd, src_name, dst_fd, dst_name)
                except FileExistsError:
                    if not _same_file(src_fd, src_name, dst_fd, dst_name):
                        raise
                    # Both names are one file: a hard-link move interrupted before it
                    # removed the old name. Finish it.
                    os.unlink(src_name, dir_fd=src_fd)
                if fsync:
                    os.fsync(dst_fd)
                    os.fsync(src_fd)
            return True
    except FileNotFoundError:
        return False


def delete_file(root: StrPath, rel: str) -> bool:
    """Remove the regular file ``rel``; True when a file was removed.

    Nothing else is removed: a directory or a link at ``rel`` is left alone (False).

    Raises:
        PathRefused: a bad name, or a link or non-directory among the ancestors.
    """
    try:
        with _parent(root, rel) as (dir_fd, name):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return False
            os.unlink(name, dir_fd=dir_fd)
            return True
    except FileNotFoundError:
        return False


def make_dirs(root: StrPath, rel: str) -> os.stat_result:
    """Create the directory ``rel`` and its missing parents; returns its ``stat``.

    Raises:
        PathRefused: a bad name, or a link or non-directory at ``rel`` or above it.
    """
    with _walk(root, _segments(rel), rel, create=True) as fd:
        return os.fstat(fd)


def remove_empty_dir(root: StrPath, rel: str) -> bool:
    """Remove the directory ``rel`` if it is empty; True when removed.

    A non-empty directory (someone's files), a file or a link at ``rel``, or a path
    that cannot be reached is left alone (False).
    """
    try:
        with _parent(root, rel) as (dir_fd, name):
            os.rmdir(name, dir_fd=dir_fd)  # never follows a link at ``name``
            return True
    except OSError:
        return False


def _same_file(fd_a: int, name_a: str, fd_b: int, name_b: str) -> bool:
    try:
        a = os.stat(name_a, dir_fd=fd_a, follow_symlinks=False)
        b = os.stat(name_b, dir_fd=fd_b, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(a.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _renameat2() -> object | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_RENAMEAT2 = _renameat2()


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename ``src`` to ``dst`` (both in held directories), failing if ``dst`` exists.

    First choice: Linux ``renameat2(RENAME_NOREPLACE)``, atomic. Where the C library or
    the file system lacks it: ``link`` then ``unlink`` of the old name, which cannot
    replace either (``link`` fails on an existing name); a crash in between leaves two
    names for one file, which :func:`move` recognises and finishes. Where hard links
    are not supported either (some network or FAT file systems): a check for ``dst``
    then ``rename``, the only form with a window in which a file appearing at ``dst``
    could be replaced.

    Raises:
        FileExistsError: something is at ``dst``.
    """
    if _RENAMEAT2 is not None:
        rc = _RENAMEAT2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE)  # type: ignore[operator]
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in _NOT_SUPPORTED:
            raise OSError(err, os.strerror(err), dst)
    try:
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        try:
            os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            return
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from None
    os.unlink(src, dir_fd=src_fd)
