"""Shard datasets read from URLs: ``pipe:`` templates, HTTP and ``memory://`` through fsspec.

Every transport is real (a shell command, an HTTP server on loopback, fsspec's memory filesystem);
batches must equal those read from the local folder, the cache must be reused (a warm setup hashes
no shard: each holds a verified stamp), and failed or corrupt downloads must leave nothing behind
under a shard's name. A dataset whose server is gone is read from the cached manifest.
"""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import torch
from fixtures_datamodule import manifest, synthetic_shards, write_manifest

from neurotrain.datamodules.format.manifest import manifest_hash
from neurotrain.datamodules.loading import remote
from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.remote import FetchError, resolve
from neurotrain.datamodules.loading.tar_index import CorruptShardError

WINDOWS_PER_SHARD = 40  # 2 segments of 20 s, 1 s windows


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 shards (one per subject), 2 samples each, all in ``train``."""
    return synthetic_shards(tmp_path_factory.mktemp("remote"), "rm", ["a", "b", "c"], seconds=40.0)


def read(dataset: str, cache: Path | None = None, **kwargs) -> tuple[ShardDataModule, list[dict]]:
    dm = ShardDataModule(
        [dataset], window_seconds=1.0, batch_size=8, cache_dir=str(cache) if cache else None, **kwargs
    )
    return dm, list(dm.train_dataloader())


@pytest.fixture(scope="module")
def local_batches(clean: Path) -> list[dict]:
    return read(str(clean))[1]


def assert_same(batches: list[dict], expected: list[dict]) -> None:
    assert len(batches) == len(expected) > 0
    for got, want in zip(batches, expected, strict=True):
        assert got["sample_id"] == want["sample_id"]
        assert torch.equal(got["signal"], want["signal"])
        assert torch.equal(got["channel_mask"], want["channel_mask"])


def pipe_cat(folder: Path) -> str:
    return f"pipe:cat {shlex.quote(str(folder))}/{{}}"


def leftovers(cache: Path) -> list[str]:
    """Temporary download files anywhere in the cache (``atomic_path``'s ``.<name>.*.tmp``, or ``*.part``)."""
    return [p.name for p in cache.rglob("*") if p.suffix in (".tmp", ".part")]


def cache_folder(url: str, cache: Path) -> Path:
    return resolve(url, cache).root


# ----------------------------------------------------------------------------- HTTP server
class Server:
    """``SimpleHTTPRequestHandler`` over a folder on loopback; counts GETs, can corrupt files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.gets: list[str] = []
        self.corrupt: set[str] = set()
        self.missing: set[str] = set()
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.gets.append(self.path.lstrip("/"))
                if self.path.lstrip("/") in outer.missing:
                    self.send_error(404)
                    return
                super().do_GET()

            def copyfile(self, source, outputfile) -> None:
                if self.path.lstrip("/") in outer.corrupt:
                    data = bytearray(source.read())
                    data[len(data) // 2] ^= 0xFF  # same size, different sha256
                    outputfile.write(bytes(data))
                else:
                    super().copyfile(source, outputfile)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def shard_gets(self) -> list[str]:
        return [p for p in self.gets if p.endswith(".tar")]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(clean: Path) -> Iterator[Server]:
    s = Server(clean)
    yield s
    s.close()


# ----------------------------------------------------------------------------- tests
def test_pipe_cat_matches_local(clean: Path, local_batches: list[dict], tmp_path: Path) -> None:
    url = pipe_cat(clean)
    dm, batches = read(url, tmp_path)
    assert_same(batches, local_batches)
    folder = cache_folder(url, tmp_path)
    assert folder.parent == tmp_path and len(folder.name) == 64  # sha256 of the URL
    shards = sorted(s["name"] for s in manifest(clean)["shards"])
    assert sorted(p.name for p in folder.glob("*.tar")) == shards
    assert all(str(s.path).startswith(str(folder)) for s in dm._segments["train"])
    # The normalisation table (what checkpoints keep) names the real source, not the cache.
    assert dm.normalization["datasets"][0]["path"] == url
    assert leftovers(tmp_path) == []


def test_only_the_splits_set_up_are_staged(clean: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    m = manifest(data)
    test_shard = m["shards"][2]["name"]
    m["shards"][2]["split"] = "test"
    write_manifest(data, m)
    url, cache = pipe_cat(data), tmp_path / "cache"
    dm = ShardDataModule([url], window_seconds=1.0, batch_size=8, cache_dir=str(cache))
    dm.setup("fit")
    folder = cache_folder(url, cache)
    staged = {p.name for p in folder.glob("*.tar")}
    assert len(staged) == 2 and test_shard not in staged
    dm.setup("test")
    assert (folder / test_shard).is_file() and len(dm._segments["test"]) == 2


def test_http_matches_local_and_reuses_cache(
    server: Server, local_batches: list[dict], tmp_path: Path
) -> None:
    _, batches = read(server.url, tmp_path)
    assert_same(batches, local_batches)
    assert sorted(server.shard_gets()) == sorted(s["name"] for s in manifest(server.folder)["shards"])
    assert server.gets.count("manifest.json") == 1
    # A second setup fetches the manifest again but takes every verified shard from the cache.
    _, again = read(server.url, tmp_path)
    assert_same(again, local_batches)
    assert len(server.shard_gets()) == 3 and server.gets.count("manifest.json") == 2
    # A cached shard that no longer matches the manifest is fetched again.
    folder = cache_folder(server.url, tmp_path)
    victim = sorted(folder.glob("*.tar"))[0]
    with open(victim, "r+b") as f:
        f.truncate(100)
    _, third = read(server.url, tmp_path)
    assert_same(third, local_batches)
    assert server.shard_gets().count(victim.name) == 2 and len(server.shard_gets()) == 4


def test_memory_filesystem(clean: Path, local_batches: list[dict], tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    root = f"/neurotrain-test-{uuid.uuid4().hex}"
    for f in clean.iterdir():
        if f.is_file():
            fs.pipe(f"{root}/{f.name}", f.read_bytes())
    try:
        _, batches = read(f"memory://{root}", tmp_path)
        assert_same(batches, local_batches)
    finally:
        fs.rm(root, recursive=True)


def test_corrupt_download_fails_or_is_skipped(server: Server, tmp_path: Path) -> None:
    victim = manifest(server.folder)["shards"][1]["name"]
    server.corrupt.add(victim)
    with pytest.raises(CorruptShardError, match=rf"shard {victim}: {server.url}{victim}: sha256"):
        read(server.url, tmp_path, on_corrupt="fail")
    dm, batches = read(server.url, tmp_path, on_corrupt="skip")
    assert dm.skipped == {"shards": [victim], "samples": 2}
    assert sum(len(b["sample_id"]) for b in batches) == 2 * WINDOWS_PER_SHARD
    folder = cache_folder(server.url, tmp_path)
    assert not (folder / victim).exists() and leftovers(tmp_path) == []
    assert len(list(folder.glob("*.tar"))) == 2
    # An HTTP error is a shard that cannot be used, like a corrupt one.
    server.corrupt.clear()
    server.missing.add(victim)
    with pytest.raises(CorruptShardError, match=rf"shard {victim}: {server.url}{victim}: not found"):
        read(server.url, tmp_path, on_corrupt="fail")
    assert not (folder / victim).exists() and leftovers(tmp_path) == []


def test_truncated_pipe_source(clean: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    victim = manifest(data)["shards"][0]["name"]
    with open(data / victim, "r+b") as f:
        f.truncate((data / victim).stat().st_size // 2)
    url, cache = pipe_cat(data), tmp_path / "cache"
    with pytest.raises(CorruptShardError, match=rf"shard {victim}: pipe:cat .*{victim}: \d+ bytes received"):
        read(url, cache, on_corrupt="fail")
    dm, batches = read(url, cache, on_corrupt="skip")
    assert dm.skipped == {"shards": [victim], "samples": 2}
    assert sum(len(b["sample_id"]) for b in batches) == 2 * WINDOWS_PER_SHARD
    assert not (cache_folder(url, cache) / victim).exists() and leftovers(cache) == []


def test_failing_pipe_commands(clean: Path, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"pipe:false manifest\.json: command exited with status 1"):
        read("pipe:false {}", tmp_path)
    missing = tmp_path / "nowhere"
    with pytest.raises(FetchError, match=rf"pipe:cat {missing}/manifest\.json: .*No such file"):
        read(f"pipe:cat {missing}/{{}}", tmp_path)
    with pytest.raises(ValueError, match=r"\{\} is replaced by each file name"):
        read(f"pipe:cat {clean}/manifest.json", tmp_path)
    # A shard the command cannot produce: a CorruptShardError naming the shard and the command.
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    victim = manifest(data)["shards"][2]["name"]
    (data / victim).unlink()
    with pytest.raises(CorruptShardError, match=rf"shard {victim}: pipe:cat {data}/{victim}: .*No such"):
        read(pipe_cat(data), tmp_path, on_corrupt="fail")
    assert leftovers(tmp_path) == []


def test_unknown_protocol_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nosuchproto://x"):
        read("nosuchproto://x/eeg", tmp_path)


def test_processes_staging_one_cache(clean: Path, tmp_path: Path) -> None:
    """DDP ranks set up at once: every process ends with the verified shards, nothing left over."""
    url = pipe_cat(clean)
    script = (
        "import sys, json\n"
        "from neurotrain.datamodules.loading.remote import resolve\n"
        "loc = resolve(sys.argv[1], sys.argv[2])\n"
        "m = json.loads(loc.manifest_path().read_text())\n"
        "print(json.dumps([str(loc.shard_path(e)) for e in m['shards']]))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    paths = {tuple(json.loads(o)) for o in outputs}
    assert len(paths) == 1
    for entry, path in zip(manifest(clean)["shards"], next(iter(paths)), strict=True):
        assert Path(path).read_bytes() == (clean / entry["name"]).read_bytes()
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- verified stamps
@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the cached shards ``remote`` hashes in full (a download is hashed as it streams)."""
    calls: list[str] = []
    real = remote.sha256_file

    def counting(path, *args, **kwargs) -> str:
        calls.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(remote, "sha256_file", counting)
    return calls


def flip_byte(path: Path) -> None:
    """Change one byte in the middle: same size, another sha256."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_warm_setup_hashes_no_shard(
    clean: Path, local_batches: list[dict], tmp_path: Path, hashed: list[str]
) -> None:
    url = pipe_cat(clean)
    _, batches = read(url, tmp_path)
    assert_same(batches, local_batches)
    folder = cache_folder(url, tmp_path)
    names = sorted(s["name"] for s in manifest(clean)["shards"])
    assert sorted(p.name for p in (folder / ".verified").iterdir()) == [f"{n}.json" for n in names]
    stamp = json.loads((folder / ".verified" / f"{names[0]}.json").read_text())
    st = (folder / names[0]).stat()
    assert stamp == {
        "name": names[0],
        "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "sha256": next(s["sha256"] for s in manifest(clean)["shards"] if s["name"] == names[0]),
    }
    assert hashed == []  # downloads are hashed as they stream, never read back
    _, again = read(url, tmp_path)
    assert_same(again, local_batches)
    assert hashed == []  # the warm setup trusted every stamp
    # A cache without stamps (written by an older version, or .verified/ deleted): each shard is
    # hashed once and stamped, then trusted.
    shutil.rmtree(folder / ".verified")
    read(url, tmp_path)
    assert sorted(hashed) == names
    hashed.clear()
    read(url, tmp_path)
    assert hashed == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "change,refetched",
    [
        ("touched", False),  # same bytes, new mtime: hashed, found good, stamped again
        ("rewritten", True),  # one byte changed in place: new mtime and ctime
        ("rewritten, mtime restored", True),  # os.utime moves the ctime, which nothing can set back
        ("replaced, mtime restored", True),  # another file put in its place: another inode
        ("stamp of another sha256", True),  # the stamp does not vouch for the manifest's sha256
    ],
)
def test_a_shard_changed_after_its_stamp_is_hashed_again(
    change: str,
    refetched: bool,
    server: Server,
    local_batches: list[dict],
    tmp_path: Path,
    hashed: list[str],
) -> None:
    """The rule: a cached shard is trusted unhashed only while ``os.stat`` gives the size, mtime_ns,
    ctime_ns and inode its stamp recorded and the stamp's sha256 is the manifest's. Any change
    made through the filesystem moves one of them, even with the mtime set back; a shard that
    fails the full check is fetched again."""
    cache = tmp_path / "cache"
    read(server.url, cache)
    folder = cache_folder(server.url, cache)
    victim = folder / manifest(server.folder)["shards"][1]["name"]
    before = victim.stat()
    time.sleep(0.05)  # past the filesystem's timestamp tick, so that a change gets a new ctime
    if change == "touched":
        os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    elif change.startswith("rewritten"):
        flip_byte(victim)
    elif change.startswith("replaced"):
        other = tmp_path / "other.tar"
        shutil.copyfile(victim, other)
        flip_byte(other)
        os.replace(other, victim)
    else:
        flip_byte(victim)  # and a stamp that vouches for these bytes, under another sha256
        stamp_file = folder / ".verified" / f"{victim.name}.json"
        stamp = json.loads(stamp_file.read_text())
        st = victim.stat()
        stamp.update(mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, sha256=remote.sha256_file(victim))
        stamp_file.write_text(json.dumps(stamp))
        hashed.clear()
    if "mtime restored" in change:
        os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = victim.stat()
    assert after.st_size == before.st_size
    assert "restored" not in change or after.st_mtime_ns == before.st_mtime_ns
    gets = len(server.shard_gets())
    _, batches = read(server.url, cache)
    assert_same(batches, local_batches)
    assert hashed == [victim.name]  # that shard alone was hashed in full
    assert server.shard_gets()[gets:] == ([victim.name] if refetched else [])
    hashed.clear()
    read(server.url, cache)
    assert hashed == [] and leftovers(cache) == []  # and stamped again


# ----------------------------------------------------------------------------- offline
@pytest.mark.parametrize("transport", ["http", "pipe"])
def test_a_dataset_whose_server_is_gone_loads_from_the_cached_manifest(
    transport: str,
    clean: Path,
    local_batches: list[dict],
    tmp_path: Path,
    hashed: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    cache = tmp_path / "cache"
    if transport == "http":
        http_server = Server(data)
        url = http_server.url
        try:
            read(url, cache)
        finally:
            http_server.close()  # the port refuses connections from now on
    else:
        url = pipe_cat(data)
        read(url, cache)
        data.rename(tmp_path / "gone")  # `cat` fails from now on
    caplog.set_level(logging.WARNING, logger=remote.__name__)
    _, batches = read(url, cache)
    assert_same(batches, local_batches)
    assert hashed == []  # offline, the stamps still spare the hashing
    cached = cache_folder(url, cache) / "manifest.json"
    (warning,) = [r for r in caplog.records if r.name == remote.__name__]
    message = warning.getMessage()
    assert warning.levelno == logging.WARNING
    assert message.startswith(f"{url}: cannot fetch manifest.json (")
    assert f"using the copy cached at {cached}, fetched {time.strftime('%Y-%m-%d')}T" in message
    # The flag a caller logs or records; the warning itself is said once per process.
    location = resolve(url, cache)
    assert not location.offline
    assert location.manifest()["_sha256"] == manifest_hash(clean)
    assert location.offline and location.offline_message == message
    assert len([r for r in caplog.records if r.name == remote.__name__]) == 1
    # With no cached manifest, it fails as before.
    with pytest.raises(FetchError, match=rf"^{url}: cannot fetch manifest\.json"):
        read(url, tmp_path / "empty-cache")


def test_a_fetched_manifest_clears_the_offline_flag(clean: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    url = pipe_cat(data)
    location = resolve(url, tmp_path / "cache")
    location.manifest()
    assert not location.offline
    data.rename(tmp_path / "away")
    location.manifest()
    assert location.offline
    (tmp_path / "away").rename(data)
    location.manifest()
    assert not location.offline and location.offline_message is None
