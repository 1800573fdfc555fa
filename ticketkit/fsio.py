"""Atomic file writes: temp file in the same directory, fsync, rename.

A reader (or a crash) never sees a half-written file: it sees the old file or the new one.
Errors from the filesystem (disk full, permissions) become one-line TicketkitErrors.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import TicketkitError


def _fs_error(path: Path, e: OSError) -> TicketkitError:
    if e.errno == errno.ENOSPC:
        return TicketkitError(f"disk full while writing {path}: free space or point --store elsewhere")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TicketkitError(f"permission denied writing {path}: make the store writable or use --store DIR")
    return TicketkitError(f"cannot write {path}: {e.strerror or e}")


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def public_mode(path: Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp create 0600/0700; give artifacts the usual umask modes so a shared store stays readable."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _fs_error(path, e) from None
    tmp = Path(tmp)
    try:
        yield tmp
        public_mode(tmp)  # after the writer: some (safetensors) re-create the file with 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _fs_error(path, e) from None
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        os_err = _wrapped_os_error(e)
        if os_err is not None:
            raise _fs_error(path, os_err) from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp dir beside `path`; on success rename it to `path` (swapping out an old one when overwrite).
    A reader never sees half a directory: the old one or the new one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        public_mode(tmp, directory=True)
    except OSError as e:
        raise _fs_error(path, e) from None
    try:
        yield tmp
        if overwrite and path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)  # left by a crash between the two renames below
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _fs_error(path, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _wrapped_os_error(e: BaseException) -> OSError | None:
    """Rust-backed writers (safetensors, tokenizers) report I/O failures as their own exception type with
    '(os error N)' in the message: recover the errno so disk-full still reads as disk-full."""
    import re

    if isinstance(e, TicketkitError) or not isinstance(e, Exception):
        return None
    m = re.search(r"os error (\d+)", str(e))
    return OSError(int(m.group(1)), os.strerror(int(m.group(1)))) if m else None


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_with(path, writer: Callable[[Path], None]) -> None:
    """For libraries that write to a path themselves (safetensors, matplotlib)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def open_regular(path):
    """Open `path` for reading only if it is a regular file: a FIFO (or a device) would block a reader forever, so
    it is opened without blocking and refused. Raises TicketkitError for those, FileNotFoundError when absent."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TicketkitError(f"{path} is not a regular file (a FIFO, device or directory): replace it with the "
                                 f"real file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def regular_file_problem(path, follow: bool = False) -> str | None:
    """Why `path` cannot be read as a plain file (a symlink, a FIFO...), or None (also when it does not exist).
    `follow`: judge a symlink by its target."""
    import stat

    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symlink: tickets hold plain files only"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file (a FIFO, device or directory): replace it with the real file"
    return None


def read_json(path) -> dict:
    path = Path(path)
    try:
        with open_regular(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise TicketkitError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TicketkitError(f"{path} is not valid JSON ({e}): the file is corrupt; re-create it") from None


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensors_digest(t: dict) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: a flipped bit anywhere changes it. Checkpoints and
    the encoded-data cache carry it in their safetensors metadata and are checked against it on load."""
    import torch

    h = hashlib.sha256()
    for k in sorted(t):
        v = t[k].contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()
