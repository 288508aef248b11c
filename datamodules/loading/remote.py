"""Resolve a shard dataset location (local folder, fsspec URL or ``pipe:`` command) to a local folder.

The loader reads segments by byte offset with ``os.pread`` from local tar files (see
``tar_index``), so a remote dataset is first staged into a local cache, shard by shard, and then
read exactly like a local folder. A location is one of:

- a local path, or a ``file://`` path: used in place, nothing is copied;
- an fsspec URL (``http(s)://``, ``s3://``, ``gs://``, ``memory://``, anything
  ``fsspec.core.url_to_fs`` opens): the URL is the dataset folder, its files are
  ``URL/manifest.json`` and ``URL/<shard name>``;
- a ``pipe:`` command template in which ``{}`` stands for the file name, as in webdataset's
  ``pipe:`` URLs (a command whose stdout is the file): ``pipe:curl -fsS https://host/eeg/{}``,
  ``pipe:aws s3 cp s3://bucket/eeg/{} -``.

Cache: ``cache_dir`` (default ``io.cache.cache_root() / "shards"``, i.e.
``$NEUROTRAIN_CACHE/shards`` or ``~/.cache/neurotrain/shards``) / ``sha256(location)``.
``manifest.json`` is fetched again at every resolve (it is small, and says what the shards must
be) and read through ``format.manifest.load_manifest`` (schema version and shard names checked:
a name that is not a plain file name is refused before anything is fetched, so a server's manifest
never makes anything be written outside the cache folder). When it cannot be fetched
(``FetchError``: the network or the server is down, the command fails) and the cache holds the
``manifest.json`` of an earlier fetch, that copy is used: one ``logging`` warning per process
names the URL, the error and when the copy was fetched, and ``DatasetLocation.offline`` (with
``offline_message``) tells the caller; with no cached copy the ``FetchError`` is raised.

A shard is fetched when first needed, unless the cache already holds a file of the manifest's
byte size and sha256. That is known without reading the file again from its *verified stamp*,
``.verified/<name>.json`` in the cache folder (written atomically after a download or a full
check): the file's size, ``mtime_ns``, ``ctime_ns`` and inode number when it was verified, and its
sha256. A shard whose ``os.stat`` gives the stamp's four figures, and whose stamp's sha256 is the
manifest's, is trusted without hashing (so a warm setup reads no shard); on any difference (no
stamp, a new manifest sha256, the file rewritten, touched or replaced, the cache copied elsewhere)
it is hashed in full, stamped again when it matches, fetched again when not. What the stamp catches: every
change made through the filesystem. Writing a file or setting its mtime back (``os.utime``,
``touch -d``, ``cp -p``) moves its ``ctime``, which no call can set, and a file put in its place
has a new inode. What it cannot catch: bytes that change under the filesystem (media errors,
a raw write to the device) and a change made within the same filesystem timestamp tick (a few
milliseconds) as the stamp; deleting the cache folder's ``.verified/`` makes the next setup hash
every cached shard in full.

A download streams to a temporary file with a unique name in the cache folder
(``io.files.atomic_path``), is checked against the manifest's size and sha256, and only then
renamed to the shard's name (atomic), so the final name only ever holds a verified shard and
processes sharing the cache (DDP ranks) cannot corrupt it; a per-shard ``filelock.FileLock``,
where the filesystem allows one, keeps ranks on one machine from downloading the same shard twice.
A failed download (command exiting non-zero, HTTP error, wrong size or sha256) raises
``CorruptShardError`` naming the URL and the shard, and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

from neurotrain.datamodules.format.manifest import (
    MANIFEST,
    ManifestError,
    load_manifest,
    manifest_hash,
    shard_path,
)
from neurotrain.datamodules.io.cache import cache_root
from neurotrain.datamodules.io.files import (
    CHUNK,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    sha256_file,
)
from neurotrain.datamodules.loading.tar_index import CorruptShardError

log = logging.getLogger(__name__)

_SOURCE = "source.txt"  # in each cache folder: the URL it caches, for people
_STAMPS = ".verified"  # in each cache folder: <shard name>.json, a verified stamp per shard
_STAMP_KEYS = ("bytes", "mtime_ns", "ctime_ns", "inode")  # what os.stat must still give
_warned_offline: set[tuple[str, str, int]] = set()  # (url, cached manifest, its mtime_ns) warned of


class FetchError(OSError):
    """A file of a remote dataset could not be fetched; the message names the URL."""


def default_cache_dir() -> Path:
    """``cache_root() / "shards"``: ``$NEUROTRAIN_CACHE/shards``, else ``~/.cache/neurotrain/shards``."""
    return cache_root() / "shards"


def is_remote(location: str) -> bool:
    """True for ``pipe:`` templates and URLs other than ``file://``."""
    return location.startswith("pipe:") or ("://" in location and not location.startswith("file://"))


def resolve(location: str, cache_dir: str | os.PathLike | None = None) -> DatasetLocation:
    """The ``DatasetLocation`` for a dataset string (raises ``ValueError`` for a malformed one)."""
    location = str(location)
    if not is_remote(location):
        return DatasetLocation(location, Path(location.removeprefix("file://")), None)
    if location.startswith("pipe:"):
        transport: _Transport = _Pipe(location)
    else:
        transport = _Fsspec(location)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return DatasetLocation(location, root / hashlib.sha256(location.encode()).hexdigest(), transport)


class DatasetLocation:
    """Where a dataset is (``url``, as given) and the local folder it is read from (``root``).

    For a local dataset ``root`` is the folder itself; for a remote one it is the cache folder,
    filled by ``manifest_path()`` and ``shard_path()``.
    """

    def __init__(self, url: str, root: Path, transport: _Transport | None) -> None:
        self.url = url
        self.root = root
        self._transport = transport
        self.offline_message: str | None = None

    @property
    def offline(self) -> bool:
        """True when the last ``manifest_path()`` could not fetch the manifest and used the cached
        copy (``offline_message`` says why, and when that copy was fetched)."""
        return self.offline_message is not None

    @property
    def remote(self) -> bool:
        return self._transport is not None

    def manifest_path(self) -> Path:
        """Local path of ``manifest.json``; for a remote dataset fetched again.

        When the fetch fails and the cache holds an earlier copy, that copy's path is returned,
        ``offline`` is set and a warning is logged (once per process and copy); with no copy,
        ``FetchError`` is raised naming the URL.
        """
        path = self.root / MANIFEST
        if self._transport is None:
            return path
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            _download(self._transport, MANIFEST, path, None, None)
        except FetchError as err:
            try:
                cached = path.stat()
            except FileNotFoundError:
                raise FetchError(f"{self.url}: cannot fetch {MANIFEST} ({err})") from err
            when = datetime.datetime.fromtimestamp(cached.st_mtime).astimezone()
            self.offline_message = (
                f"{self.url}: cannot fetch {MANIFEST} ({err}); using the copy cached at {path}, "
                f"fetched {when.isoformat(timespec='seconds')}, which may be out of date"
            )
            key = (self.url, str(path), cached.st_mtime_ns)
            if key not in _warned_offline:
                _warned_offline.add(key)
                log.warning("%s", self.offline_message)
            return path
        self.offline_message = None
        source = self.root / _SOURCE  # which URL this hashed folder caches, for people
        if not source.is_file():
            atomic_write_bytes(source, f"{self.url}\n".encode())
        return path

    def manifest(self) -> dict[str, Any]:
        """The dataset's manifest, schema version checked, with ``"_sha256"`` (of the file) added.

        Raises ``ManifestError`` naming the file (and, for a remote dataset, its URL) when the
        manifest is missing, unreadable or of a schema this version does not know.
        """
        path = self.manifest_path()
        if not path.is_file():
            raise ManifestError(f"{path}: no manifest; is {self.url} a folder written by `neurotrain shard`?")
        try:
            manifest = load_manifest(path)
        except ManifestError as err:
            if not self.remote:
                raise
            raise ManifestError(f"{self.url}: {err}") from err
        manifest["_sha256"] = manifest_hash(path)
        return manifest

    def shard_path(self, entry: dict[str, Any]) -> Path:
        """Local path of the shard of manifest entry ``entry``, staged first for a remote dataset.

        Raises ``CorruptShardError`` naming the URL and the shard when it cannot be fetched or
        does not match the entry's ``bytes`` and ``sha256``, and ``ManifestError`` when the name is
        not a plain file name that stays inside the dataset folder (or, for a remote dataset, the
        cache folder: nothing is ever written outside ``cache_dir``), see ``format.manifest``.
        """
        if self._transport is None:
            return shard_path(self.root, entry)
        name = entry.get("name")
        if name == _SOURCE:
            raise ManifestError(
                f"{self.url}: shard {name!r} of the manifest: a name the cache keeps for itself"
            )
        try:
            path = shard_path(self.root, entry)  # a plain name, staying inside the cache folder
        except ManifestError as err:
            raise ManifestError(f"{self.url}: {err}") from err
        size, sha = entry.get("bytes"), entry.get("sha256")
        stamp = self.root / _STAMPS / f"{name}.json"
        checked = _stat_id(path)
        if _matches(path, size, sha, stamp):
            return path
        with _shard_lock(self.root / ".locks" / f"{name}.lock"):
            # Checked again only when another process put a file there while we waited.
            if _stat_id(path) != checked and _matches(path, size, sha, stamp):
                return path
            try:
                _download(self._transport, name, path, size, sha)
            except FetchError as err:
                raise CorruptShardError(f"shard {name}: {err}") from err
            if sha:
                _write_stamp(stamp, path, sha)
        return path


# ----------------------------------------------------------------------------- transports
class _Transport:
    url: str

    def describe(self, name: str) -> str:
        """How errors name the file ``name`` (its URL, or the command that prints it)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def open(self, name: str, size: int | None) -> Iterator[IO[bytes]]:
        raise NotImplementedError
        yield  # pragma: no cover


class _Pipe(_Transport):
    """``pipe:CMD``: ``CMD`` with ``{}`` replaced by the (shell-quoted) file name prints the file."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.template = url.removeprefix("pipe:")
        if "{}" not in self.template:
            raise ValueError(
                f"{url}: a pipe: dataset is a command template in which {{}} is replaced by each file "
                "name (manifest.json, then the shards), e.g. 'pipe:curl -fsS https://host/eeg/{}' or "
                "'pipe:aws s3 cp s3://bucket/eeg/{} -'; its stdout must be the file"
            )

    def command(self, name: str) -> str:
        return self.template.replace("{}", shlex.quote(name))

    def describe(self, name: str) -> str:
        return f"pipe:{self.command(name)}"

    @contextlib.contextmanager
    def open(self, name: str, size: int | None) -> Iterator[IO[bytes]]:
        with tempfile.TemporaryFile() as err:  # a file, not a pipe: stderr cannot block the command
            proc = subprocess.Popen(self.command(name), shell=True, stdout=subprocess.PIPE, stderr=err)
            assert proc.stdout is not None
            try:
                yield proc.stdout
            except BaseException:
                proc.kill()
                raise
            finally:
                proc.stdout.close()
                code = proc.wait()
            if code != 0:
                err.seek(0)
                tail = err.read()[-2000:].decode("utf-8", "replace").strip()
                raise FetchError(f"command exited with status {code}" + (f": {tail}" if tail else ""))


class _Fsspec(_Transport):
    """An fsspec URL of the dataset folder; files are ``URL/<name>``."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        try:
            self.fs, path = fsspec.core.url_to_fs(url)
        except ImportError as err:
            raise ValueError(f"{url}: fsspec needs an extra package for this protocol: {err}") from err
        except ValueError as err:
            raise ValueError(
                f"{url}: not a local path, a pipe: template or a URL fsspec opens ({err})"
            ) from err
        self.base = path.rstrip("/")

    def path(self, name: str) -> str:
        return f"{self.base}/{name}"

    def describe(self, name: str) -> str:
        return self.fs.unstrip_protocol(self.path(name))

    @contextlib.contextmanager
    def open(self, name: str, size: int | None) -> Iterator[IO[bytes]]:
        kwargs: dict[str, Any] = {}
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if {"http", "https"} & set(protocols):
            # A streaming response: one GET, no range requests (which not every server honours),
            # and with the size known, no HEAD request first.
            kwargs = {"block_size": 0, **({"size": size} if size else {})}
        with self.fs.open(self.path(name), "rb", **kwargs) as f:
            yield f


# ----------------------------------------------------------------------------- staging
def _matches(path: Path, size: int | None, sha: str | None, stamp: Path) -> bool:
    """``path`` exists with the expected size and sha256 (those the manifest gives).

    Trusted without reading it when its verified ``stamp`` holds ``sha`` and what ``os.stat``
    gives now; otherwise hashed in full, and stamped when it matches.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if size is not None and st.st_size != size:
        return False
    if not sha:
        return path.is_file()
    if _read_stamp(stamp) == {**_file_id(st), "sha256": sha}:
        return True
    if sha256_file(path) != sha:
        return False
    _write_stamp(stamp, path, sha, st)  # the stat from before the hash: a change while hashing shows
    return True


def _stat_id(path: Path) -> dict[str, int] | None:
    """``_file_id`` of ``path`` now, or None when there is no such file."""
    try:
        return _file_id(path.stat())
    except FileNotFoundError:
        return None


def _file_id(st: os.stat_result) -> dict[str, int]:
    """What a verified stamp keeps of ``os.stat``: any write, ``utime`` or replacement changes it."""
    return dict(zip(_STAMP_KEYS, (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino), strict=True))


def _read_stamp(stamp: Path) -> dict[str, Any] | None:
    """The stamp's figures and sha256, or None (no stamp, or one that cannot be read)."""
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {key: data.get(key) for key in (*_STAMP_KEYS, "sha256")}


def _write_stamp(stamp: Path, path: Path, sha: str, st: os.stat_result | None = None) -> None:
    """Record that ``path`` (as ``st``, default: now) was verified to have sha256 ``sha``.

    Best effort: a cache that cannot hold the stamp only means the next setup hashes the shard.
    """
    try:
        st = st or path.stat()
        atomic_write_json(stamp, {"name": path.name, **_file_id(st), "sha256": sha})
    except OSError as err:
        log.debug("%s: no verified stamp written (%s)", stamp, err)


def _download(transport: _Transport, name: str, dest: Path, size: int | None, sha: str | None) -> None:
    """Stream ``name`` to a temporary file next to ``dest`` (``atomic_path``: a unique name per
    call, so processes sharing the cache never write the same file), check ``size`` and ``sha``,
    then rename it to ``dest``; raise ``FetchError`` naming the URL (temporary file removed)."""
    where = transport.describe(name)
    with atomic_path(dest) as tmp:  # fsynced, then renamed; removed when this block raises
        h = hashlib.sha256()  # hashed as it is written: the file is not read a second time
        got = 0
        with open(tmp, "wb") as out:
            try:
                with transport.open(name, size) as src:
                    while block := src.read(CHUNK):
                        got += len(block)
                        if size is not None and got > size:
                            raise FetchError(f"more than the {size} bytes the manifest gives")
                        h.update(block)
                        out.write(block)
            except FetchError as err:
                raise FetchError(f"{where}: {err}") from err
            except Exception as err:  # fsspec, aiohttp and OS errors all mean: not fetched
                detail = "not found" if isinstance(err, FileNotFoundError) else type(err).__name__
                detail += "" if where in str(err) or not str(err) else f": {err}"
                raise FetchError(f"{where}: {detail}") from err
        if size is not None and got != size:
            raise FetchError(f"{where}: {got} bytes received, the manifest says {size}")
        if sha and h.hexdigest() != sha:
            raise FetchError(f"{where}: sha256 {h.hexdigest()} differs from the manifest's {sha}")


@contextlib.contextmanager
def _shard_lock(path: Path) -> Iterator[None]:
    """Hold ``filelock.FileLock(path)`` while one shard is staged, where the filesystem allows.

    The lock is ``flock`` where the filesystem has it; where it has not, filelock >= 4 falls
    back to its own soft lock (a marker file, stale ones recovered). Where no lock can be had
    (the lock file cannot be created, ``flock`` fails, or filelock < 4 on a filesystem without
    ``flock``, which raises ``NotImplementedError``), staging goes on unlocked: the unique
    temporary names and the atomic rename keep the cache consistent either way, the lock only
    keeps processes on one machine from fetching the same shard twice.
    """
    lock: FileLock | None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        lock.acquire()
    except (OSError, NotImplementedError):
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
