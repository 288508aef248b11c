"""Real example recordings that ship inside PyPI wheels, fetched once into the cache with pooch.

Tests, the quickstart and users share this one module. Each dataset names one exact wheel (URL and
sha256 from the PyPI simple index); ``pooch.retrieve`` downloads it into ``<cache>/wheels`` (a wheel
already there with the right hash is reused), checks its sha256 and unzips the members we need
(``pooch.Unzip``). The wheel is never installed: pylossless would pull a large dependency tree. Each
extracted file listed with a checksum is verified with sha256 before the dataset is marked complete
(``.complete``). Extraction goes to a temporary folder beside the dataset folder that is renamed
into place, so an interrupted or failed fetch never leaves a half-filled dataset behind.

The transport is HTTPS first, then ``pip download --no-deps --only-binary=:all:``: some machines
reach PyPI only through a mirror configured for pip (``index-url`` in ``pip.conf``), not
files.pythonhosted.org. pooch checks the wheel's sha256 whichever transport brought it.

Layout: ``<cache>/wheels/<wheel file>`` and ``<cache>/examples/<name>-<package>-<version>/``, the cache
root being ``neurotrain.datamodules.io.cache.cache_root()``.

>>> from neurotrain.datamodules.sharding.examples import fetch
>>> bids_root = fetch("eeg")      # the pylossless BIDS EEG (2 subjects, 128 channels)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurotrain.datamodules.io.cache import cache_root
from neurotrain.datamodules.io.files import sha256_file

__all__ = ["DATASETS", "ExampleDataset", "FetchError", "fetch"]

_FILES = "https://files.pythonhosted.org/packages/"


@dataclass(frozen=True)
class ExampleDataset:
    """One dataset taken from one wheel: ``prefix`` is the folder inside the wheel we extract.

    ``wheel_url``/``wheel_sha256`` pin the exact wheel; ``checksums`` pin the recordings in it
    (path below ``prefix`` -> sha256). ``only_checksummed`` extracts just those files (for wheels
    that carry much else); otherwise every file below ``prefix`` is extracted except package
    ``__init__.py`` files and names ending in one of ``exclude_suffixes``.
    """

    package: str
    version: str
    prefix: str
    description: str
    wheel_url: str
    wheel_sha256: str
    checksums: dict[str, str] = field(default_factory=dict)
    exclude_suffixes: tuple[str, ...] = ()
    only_checksummed: bool = False
    # A pure-Python wheel whose metadata asks for a newer Python than this one: pip download then
    # needs ``--python-version`` to fetch it (its data files are read, the code is never run).
    python_version: str | None = None
    # What the dataset lacks for ``neurotrain shard`` and where to get it: ``neurotrain fetch``
    # says it on stderr (stdout stays the folder alone, for ``D=$(neurotrain fetch NAME)``).
    note: str | None = None

    @property
    def wheel_name(self) -> str:
        """The wheel's file name (the last part of its URL), also its name in the cache."""
        return self.wheel_url.rsplit("/", 1)[-1]


DATASETS: dict[str, ExampleDataset] = {
    "eeg": ExampleDataset(
        package="pylossless",
        version="0.2.0",
        prefix="pylossless/assets/test_data/",
        description="BIDS EEG, 2 subjects, 128 channels @ 256 Hz, ~19 min each, face/house/checker events",
        wheel_url=_FILES + "26/4d/d4bbc151396c4aed7527e949cdf54aca62d0994ad9947c679543bb832ea0/"
        "pylossless-0.2.0-py3-none-any.whl",
        wheel_sha256="2452630d114d0f3ecd4b8a3c7b7ed7180fee93f6712e3fcb6b34ae14a5b3d8ac",
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
        # Only its data files are used, so this one wheel serves every platform.
        wheel_url=_FILES + "88/5d/ae275feedaa6590cf6e185cfeb7c4d28b5e1a10fcb492fd5340b07921675/"
        "nitime-0.12.1-cp311-abi3-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
        wheel_sha256="19442111829b94fa9aa9849bdfb6aa92bc5467ba74194b18450728e432086882",
        checksums={
            "fmri1.nii.gz": "473b394d20815b9982341877f1ee3e6a29e3b722f01ff045bf5a3fca2f9d66fe",
            "fmri2.nii.gz": "d89a16f4e17d55b1d08faa6f4a024aab067d8ab4571fe9fb2eaa1634b45cc618",
        },
        only_checksummed=True,
        note="this fMRI example ships no atlas, and `neurotrain shard` needs one for fMRI "
        "(--atlas LABELS.nii.gz, a label image on or resampled to the run's grid); "
        "`neurotrain fetch fmri_rest` brings a run with its atlas (Atlas/indexed_mask-Atlas.nii) and "
        "parcel names (Atlas/ROI_labels-Atlas.txt): README, 'The fMRI example'",
    ),
    "fmri_rest": ExampleDataset(
        package="neuropycon-data",
        version="0.0.dev6",
        prefix="neuropycon_data/data/data_nii/",
        description="resting-state fMRI 64x32x32x88, TR 2.5 s, with a label atlas on the same grid "
        "(184 parcels, background -1) and its parcel names",
        wheel_url=_FILES + "85/5a/faf4d89af964f9a2bb3a69791119f2436a1e7597aaf9b14db0f14bb438fc/"
        "neuropycon_data-0.0.dev6-py3-none-any.whl",
        wheel_sha256="706e5b3576d76c833d2e7f52c1c3eb6992ce8be5efcd93bd1701f4dfa55fdae8",
        checksums={
            "sub-test_task-rs_bold.nii": "9bcea02b7955816beaac7ee4262136e0e92b08080aa9a01afd02eec0dcc7c0ac",
            "Atlas/indexed_mask-Atlas.nii": "4fca45c86b2f563016fa66ce8c6b7321ddaf59dac0881064707ef6f7f31a7072",
            # one name per parcel, in label order: the source atlas' region numbers (--atlas-labels)
            "Atlas/ROI_labels-Atlas.txt": "839a9611f78af0698b403586c6e31ae18f19e95ed8af85e75b1b08aa17422c65",
        },
    ),
    "t1": ExampleDataset(
        package="neurora",
        version="2.0.1",
        prefix="neurora/template/",
        description="Colin27 T1-weighted head, 181x217x181 at 1 mm",
        wheel_url=_FILES + "c3/56/6fb6a1a71a13684c1e47fee26514050059b92b1831a391b5ecdad9c44bb7/"
        "neurora-2.0.1-py3-none-any.whl",
        wheel_sha256="9f4eb729e1bde7c68fc8eeb9f1a1360ce8ff6957c61fb1405ec7ec49e5d4d692",
        checksums={"ch2.nii.gz": "a3d28a3397a8c3cd099a2d41d8e3ed8dba5b7430d759aded7b19c7e8cdb6e2ac"},
        only_checksummed=True,
    ),
    "mni152": ExampleDataset(
        package="nilearn",
        version="0.14.1",
        prefix="nilearn/datasets/data/",
        description="MNI152 2009a symmetric T1 template 197x233x189 at 1 mm, with its grey- and "
        "white-matter probability maps (a second T1 for structural examples)",
        wheel_url=_FILES + "9e/4f/6d93620cf4c7f642a8fb85fef8b6e30a24764ef99774026550291dea6fdd/"
        "nilearn-0.14.1-py3-none-any.whl",
        wheel_sha256="725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a",
        checksums={
            "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz": "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
            "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz": "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed",
            "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz": "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db",
        },
        only_checksummed=True,
    ),
    "ieeg": ExampleDataset(
        package="py-neuromodulation",
        version="0.1.7",
        prefix="py_neuromodulation/data/",
        description="BIDS iEEG, 1 subject: 6 ECoG + 3 DBS channels @ 1000 Hz (19 s) with MNI "
        "positions, and grip force (MOV_RIGHT) as a continuous target",
        wheel_url=_FILES + "86/f7/a53b471d5b6ac303e7682761f935faad055bf7958b41bbccf00c89263f1c/"
        "py_neuromodulation-0.1.7-py3-none-any.whl",
        wheel_sha256="1f70517a0359d4fd171d53854f3cc7fcff18386ca87bd54cb46d341b4b4b91eb",
        checksums={
            f"sub-testsub/ses-EphysMedOff/ieeg/sub-testsub_ses-EphysMedOff_{rel}": sha
            for rel, sha in {
                "task-gripforce_run-0_ieeg.eeg": "36741e303acaa5e2b795cb4867907387ce54313b393825026a2be7fcd539adce",
                "task-gripforce_run-0_ieeg.vhdr": "f90107c108c96fd1e9f72b9d11ac2a85097cbeb0fc6d8aa2baf945e1cc8f360d",
                "task-gripforce_run-0_ieeg.vmrk": "043f9599c29eedd474bc6cf392fe1cd3d4274b0737cd8780583189233584388d",
                "task-gripforce_run-0_channels.tsv": "6528b1adfa5294d11f9afd1d89a27deaeb053f03ed3bf740e82083603a7ce4a6",
                "space-mni_electrodes.tsv": "2abf6f2a1d6a9e7c05404d027adecf91e56eb86c75bbe093ff15ece2ab9c7b38",
                "space-mni_coordsystem.json": "76ad157367c847e62f6c212a05bee5ab73ff62438ece429ed4787e6b581de3a1",
            }.items()
        },
        python_version="3.12",  # the wheel asks for Python >= 3.12; only its data files are read
    ),
}


class FetchError(RuntimeError):
    """The example data could not be fetched or failed its checksum."""


def fetch(name: str, cache_dir: Path | None = None, quiet: bool = True) -> Path:
    """Return the local folder of example dataset ``name``, fetching it on first use.

    ``cache_dir`` replaces the cache root; ``quiet=False`` shows pooch's messages and a progress
    bar. Raises ``FetchError`` naming the package when the wheel cannot be downloaded, its sha256
    or a recording's differs from the one recorded here, or it cannot be unpacked.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown example dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    root = Path(cache_dir) if cache_dir else cache_root()
    examples = root / "examples"
    target = examples / f"{name}-{spec.package}-{spec.version}"
    if (target / ".complete").exists():
        return target
    examples.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=examples, prefix=f".{name}-") as tmp:
        try:
            staging = _unpack(spec, root / "wheels", Path(tmp) / "wheel", quiet=quiet)
        except FetchError:
            raise
        except Exception as exc:  # pooch: download error, wheel hash mismatch; zip or disk errors
            raise FetchError(f"{spec.package}=={spec.version}: {exc}") from exc
        for rel, expected in spec.checksums.items():
            if not (staging / rel).is_file():
                raise FetchError(f"{spec.package}=={spec.version}: {rel} is missing from {spec.wheel_name}")
            got = sha256_file(staging / rel)
            if got != expected:
                raise FetchError(
                    f"{spec.package}=={spec.version}: {rel} has sha256 {got}, expected {expected}"
                )
        (staging / ".complete").write_text(f"{spec.package}=={spec.version}\n")
        if (target / ".complete").exists():  # a concurrent fetch finished first
            return target
        if target.exists():  # a stale, incomplete earlier attempt
            shutil.rmtree(target)
        staging.rename(target)
    return target


def _unpack(spec: ExampleDataset, wheels: Path, extract_dir: Path, quiet: bool) -> Path:
    """Have pooch fetch (or reuse) the wheel, then unzip the dataset's members below ``extract_dir``.

    Returns the folder holding the dataset (``extract_dir/prefix``).
    """
    import pooch

    with _pooch_log(quiet):
        wheel = pooch.retrieve(
            spec.wheel_url,
            known_hash=f"sha256:{spec.wheel_sha256}",
            fname=spec.wheel_name,
            path=wheels,
            downloader=_Transport(spec, quiet=quiet),
        )
    members = _members(spec, Path(wheel))
    if not members:
        raise FetchError(f"{spec.package}=={spec.version}: no files below {spec.prefix} in {spec.wheel_name}")
    # The members are known only once the wheel is here, so the processor runs after retrieve;
    # its extract_dir is relative to the archive's folder. pooch logs every member: not shown.
    relative = os.path.relpath(extract_dir.resolve(), Path(wheel).parent)
    with _pooch_log(quiet=True):
        pooch.Unzip(members=members, extract_dir=relative)(wheel, "fetch", None)
    return extract_dir / spec.prefix


def _members(spec: ExampleDataset, wheel: Path) -> list[str]:
    """The wheel members that make up the dataset (the exclusion rules applied)."""
    if spec.only_checksummed:
        return [spec.prefix + rel for rel in spec.checksums]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    return [
        member
        for member in names
        if member.startswith(spec.prefix)
        and not member.endswith("/")
        and not member.endswith(spec.exclude_suffixes)
        and not member.endswith("__init__.py")
    ]


@contextlib.contextmanager
def _pooch_log(quiet: bool) -> Iterator[None]:
    """pooch logs each download and each extracted member at INFO; only warnings pass when ``quiet``.

    A filter, not ``setLevel``: pooch's logger lives outside the logging manager, so a level change
    would not reset its cached level checks.
    """
    import pooch

    def warnings_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    logger = pooch.get_logger()
    if quiet:
        logger.addFilter(warnings_only)
    try:
        yield
    finally:
        logger.removeFilter(warnings_only)


@dataclass
class _Transport:
    """A pooch downloader: HTTPS with ``pooch.HTTPDownloader``, else ``pip download`` (a mirror)."""

    spec: ExampleDataset
    quiet: bool = True

    def __call__(self, url: str, output_file: Any, pooch_: Any) -> None:
        import pooch

        # pooch's progress bar needs tqdm, an optional dependency of pooch
        progressbar = not self.quiet and importlib.util.find_spec("tqdm") is not None
        try:
            pooch.HTTPDownloader(progressbar=progressbar, timeout=60)(url, output_file, pooch_)
        except Exception as https_error:
            try:
                _pip_download(self.spec, output_file, quiet=self.quiet)
            except FetchError as pip_error:
                raise FetchError(
                    f"could not download {self.spec.package}=={self.spec.version}: "
                    f"HTTPS: {https_error}; pip: {pip_error}"
                ) from pip_error


def _pip_download(spec: ExampleDataset, output_file: Any, quiet: bool) -> None:
    """Fetch the recorded wheel with pip (its configured index) and write it to ``output_file``."""
    from packaging.utils import parse_wheel_filename

    *_, tags = parse_wheel_filename(spec.wheel_name)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    platforms = sorted({t.platform for t in tags} - {"any"})
    if platforms:  # a platform wheel: ask pip for that very file whatever this machine is
        tag = min(tags, key=str)
        cmd += [f"--platform={p}" for p in platforms]
        cmd += ["--implementation", tag.interpreter[:2], "--python-version", tag.interpreter[2:]]
        cmd += ["--abi", tag.abi]
    elif spec.python_version:
        cmd += ["--python-version", spec.python_version]
    cmd += ["--quiet"] if quiet else []
    with tempfile.TemporaryDirectory() as tmp:
        cmd += ["-d", tmp, f"{spec.package}=={spec.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = Path(tmp) / spec.wheel_name
        if proc.returncode != 0 or not wheel.is_file():
            got = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            last = (proc.stderr.strip().splitlines() or [""])[-1]
            raise FetchError(f"pip download exited {proc.returncode} and fetched {got}: {last}")
        if hasattr(output_file, "write"):
            with open(wheel, "rb") as src:
                shutil.copyfileobj(src, output_file)
        else:
            shutil.copyfile(wheel, output_file)
