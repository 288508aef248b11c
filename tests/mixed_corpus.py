"""Stand-ins for the four corpora of ``mixed_pretrain.yaml``, written by MNE (tests and benchmarks).

EEG at 256 Hz with 10-20 positions (FIF), a Graz-style 4-channel EEG at 250 Hz whose generic names
("Channel 1".."Channel 4") no montage knows, so it has no positions (EDF), iEEG-like ECoG at
1000 Hz on a strip with head-frame positions (FIF), and simulated MEG (``synthetic.write_meg_fif``
at 200 Hz). Signals are two rhythms per channel plus 10 % noise (20 µV scale), so masked patches
are predictable from the visible ones and a pretraining loss can fall on each.
"""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import synthetic

SECONDS = 40.0
FOUR_CHANNELS = [f"Channel {i}" for i in range(1, 5)]


def rhythmic(
    n_channels: int, sfreq: float, seconds: float, freqs: tuple[float, float], seed: int
) -> np.ndarray:
    """``[C, n]`` volts: two rhythms per channel (its own amplitudes and phases) plus 10 % noise,
    so masked patches are predictable from the visible ones (20 µV scale)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sfreq)) / sfreq
    amp = rng.uniform(0.5, 1.5, size=(n_channels, 2, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n_channels, 2, 1))
    waves = amp * np.sin(2 * np.pi * np.asarray(freqs)[None, :, None] * t + phase)
    return 20e-6 * (waves.sum(axis=1) + 0.1 * rng.standard_normal((n_channels, t.size)))


def write_eeg_with_positions(path: Path, sfreq: float = 256.0, seconds: float = SECONDS) -> Path:
    """12 10-20 EEG channels with standard-montage positions, FIF."""
    info = mne.create_info(synthetic.CHANNELS_1020, sfreq, "eeg")
    raw = mne.io.RawArray(rhythmic(12, sfreq, seconds, (6.0, 10.0), 0), info, verbose="error")
    raw.set_montage("standard_1020", verbose="error")
    raw.save(path, overwrite=True, verbose="error")
    return path


def write_four_channel_edf(path: Path | str, sfreq: float = 250.0, seconds: float = SECONDS) -> Path:
    """A Graz-style 4-channel EEG: generic names no montage knows, so no positions; EDF by MNE."""
    info = mne.create_info(FOUR_CHANNELS, sfreq, "eeg")
    raw = mne.io.RawArray(rhythmic(4, sfreq, seconds, (8.0, 13.0), 1), info, verbose="error")
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose="error")
    return Path(path)


def write_ieeg(path: Path, sfreq: float = 1000.0, seconds: float = SECONDS) -> Path:
    """6 ECoG contacts on a strip (head-frame positions) at 1000 Hz, FIF."""
    names = [f"ECOG{i}" for i in range(1, 7)]
    info = mne.create_info(names, sfreq, "ecog")
    raw = mne.io.RawArray(rhythmic(6, sfreq, seconds, (12.0, 30.0), 2), info, verbose="error")
    strip = {n: np.array([0.05, -0.02 + 0.01 * i, 0.04]) for i, n in enumerate(names)}
    raw.set_montage(mne.channels.make_dig_montage(strip, coord_frame="head"), verbose="error")
    raw.save(path, overwrite=True, verbose="error")
    return path


def write_small_meg(path: Path, seconds: float = SECONDS, n_mags: int = 16) -> Path:
    """``synthetic.write_meg_fif`` at 200 Hz, then ``n_mags`` of its 102 magnetometers and its 4 EEG
    kept (MNE's ``pick``), so a test's token count stays small: those that see the simulated
    dipoles most, so each kept sensor carries signal of a similar size, not mostly sensor noise."""
    full = synthetic.write_meg_fif(path.with_name("full_meg_raw.fif"), seconds=seconds, sfreq=200.0, n_eeg=4)
    raw = mne.io.read_raw_fif(full, preload=True, verbose="error")
    picks = mne.pick_types(raw.info, meg="mag")
    strongest = picks[np.argsort(raw.get_data(picks=picks).std(axis=1))[::-1][:n_mags]]
    mags = [raw.ch_names[i] for i in sorted(strongest)]
    raw.pick(mags + [raw.ch_names[i] for i in mne.pick_types(raw.info, meg=False, eeg=True)])
    raw.save(path, overwrite=True, verbose="error")
    return path
