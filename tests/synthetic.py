"""Tiny seeded recordings written by real writers (MNE, edfio, pybv, eeglabio, nibabel).

Fixtures come from code, not committed blobs: each function writes a small file in one of the
formats ``neurotrain shard`` reads, with known content, so tests can check what comes out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# 10-20 names that the standard 10-05 montage knows, so positions can come from the montage.
CHANNELS_1020 = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "Cz", "Pz"]


def make_raw(
    n_channels: int = 8,
    sfreq: float = 128.0,
    seconds: float = 30.0,
    seed: int = 0,
    names: list[str] | None = None,
    events: list[tuple[float, str]] | None = None,
    evoked: dict[str, float] | None = None,
    evoked_seconds: float = 0.4,
):
    """An ``mne.io.RawArray`` of EEG in volts (~20 µV noise plus a 10 Hz rhythm) with annotations.

    ``evoked`` (event label -> µV) adds a response after each such event: ``evoked_seconds`` of
    that amplitude on the first half of the channels and its negative on the second half, so
    the classes are decodable from the window after onset.
    """
    import mne

    rng = np.random.default_rng(seed)
    names = names or CHANNELS_1020[:n_channels]
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    data = 20e-6 * rng.standard_normal((len(names), n)) + 10e-6 * np.sin(2 * np.pi * 10 * t)
    for onset, label in events or []:
        if evoked and label in evoked:
            a, b = int(round(onset * sfreq)), int(round((onset + evoked_seconds) * sfreq))
            half = len(names) // 2
            data[:half, a:b] += evoked[label] * 1e-6
            data[half:, a:b] -= evoked[label] * 1e-6
    info = mne.create_info(names, sfreq, "eeg")
    raw = mne.io.RawArray(data, info, verbose="error")
    if events:
        onsets, labels = zip(*events, strict=True)
        raw.set_annotations(mne.Annotations(list(onsets), [0.0] * len(onsets), list(labels)))
    return raw


def write_fif(path: Path, **kw) -> Path:
    raw = make_raw(**kw)
    raw.save(path, overwrite=True, verbose="error")
    return path


def write_edf(path: Path, **kw) -> Path:
    import mne

    mne.export.export_raw(path, make_raw(**kw), fmt="edf", overwrite=True, verbose="error")
    return path


def write_brainvision(path: Path, **kw) -> Path:
    import mne

    mne.export.export_raw(path, make_raw(**kw), fmt="brainvision", overwrite=True, verbose="error")
    return path


def write_eeglab(path: Path, **kw) -> Path:
    import mne

    mne.export.export_raw(path, make_raw(**kw), fmt="eeglab", overwrite=True, verbose="error")
    return path


def write_bdf(path: Path, **kw) -> Path:
    """A BDF (24-bit) file through edfio, which MNE reads with ``read_raw_bdf``."""
    from edfio import Bdf, BdfSignal, EdfAnnotation

    raw = make_raw(**kw)
    notes = [EdfAnnotation(a["onset"], None, a["description"]) for a in raw.annotations]
    sigs = [
        BdfSignal(raw.get_data(picks=[i])[0] * 1e6, raw.info["sfreq"], label=name, physical_dimension="uV")
        for i, name in enumerate(raw.ch_names)
    ]
    Bdf(sigs, annotations=notes).write(path)
    return path


def write_bids_eeg(root: Path, subjects: list[str], seconds: float = 30.0) -> Path:
    """A small BIDS EEG dataset written by mne-bids (positions from the standard montage)."""
    import mne
    import mne_bids

    for i, sub in enumerate(subjects):
        raw = make_raw(seconds=seconds, seed=i, events=[(2.0, "face"), (5.0, "house"), (7.5, "BAD_x")])
        raw.set_montage(mne.channels.make_standard_montage("colin27_1005"), verbose="error")
        tmp = root.parent / f"_tmp_{sub}_raw.fif"
        raw.save(tmp, overwrite=True, verbose="error")
        raw = mne.io.read_raw_fif(tmp, verbose="error")
        bp = mne_bids.BIDSPath(subject=sub, task="demo", datatype="eeg", root=root)
        mne_bids.write_raw_bids(raw, bp, format="EDF", allow_preload=False, overwrite=True, verbose="error")
        tmp.unlink()
    return root


def write_fmri(
    path: Path, shape: tuple[int, int, int, int] = (6, 6, 5, 40), tr: float = 2.0, seed: int = 0
) -> Path:
    """A 4-D NIfTI with a known TR and a slow drift per voxel."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    data = 100 + rng.standard_normal(shape).astype(np.float32)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    nib.save(img, path)
    return path


def write_atlas(path: Path, shape: tuple[int, int, int] = (6, 6, 5), n_parcels: int = 4) -> Path:
    """A label image on the same grid as ``write_fmri``: parcels are slabs along x."""
    import nibabel as nib

    lab = np.zeros(shape, dtype=np.int16)
    edges = np.linspace(0, shape[0], n_parcels + 1).astype(int)
    for k in range(n_parcels):
        lab[edges[k] : edges[k + 1], 1:-1, 1:-1] = k + 1
    nib.save(nib.Nifti1Image(lab, np.diag([3.0, 3.0, 3.0, 1.0])), path)
    return path


def write_t1(path: Path, shape: tuple[int, int, int] = (40, 48, 40), seed: int = 0) -> Path:
    """A 3-D head-like image (bright ellipsoid on a dark background) in LAS orientation."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    idx = np.indices(shape).astype(np.float32)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2
    r = np.sqrt((((idx - centre) / (np.array(shape)[:, None, None, None] / 2.5)) ** 2).sum(0))
    data = np.where(r < 1, 500 + 50 * rng.standard_normal(shape), 0).astype(np.float32)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # LAS: x flipped, so reorientation is exercised
    path_str = str(path)
    img = nib.MGHImage(data, affine) if path_str.endswith(".mgz") else nib.Nifti1Image(data, affine)
    nib.save(img, path_str)
    return path


def meg_eeg_info(n_eeg: int, sfreq: float):
    """MNE's canonical Neuromag-306 sensors plus ``n_eeg`` 10-20 electrodes, at ``sfreq`` (an ``mne.Info``)."""
    import mne

    meg = mne.channels.read_meg_canonical_info("neuromag")
    meg = mne.pick_info(meg, mne.pick_types(meg, meg=True))
    eeg = mne.create_info(CHANNELS_1020[:n_eeg], meg["sfreq"], "eeg")
    one_second = int(meg["sfreq"])  # a 1 s blank recording gives an info at ``sfreq`` through MNE
    base = mne.io.RawArray(np.zeros((len(meg.ch_names), one_second)), meg, verbose="error")
    blank_eeg = mne.io.RawArray(np.zeros((n_eeg, one_second)), eeg, verbose="error")
    base.add_channels([blank_eeg], force_update_info=True)
    base.set_montage("standard_1020", on_missing="ignore", verbose="error")
    return base.resample(sfreq, verbose="error").info


def _simulate_to_fif(path: Path, info, src, fwd, amplitude: np.ndarray, seed: int) -> Path:
    """Source ``amplitude [n_vertices, n]`` (A·m) of volume source space ``src`` through ``fwd``
    to the sensors of ``info``, plus MNE's ad-hoc sensor noise (seeded), written as FIF."""
    import mne

    stc = mne.VolSourceEstimate(amplitude, [src[0]["vertno"]], tmin=0.0, tstep=1.0 / info["sfreq"])
    raw = mne.simulation.simulate_raw(info, stc, forward=fwd, verbose="error")
    mne.simulation.add_noise(
        raw, mne.make_ad_hoc_cov(raw.info, verbose="error"), random_state=seed, verbose="error"
    )
    raw.save(path, overwrite=True, verbose="error")
    return path


def write_meg_fif(
    path: Path, seconds: float = 20.0, sfreq: float = 200.0, n_eeg: int = 12, seed: int = 0
) -> Path:
    """Simultaneous MEG + EEG simulated by MNE at ``sfreq`` and written as FIF.

    MNE's canonical Neuromag-306 sensors (102 magnetometers, 204 planar gradiometers, with
    positions, orientations and coil types; device frame = head frame), ``n_eeg`` 10-20 EEG
    electrodes; two dipoles in a sphere head model (r0 (0, 0, 4) cm, radius 7 cm) driven at 7 and
    11 Hz, forward-modelled to both, plus MNE's ad-hoc sensor noise.
    """
    import mne

    info = meg_eeg_info(n_eeg, sfreq)
    rate = float(info["sfreq"])
    sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.04), head_radius=0.07, info=None, verbose="error")
    src = mne.setup_volume_source_space(sphere=sphere, pos=25.0, mindist=5.0, verbose="error")
    fwd = mne.make_forward_solution(
        info, trans=None, src=src, bem=sphere, meg=True, eeg=True, verbose="error"
    )
    n = int(seconds * rate)
    t = np.arange(n) / rate
    amplitude = np.zeros((len(src[0]["vertno"]), n))
    amplitude[0] = 50e-9 * np.sin(2 * np.pi * 7 * t)  # 50 nAm dipoles
    amplitude[len(amplitude) // 2] = 50e-9 * np.sin(2 * np.pi * 11 * t + 1.0)
    return _simulate_to_fif(path, info, src, fwd, amplitude, seed)


def write_meg_alignment_fif(
    path: Path,
    seconds: float = 100.0,
    sfreq: float = 100.0,
    n_sources: int = 8,
    n_eeg: int = 12,
    seed: int = 0,
) -> Path:
    """Simultaneous MEG + EEG whose source activity changes over time, so windows differ.

    The set-up of ``write_meg_fif`` (MNE's canonical Neuromag-306 sensors, ``n_eeg`` 10-20 EEG
    electrodes, a sphere head model, MNE's ad-hoc sensor noise), but ``n_sources`` dipoles spread
    over the volume source space, each a rhythm (5-25 Hz) whose amplitude (0-80 nAm) drifts
    smoothly and independently on a ~1 s time scale. Every window of a second or so then holds
    its own mix of active sources, seen by both EEG and MEG: what EEG <-> MEG retrieval must
    match. Seeded (``seed``): the same file every time.
    """
    import mne

    rng = np.random.default_rng(seed)
    info = meg_eeg_info(n_eeg, sfreq)
    rate = float(info["sfreq"])
    sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.04), head_radius=0.07, info=None, verbose="error")
    # no source at the sphere centre, where the EEG sphere model is singular
    src = mne.setup_volume_source_space(sphere=sphere, pos=20.0, mindist=5.0, exclude=10.0, verbose="error")
    fwd = mne.make_forward_solution(
        info, trans=None, src=src, bem=sphere, meg=True, eeg=True, verbose="error"
    )
    n = int(seconds * rate)
    t = np.arange(n) / rate
    n_vertices = len(src[0]["vertno"])
    amplitude = np.zeros((n_vertices, n))
    where = np.linspace(0, n_vertices - 1, n_sources).round().astype(int)
    kernel = np.exp(-0.5 * (np.arange(-3 * rate, 3 * rate + 1) / (0.5 * rate)) ** 2)  # 0.5 s Gaussian
    for k, vertex in enumerate(where):
        drift = np.convolve(rng.standard_normal(n + kernel.size - 1), kernel, mode="valid")  # [n]
        envelope = np.clip(drift / drift.std(), 0.0, None) * 40e-9  # >= 0, ~0-80 nAm
        freq = 5.0 + 20.0 * k / max(n_sources - 1, 1)
        amplitude[vertex] = envelope * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return _simulate_to_fif(path, info, src, fwd, amplitude, seed)
