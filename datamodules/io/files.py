"""Writing and checking files: the one home of atomic writes and sha256 for every layer.

Everything that lands on disk is written under a temporary name in the same folder and then
renamed: a rename within one filesystem is atomic, so a reader sees either the old file or the
complete new one, never a partial write, and an interrupted write leaves nothing behind.

    with atomic_path(out) as tmp:          # a library that writes by path (safetensors, savefig)
        save_file(tensors, str(tmp))
    atomic_write_json(path, manifest)      # canonical JSON: sorted keys, equal content -> equal bytes
    atomic_write_text(path, html)
    sha256_file(path)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 1 << 22  # 4 MiB


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """A temporary path next to ``path``; renamed to ``path`` when the block ends without error.

    The file at ``path`` gets the mode a plain ``open`` gives a new file (``0o666 & ~umask``: 0644
    under umask 022), not ``tempfile.mkstemp``'s 0600: the temporary file is created with
    ``os.open(..., 0o666)``, so the kernel applies the umask (``os.umask`` is never called: it
    sets the mask of the whole process, a race with any other thread creating a file). A library
    that replaces the file with one of its own mode gets the created file's mode back before the
    rename. The temporary file is removed when the block raises; ``fsync`` flushes it to disk
    before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_temporary(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if stat.S_IMODE(tmp.stat().st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new empty file ``.<name>.<random>.tmp`` beside ``path`` (umask mode) and that mode."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any, *, sort_keys: bool = True, indent: int = 1, default: Any = None) -> str:
    """JSON text ending in a newline, NaN refused; sorted keys (the default) make it canonical,
    so equal content gives equal bytes. ``default`` converts values JSON has no type for."""
    text = json.dumps(
        obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False, default=default
    )
    return text + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps: Any) -> None:
    """Write ``obj`` as JSON (canonical unless ``dumps`` says otherwise, see `dumps_json`), atomically."""
    atomic_write_bytes(path, dumps_json(obj, **dumps).encode("utf-8"))
