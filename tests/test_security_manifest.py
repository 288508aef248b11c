"""A hostile ``manifest.json``: shard names that leave the dataset folder, impossible sample counts.

Every traversal below points at a real copy of a shard outside the folder, with the manifest's
size and sha256, so code that followed the name would succeed (``inspect --verify`` would report
"verified"): each must instead be refused naming the manifest entry, by ``inspect``, by
``ShardDataModule.setup`` and by ``fit``, and a remote manifest must not make anything be
written outside the cache.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import uuid
from pathlib import Path

import fsspec
import pytest
from fixtures_datamodule import manifest, synthetic_shards, write_manifest

from neurotrain.datamodules.format.manifest import ManifestError, shard_name_problem
from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.remote import resolve
from neurotrain.train.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"
TRAVERSALS = ["../x.tar", "a/../../x.tar", "ABSOLUTE"]  # ABSOLUTE: a path under tmp_path


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 shards (one per subject), 2 samples each, all in ``train``."""
    return synthetic_shards(tmp_path_factory.mktemp("sec"), "sec", ["a", "b"], seconds=40.0)


def tampered(clean: Path, tmp_path: Path, name: str) -> tuple[Path, str]:
    """A copy of ``clean`` at ``tmp_path/data/ds`` whose first entry is renamed ``name``, and that
    name; the file the name leads to (outside the folder) is a byte-exact copy of the shard."""
    ds = tmp_path / "data" / "ds"
    shutil.copytree(clean, ds)
    (ds / "a").mkdir()  # so that a/../../x.tar resolves on POSIX
    m = manifest(ds)
    shard = ds / m["shards"][0]["name"]
    if name == "ABSOLUTE":
        name = str(tmp_path / "elsewhere" / "x.tar")
    target = Path(name) if Path(name).is_absolute() else ds / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shard, target)
    m["shards"][0]["name"] = name
    write_manifest(ds, m)
    return ds, name


@pytest.mark.parametrize("name", TRAVERSALS)
def test_inspect_refuses_a_name_leaving_the_folder(
    name: str, clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds, name = tampered(clean, tmp_path, name)
    for args in (["inspect", str(ds), "--verify"], ["inspect", str(ds)]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"shards[0] (name {name!r})" in err and "manifest.json" in err
        assert "verified" not in err


@pytest.mark.parametrize("name", TRAVERSALS)
def test_datamodule_refuses_a_name_leaving_the_folder(name: str, clean: Path, tmp_path: Path) -> None:
    ds, name = tampered(clean, tmp_path, name)
    dm = ShardDataModule([str(ds)], window_seconds=1.0, batch_size=8, on_corrupt="skip")
    with pytest.raises(ManifestError, match=r"shards\[0\] \(name ") as err:
        dm.setup("fit")
    assert repr(name) in str(err.value)  # even with on_corrupt="skip": a crafted name is no corruption


def test_fit_refuses_a_name_leaving_the_folder(
    clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds, name = tampered(clean, tmp_path, "../x.tar")
    args = [
        "fit",
        "--config",
        str(CONFIGS / "eeg_pretrain.yaml"),
        f"--data.datasets=[{ds}]",
        "--data.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        "--run_name=r",
        "--trainer.max_steps=1",
    ]
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # a one-line error, not a traceback
    assert last.startswith("error: ") and f"(name {name!r})" in last


def test_a_symlink_leaving_the_folder_is_refused(
    clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = tmp_path / "ds"
    shutil.copytree(clean, ds)
    m = manifest(ds)
    real = ds / m["shards"][0]["name"]
    outside = tmp_path / "outside.tar"
    shutil.move(real, outside)
    real.symlink_to(outside)  # same name, same bytes: only the link leaves the folder
    assert main(["inspect", str(ds), "--verify"]) == 2
    err = capsys.readouterr().err
    assert f"shard {real.name!r}" in err and "outside the dataset folder" in err
    with pytest.raises(ManifestError, match="outside the dataset folder"):
        ShardDataModule([str(ds)], window_seconds=1.0, batch_size=8).setup("fit")
    # a symlink inside the folder is a plain file name resolving inside it: still accepted
    real.unlink()
    shutil.move(outside, ds / "store.tar")
    real.symlink_to(ds / "store.tar")
    assert main(["inspect", str(ds), "--verify"]) == 0


def files_outside(root: Path, cache: Path) -> set[Path]:
    return {p for p in root.rglob("*") if cache not in p.parents and p != cache}


@pytest.mark.parametrize("name", ["../x.tar", "../../x.tar", "/tmp/neurotrain-escape-x.tar", ".locks"])
def test_a_remote_manifest_writes_nothing_outside_the_cache(name: str, clean: Path, tmp_path: Path) -> None:
    if name.startswith("/"):
        name = str(tmp_path / "abs-escape.tar")
    fs = fsspec.filesystem("memory")
    root = f"/neurotrain-test-{uuid.uuid4().hex}"
    m = manifest(clean)
    for f in clean.iterdir():
        if f.is_file() and f.name != "manifest.json":
            fs.pipe(f"{root}/{f.name}", f.read_bytes())
    shard = m["shards"][0]["name"]
    fs.pipe(f"{root}/{name}", (clean / shard).read_bytes())  # the server would serve the bytes
    m["shards"][0]["name"] = name
    fs.pipe(f"{root}/manifest.json", json.dumps(m).encode())
    cache = tmp_path / "cache"
    before = files_outside(tmp_path, cache)
    url = f"memory://{root}"
    try:
        dm = ShardDataModule([url], window_seconds=1.0, batch_size=8, cache_dir=str(cache))
        with pytest.raises(
            ManifestError, match=rf"^{re.escape(url)}: .*shards\[0\] \(name {re.escape(repr(name))}\)"
        ):
            dm.setup("fit")
        # the second line of defence: the staging itself refuses, whatever manifest it is given
        location = resolve(url, cache)
        with pytest.raises(ManifestError, match=re.escape(url)):
            location.shard_path({**m["shards"][0], "name": name})
    finally:
        fs.rm(root, recursive=True)
    assert files_outside(tmp_path, cache) == before
    staged = [p for p in cache.rglob("*") if p.is_file()]
    assert all(p.name in ("manifest.json", "source.txt") for p in staged), staged


def test_a_pipe_manifest_writes_nothing_outside_the_cache(clean: Path, tmp_path: Path) -> None:
    server = tmp_path / "server" / "eeg"
    shutil.copytree(clean, server)
    m = manifest(server)
    shutil.copyfile(server / m["shards"][0]["name"], server.parent / "x.tar")
    m["shards"][0]["name"] = "../x.tar"
    write_manifest(server, m)
    cache = tmp_path / "cache"
    before = files_outside(tmp_path, cache)
    url = f"pipe:cat {shlex.quote(str(server))}/{{}}"
    with pytest.raises(ManifestError, match=r"\(name '\.\./x\.tar'\)"):
        ShardDataModule([url], window_seconds=1.0, batch_size=8, cache_dir=str(cache)).setup("fit")
    assert files_outside(tmp_path, cache) == before
    assert not (cache / "x.tar").exists() and not list(cache.rglob("*.tar"))


@pytest.mark.parametrize(
    "samples,message",
    [(10**9, "cannot fit in"), (-1, "is not a count"), (2.5, "is not a count"), ("2", "is not a count")],
)
def test_inspect_refuses_an_impossible_sample_count(
    samples: object, message: str, clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = tmp_path / "ds"
    shutil.copytree(clean, ds)
    m = manifest(ds)
    m["shards"][0]["samples"] = samples
    write_manifest(ds, m)
    assert main(["inspect", str(ds)]) == 2
    err = capsys.readouterr().err
    assert f"shards[0] ({m['shards'][0]['name']})" in err and message in err


def test_the_sample_bound_is_one_tar_header_per_sample(clean: Path, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    shutil.copytree(clean, ds)
    m = manifest(ds)
    entry = m["shards"][0]
    entry["samples"] = entry["bytes"] // 512  # the most a tar of that size can hold: accepted
    write_manifest(ds, m)
    assert main(["inspect", str(ds)]) == 0
    entry["samples"] += 1
    write_manifest(ds, m)
    assert main(["inspect", str(ds)]) == 2
    assert main(["inspect", str(clean), "--verify"]) == 0  # a real dataset passes


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../x.tar",
        "/x.tar",
        "a/b.tar",
        "a\\b.tar",
        "C:x.tar",
        ".hidden.tar",
        "x\n.tar",
        "manifest.json",
    ],
)
def test_shard_name_rule_refuses(name: str) -> None:
    assert shard_name_problem(name)


@pytest.mark.parametrize("name", ["sub-01_task-rest-0000.tar", "rec 1-0001.tar", "rec:1.tar", "ünïcode.tar"])
def test_shard_name_rule_accepts(name: str) -> None:
    assert shard_name_problem(name) is None
