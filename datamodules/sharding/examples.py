"""Real example recordings that ship inside PyPI packages, fetched once into a cache.

Tests, the quickstart and users share this one module. A package's wheel is fetched with
``pip download --no-deps`` (never installed: pylossless would pull a large dependency tree),
the files we need are unzipped from it, and each file listed with a checksum is verified with
sha256 before the dataset is marked complete. Extraction goes to a temporary folder that is
renamed into place, so an interrupted fetch never leaves a half-filled dataset behind.

Cache root: ``$NEUROTRAIN_CACHE`` if set, else ``~/.cache/neurotrain``.

>>> from neurotrain.datamodules.sharding.examples import fetch
>>> bids_root = fetch("eeg")      # the pylossless BIDS EEG (2 subjects, 128 channels)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from neurotrain.datamodules.io.files import sha256_file


@dataclass(frozen=True)
class ExampleDataset:
    """One dataset taken from one wheel: ``prefix`` is the folder inside the wheel we extract."""

    package: str
    version: str
    prefix: str
    description: str
    checksums: dict[str, str] = field(default_factory=dict)  # path below prefix -> sha256
    exclude_suffixes: tuple[str, ...] = ()


_PYLOSSLESS = "pylossless/assets/test_data/"
_NEUROPYCON = "neuropycon_data/data/data_nii/"

DATASETS: dict[str, ExampleDataset] = {
    "eeg": ExampleDataset(
        package="pylossless",
        version="0.2.0",
        prefix=_PYLOSSLESS,
        description="BIDS EEG, 2 subjects, 128 channels @ 256 Hz, ~19 min each, face/house/checker events",
        checksums={
            "sub-s01/eeg/sub-s01_task-faceO_eeg.edf": "99b6f5da72463bbab5e17d828fefbbd8af77f7f50c16eff33095877501426517",
            "sub-s02/eeg/sub-s02_task-faceO_eeg.edf": "8384fa47a33cc7d7d7ec393ae251cd29f2fdc76be96742760a042df9b4f0022d",
        },
        # pylossless' own outputs (ICA decompositions, flags) are not part of the recordings.
        exclude_suffixes=("_ica.fif", "_iclabels.tsv", "_FlaggedChs.tsv", "_ll_config.yaml"),
    ),
    "fmri": ExampleDataset(
        package="nitime",
        version="0.12.1",
        prefix="nitime/data/",
        description="4D fMRI, 2 runs of 10x10x18x40 voxels, TR 1.35 s (no atlas)",
        checksums={
            "fmri1.nii.gz": "473b394d20815b9982341877f1ee3e6a29e3b722f01ff045bf5a3fca2f9d66fe",
            "fmri2.nii.gz": "d89a16f4e17d55b1d08faa6f4a024aab067d8ab4571fe9fb2eaa1634b45cc618",
        },
    ),
    "fmri_rest": ExampleDataset(
        package="neuropycon-data",
        version="0.0.dev6",
        prefix=_NEUROPYCON,
        description="resting-state fMRI 64x32x32x88, TR 2.5 s, with a label atlas on the same grid",
        checksums={
            "sub-test_task-rs_bold.nii": "9bcea02b7955816beaac7ee4262136e0e92b08080aa9a01afd02eec0dcc7c0ac",
            "Atlas/indexed_mask-Atlas.nii": "4fca45c86b2f563016fa66ce8c6b7321ddaf59dac0881064707ef6f7f31a7072",
        },
    ),
    "t1": ExampleDataset(
        package="neurora",
        version="2.0.1",
        prefix="neurora/template/",
        description="Colin27 T1-weighted head, 181x217x181 at 1 mm",
        checksums={"ch2.nii.gz": "a3d28a3397a8c3cd099a2d41d8e3ed8dba5b7430d759aded7b19c7e8cdb6e2ac"},
    ),
}

# Only these members are extracted from the nitime and neurora wheels (they carry much else).
_MEMBERS_ONLY_CHECKSUMMED = {"fmri", "t1"}


class FetchError(RuntimeError):
    """The example data could not be fetched or failed its checksum."""


def cache_root() -> Path:
    """Where fetched example data lives: ``$NEUROTRAIN_CACHE`` or ``~/.cache/neurotrain``."""
    env = os.environ.get("NEUROTRAIN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neurotrain"


def fetch(name: str, cache_dir: Path | None = None, quiet: bool = True) -> Path:
    """Return the local folder of example dataset ``name``, fetching it on first use.

    Raises ``FetchError`` naming the package when pip cannot download it or a file's sha256
    differs from the one recorded here.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown example dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / "examples" / f"{name}-{spec.package}-{spec.version}"
    if (target / ".complete").exists():
        return target
    root.joinpath("examples").mkdir(parents=True, exist_ok=True)
    wheel = _download_wheel(spec, root / "wheels", quiet=quiet)
    with tempfile.TemporaryDirectory(dir=root / "examples", prefix=f".{name}-") as tmp:
        staging = Path(tmp) / "data"
        _extract(wheel, spec, staging, only_checksummed=name in _MEMBERS_ONLY_CHECKSUMMED)
        for rel, expected in spec.checksums.items():
            got = sha256_file(staging / rel)
            if got != expected:
                raise FetchError(
                    f"{spec.package}=={spec.version}: {rel} has sha256 {got}, expected {expected}"
                )
        (staging / ".complete").write_text(f"{spec.package}=={spec.version}\n")
        if target.exists():  # a stale, incomplete earlier attempt
            shutil.rmtree(target)
        staging.rename(target)
    return target


def _download_wheel(spec: ExampleDataset, wheel_dir: Path, quiet: bool) -> Path:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    dist = spec.package.replace("-", "_")
    found = sorted(wheel_dir.glob(f"{dist}-{spec.version}-*.whl"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheel_dir)]
    cmd += ["--quiet"] if quiet else []
    cmd.append(f"{spec.package}=={spec.version}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheel_dir.glob(f"{dist}-{spec.version}-*.whl"))
    if proc.returncode != 0 or not found:
        raise FetchError(
            f"could not download {spec.package}=={spec.version} with pip "
            f"(exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return found[0]


def _extract(wheel: Path, spec: ExampleDataset, dest: Path, only_checksummed: bool) -> None:
    dest.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if not member.startswith(spec.prefix) or member.endswith("/"):
                continue
            rel = member[len(spec.prefix) :]
            if only_checksummed and rel not in spec.checksums:
                continue
            if rel.endswith(spec.exclude_suffixes) or rel.endswith("__init__.py"):
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)


def main_fetch(names: list[str]) -> list[Path]:
    """Fetch several datasets; used by ``neurotrain fetch``."""
    return [fetch(n, quiet=False) for n in names]
