"""Opening a support bundle's files so that the bundle cannot reach outside itself or hold its
reader: only regular files and directories inside it, within the `Budget`.

Why every symbolic link is refused, not only those that leave the bundle: `kubectl cluster-info
dump` and `write_bundle` write none, so a link is a hand-made or hostile bundle; following one
that stays inside would mean resolving it and then opening the target, two steps that a change
in between defeats. Instead each path is walked one component at a time from a descriptor of
the bundle's directory: each directory is opened with O_DIRECTORY | O_NOFOLLOW (a link fails
with ELOOP, anything but a directory with ENOTDIR, neither is opened); the file itself is
lstat'ed first (a link, FIFO, device or socket is refused without being opened), then opened
with O_NOFOLLOW (a link swapped in meanwhile fails) and O_NONBLOCK (a FIFO swapped in does not
wait for a writer), and fstat must show the same regular file. The refusal says how to fix the
bundle: put the file itself in place of the link.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from flannel_bot.errors import BundleFileRefused
from flannel_bot.executors.bundle.limits import Budget, size

# bytes per read(2): a list file of up to 64 MiB in one read, as reading a 52 MB pods.json in
# 1 MiB chunks and joining them took 2.5 times as long (each byte copied twice, twice the fresh
# pages); the time budget is checked between reads
CHUNK = 64 << 20
LISTED = 4096  # entries of a directory listed at once; a larger one is looked up file by file
_ABSENT, _OTHER = -1, -2
_ROOT = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LINK_FIX = (
    "; flannel-bot reads only regular files inside the bundle: put the file itself in its "
    'place (cp --remove-destination "$(readlink -f F)" F)'
)
_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


@dataclass(frozen=True)
class Tail:
    """The end of a file: `data` is its last bytes, `size` its whole size."""

    data: bytes
    size: int

    @property
    def cut(self) -> bool:
        return self.size > len(self.data)


def _refused(rel: str, mode: int, subject: str = "it") -> BundleFileRefused:
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    if stat.S_ISLNK(mode):
        return BundleFileRefused(rel, f"{subject} is {kind}{_LINK_FIX}")
    return BundleFileRefused(rel, f"{subject} is {kind}, not a regular file")


class BundleFiles:
    """Reads of the files under `root` by relative path (`a/b/c`, components already checked
    against `SAFE_NAME` by the caller). Absent is None; a link or special file anywhere on the
    path, or a file over its limit, raises `BundleFileRefused`; other OS errors propagate."""

    def __init__(self, root: Path, budget: Budget) -> None:
        self.root = root
        self.budget = budget
        # the directory of the last file opened, kept open: a node's probe files are read one
        # after another from the same directory, and walking to it for each was most of their
        # cost (a descriptor opened by the same walk, so the same checks hold for it)
        self._parent: tuple[str, int] | None = None
        self._listing: tuple[str, dict[str, int] | None] | None = None
        self._parent_lock = threading.Lock()
        self._closer = weakref.finalize(self, _close_parent, self.__dict__)

    # -- directories ----------------------------------------------------------------------------

    def is_dir(self, rel: str) -> bool:
        """Whether `rel` is a directory of the bundle (a link to one is refused)."""
        fd = self._open_dir(rel)
        if fd is None:
            return False
        os.close(fd)
        return True

    def subdirs(self, rel: str, limit: int) -> tuple[list[str], list[str], bool]:
        """(directories, links and special files, whether there were more than `limit`
        entries) among the first `limit` entries of directory `rel` ("" is the bundle's own)."""
        dirs: list[str] = []
        odd: list[str] = []
        fd = self._open_dir(rel)
        if fd is None:
            return dirs, odd, False
        try:
            with os.scandir(fd) as entries:
                for seen, entry in enumerate(entries):
                    if seen == limit:
                        return dirs, odd, True
                    if entry.is_dir(follow_symlinks=False):
                        dirs.append(entry.name)
                    elif not entry.is_file(follow_symlinks=False):
                        odd.append(entry.name)
        finally:
            os.close(fd)
        return dirs, odd, False

    def has_entries(self, rel: str) -> bool:
        fd = self._open_dir(rel)
        if fd is None:
            return False
        try:
            with os.scandir(fd) as entries:
                return next(iter(entries), None) is not None
        finally:
            os.close(fd)

    # -- files ----------------------------------------------------------------------------------

    def read(self, rel: str, limit: int, what: str) -> bytes | None:
        """The whole file; refused if it is larger than `limit` (`what` names the kind of file
        in the refusal) or than what the budget has left."""
        if self.known_absent(rel):  # most of a node's .exit and .err files: nothing to time
            return None
        with self.budget.timed(rel):
            opened = self._open_file_sized(rel)
            if opened is None:
                return None
            fd, length = opened
            try:
                if length > limit:
                    raise BundleFileRefused(
                        rel, f"it is {size(length)}, over the {size(limit)} read from one {what}"
                    )
                self.budget.take_bytes(rel, length)
                data = self._read(rel, fd, length + 1)
            finally:
                os.close(fd)
            if len(data) > length:  # it grew since fstat: a file being written is not a record
                raise BundleFileRefused(rel, "it grew while it was read")
            return data

    def size(self, rel: str) -> int | None:
        """The size of regular file `rel` (lstat: nothing is opened); None if absent. A link
        or special file is refused as `read` refuses it."""
        folder, _, name = rel.rpartition("/")
        with self._parent_lock:
            parent = self._parent_of(folder)
            found = None if parent is None else _lstat(parent, name)
        if found is None:
            return None
        if not stat.S_ISREG(found.st_mode):
            raise _refused(rel, found.st_mode)
        return found.st_size

    def read_tail(self, rel: str, limit: int) -> Tail | None:
        """The file's last `limit` bytes (all of it when smaller)."""
        with self.budget.timed(rel):
            fd = self._open_file(rel)
            if fd is None:
                return None
            try:
                length = os.fstat(fd).st_size
                start = max(length - limit, 0)
                self.budget.take_bytes(rel, length - start)
                if start:
                    os.lseek(fd, start, os.SEEK_SET)
                return Tail(self._read(rel, fd, length - start), length)
            finally:
                os.close(fd)

    def _read(self, rel: str, fd: int, most: int) -> bytes:
        """Up to `most` bytes; a regular file's read that gives less than asked is at its
        end (most probe files: one read, not a second that gives nothing)."""
        parts: list[bytes] = []
        left = most
        while left > 0:
            if parts:  # the first read's time is checked by `timed`
                self.budget.check_time(rel)
            asked = min(CHUNK, left)
            chunk = os.read(fd, asked)
            if not chunk:
                break
            parts.append(chunk)
            left -= len(chunk)
            if len(chunk) < asked:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- walking without following links: each returns a descriptor the caller closes ------------

    def _open_dir(self, rel: str) -> int | None:
        """Directory `rel` ("" is the bundle's own); None if it or one on the way is absent or a
        regular file."""
        parts = rel.split("/") if rel else []
        fd = os.open(self.root, _ROOT)
        for depth, part in enumerate(parts, start=1):
            try:
                inner = self._enter(fd, part, rel, "/".join(parts[:depth]))
            finally:
                os.close(fd)
            if inner is None:
                return None
            fd = inner
        return fd

    def _open_file(self, rel: str) -> int | None:
        """Regular file `rel`; None if absent. lstat first: a link, FIFO, device or socket is
        refused without being opened."""
        opened = self._open_file_sized(rel)
        return None if opened is None else opened[0]

    def _open_file_sized(self, rel: str) -> tuple[int, int] | None:
        """`_open_file` with the file's size from the fstat that checks it."""
        folder, _, name = rel.rpartition("/")
        with self._parent_lock:
            parent = self._parent_of(folder)
            if parent is None:
                return None
            listing = self._listed(folder, parent)
            inode = None if listing is None else listing.get(name, _ABSENT)
            if inode == _ABSENT:  # not in the directory when it was listed
                return None
            if inode is None or inode == _OTHER:  # not listed, or not a regular file there
                found = _lstat(parent, name)
                if found is None:
                    return None
                if not stat.S_ISREG(found.st_mode):
                    raise _refused(rel, found.st_mode)
                inode = found.st_ino
            fd = _open_at(rel, name, parent, _FILE)
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                raise _refused(rel, opened.st_mode)
            if opened.st_ino != inode:
                raise BundleFileRefused(rel, "it was replaced while it was opened")
        except BaseException:
            os.close(fd)
            raise
        return fd, opened.st_size

    def _parent_of(self, folder: str) -> int | None:
        """Directory `folder`, from the one kept open when it is the same (under the lock)."""
        kept = self._parent
        if kept is not None and kept[0] == folder:
            return kept[1]
        fd = self._open_dir(folder)
        if kept is not None:
            os.close(kept[1])
        self._parent = None if fd is None else (folder, fd)
        self._listing = None
        return fd

    def known_absent(self, rel: str) -> bool:
        """Whether `rel` is absent from its directory as listed when a file of that directory
        was last read (False when not known): no call is made to find out."""
        folder, _, name = rel.rpartition("/")
        with self._parent_lock:
            kept, listing = self._parent, self._listing
            if kept is None or kept[0] != folder or listing is None or listing[0] != folder:
                return False
            return listing[1] is not None and name not in listing[1]

    def _listed(self, folder: str, fd: int) -> dict[str, int] | None:
        """The entries of the directory kept open, listed once with one read of it: name ->
        inode for a regular file, _OTHER for anything else. A file absent from it needs no
        call of its own (a node's probe directory lacks most .exit and .err files). None for a
        directory of more than LISTED entries: each file is then looked up as it is asked for."""
        if self._listing is not None and self._listing[0] == folder:
            return self._listing[1]
        names: dict[str, int] = {}
        with os.scandir(fd) as entries:
            for entry in entries:
                if len(names) == LISTED:
                    break
                regular = entry.is_file(follow_symlinks=False)
                names[entry.name] = entry.inode() if regular else _OTHER
            else:
                self._listing = (folder, names)
                return names
        self._listing = (folder, None)
        return None

    @staticmethod
    def _enter(fd: int, name: str, rel: str, here: str) -> int | None:
        """Directory `name` in `fd`, opened without following a link (one call: O_DIRECTORY
        fails on anything else without opening it); None if absent or a regular file."""
        try:
            return os.open(name, _DIR, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refused(rel, stat.S_IFLNK, "it" if here == rel else here) from None
            if exc.errno != errno.ENOTDIR:
                raise
        found = _lstat(fd, name)
        if found is None or stat.S_ISREG(found.st_mode):
            return None
        raise _refused(rel, found.st_mode, "it" if here == rel else here)


def _close_parent(state: dict[str, object]) -> None:
    kept = state.get("_parent")
    if isinstance(kept, tuple):
        os.close(kept[1])


def _lstat(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _open_at(rel: str, name: str, fd: int, flags: int) -> int:
    try:
        return os.open(name, flags, dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link put there after the lstat
            raise _refused(rel, stat.S_IFLNK) from None
        raise
