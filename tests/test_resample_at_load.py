"""Resampling at load (``data.sfreq``): a rhythm keeps its frequency and amplitude, content above
the new Nyquist frequency is filtered out instead of aliasing, windows of every dataset span the
same seconds, and datasets already at the rate are read exactly as without the option."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
import torch

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.resample import rate_ratio, resample_segment, resampled_length
from neurotrain.datamodules.sharding import shard_dataset

AMPLITUDE = 20.0  # µV of each sinusoid


def amplitude_at(x: np.ndarray, sfreq: float, hz: float) -> np.ndarray:
    """Amplitude of the ``hz`` component of each row of ``x [C, n]`` (an exact FFT bin)."""
    spectrum = np.abs(np.fft.rfft(x, axis=-1)) * 2 / x.shape[-1]
    k = hz * x.shape[-1] / sfreq
    assert abs(k - round(k)) < 1e-9, "choose lengths that put hz on a bin"
    return spectrum[..., int(round(k))]


def two_tones(sfreq: float, seconds: float, n_channels: int = 2) -> np.ndarray:
    """``[C, n]`` µV: 10 Hz (kept at 250 Hz) plus 200 Hz (above 250 Hz's Nyquist of 125 Hz)."""
    t = np.arange(int(seconds * sfreq)) / sfreq
    tone = AMPLITUDE * (np.sin(2 * np.pi * 10 * t) + np.sin(2 * np.pi * 200 * t + 0.3))
    return np.repeat(tone[None, :], n_channels, axis=0)


def test_resampling_keeps_a_rhythm_and_filters_what_would_alias() -> None:
    x = two_tones(1000.0, 4.0).astype(np.float32)
    y = resample_segment(x, 1000.0, 250.0)
    assert y.shape == (2, 1000) and y.dtype == np.float32
    inner = y[:, 50:-50]  # 0.2 s from each edge, where the reflected padding is not felt
    n = inner.shape[-1]  # 900 samples = 3.6 s: 10 Hz and 50 Hz fall on bins
    assert np.allclose(amplitude_at(inner, 250.0, 10.0), AMPLITUDE, rtol=0.01)
    # 200 Hz sampled at 250 Hz would fold to 50 Hz: decimating without the filter shows it whole
    naive = x[:, ::4][:, 50:-50]
    assert np.allclose(amplitude_at(naive, 250.0, 50.0), AMPLITUDE, rtol=0.01)
    assert (amplitude_at(inner, 250.0, 50.0) < 0.01 * AMPLITUDE).all()
    # the 10 Hz wave is where it was in time: the filter's delay is compensated
    t = (50 + np.arange(n)) / 250.0
    assert np.abs(inner - AMPLITUDE * np.sin(2 * np.pi * 10 * t)).max() < 0.02 * AMPLITUDE


def test_rate_ratios_and_lengths() -> None:
    assert rate_ratio(1000.0, 256.0) == (32, 125)
    assert rate_ratio(200.0, 256.0) == (32, 25)
    assert resampled_length(1000, 1000.0, 256.0) == 256
    assert resampled_length(999, 1000.0, 256.0) == 256  # ceil(999 * 32 / 125) = ceil(255.7)
    assert resampled_length(777, 256.0, 256.0) == 777
    x = np.ones((1, 10), dtype=np.float16)
    assert resample_segment(x, 256.0, 256.0) is x  # same rate: not even a copy
    with pytest.raises(ValueError, match="simpler ratio"):
        rate_ratio(1000.0, 999.7)


def write_tones(path: Path, sfreq: float, seconds: float = 12.0) -> Path:
    info = mne.create_info(["Cz", "Pz"], sfreq, "eeg")
    raw = mne.io.RawArray(two_tones(sfreq, seconds) * 1e-6, info, verbose="error")
    raw.set_annotations(mne.Annotations([3.0, 7.5], [0.0, 0.0], ["go", "go"]))
    raw.save(path, overwrite=True, verbose="error")
    return path


@pytest.fixture(scope="module")
def rates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two datasets of the same two tones: one at 1000 Hz, one at 250 Hz (float32, one segment)."""
    root = tmp_path_factory.mktemp("rates")
    out = {}
    for name, sfreq in (("ieeg1000", 1000.0), ("eeg250", 250.0)):
        src = write_tones(root / f"{name}_raw.fif", sfreq)
        shard_dataset([src], root / name, dtype="float32", split_ratios=(1.0, 0.0, 0.0), noisy_threshold=0.0)
        out[name] = root / name
    return out


def _dm(folders: list[Path], **kw) -> ShardDataModule:
    args = {
        "datasets": [str(f) for f in folders],
        "window_seconds": 2.0,
        "batch_size": 64,
        "train_split": "all",
    }
    dm = ShardDataModule(**{**args, **kw})
    dm.setup("fit")
    return dm


def test_loader_delivers_every_dataset_at_sfreq(rates: dict[str, Path]) -> None:
    dm = _dm([rates["ieeg1000"], rates["eeg250"]], sfreq=250.0, normalize=False)
    assert dm.sfreq == 250.0
    batches = list(dm.eval_dataloader("train"))
    signal = torch.cat([b["signal"] for b in batches]).numpy()
    ds = torch.cat([b["dataset"] for b in batches]).numpy()
    onset = torch.cat([b["onset_s"] for b in batches]).numpy()
    assert signal.shape[-1] == 500 and all((b["sfreq"] == 250.0).all() for b in batches)
    # 12 s in 2 s windows from each dataset, at the same onsets: the same seconds
    assert (ds == 0).sum() == (ds == 1).sum() == 6
    assert np.allclose(onset[ds == 0], onset[ds == 1])
    inner = signal[ds == 0][1:-1]  # the windows away from the segment's two ends
    assert np.allclose(amplitude_at(inner, 250.0, 10.0), AMPLITUDE, rtol=0.02)
    assert (amplitude_at(inner, 250.0, 50.0) < 0.02 * AMPLITUDE).all()  # 200 Hz did not fold to 50
    # ... and the 10 Hz wave is at its recorded times (onset_s + k / 250)
    t = onset[ds == 0][1:-1, None].astype(np.float64) + np.arange(500) / 250.0
    assert np.abs(inner - AMPLITUDE * np.sin(2 * np.pi * 10 * t)[:, None, :]).max() < 0.03 * AMPLITUDE
    # the 250 Hz recording itself holds the 200 Hz tone aliased to 50 Hz: what filtering prevents
    assert np.allclose(amplitude_at(signal[ds == 1], 250.0, 50.0), AMPLITUDE, rtol=0.02)


def test_epochs_are_cut_at_the_same_instants_after_resampling(rates: dict[str, Path]) -> None:
    dm = _dm(
        [rates["ieeg1000"], rates["eeg250"]],
        sfreq=250.0,
        mode="epochs",
        tmin=-0.2,
        tmax=0.8,
        label_map={"go": 0},
    )
    batch = next(iter(dm.eval_dataloader("train")))
    assert batch["signal"].shape[-1] == 250
    ds, onset = batch["dataset"], batch["onset_s"]
    assert torch.allclose(onset[ds == 0], onset[ds == 1])
    assert torch.allclose(onset[ds == 0], torch.tensor([2.8, 7.3]))


def test_different_rates_without_sfreq_is_a_clear_error(rates: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="different sampling rates") as err:
        _dm([rates["ieeg1000"], rates["eeg250"]])
    assert f"{rates['ieeg1000']}: 1000 Hz" in str(err.value) and f"{rates['eeg250']}: 250 Hz" in str(
        err.value
    )
    assert "sfreq" in str(err.value)


def test_one_rate_is_read_as_without_the_option(
    rates: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import scipy.signal

    def refuse(*args, **kwargs):
        raise AssertionError("resample_poly called for a dataset already at the rate")

    plain = list(_dm([rates["eeg250"]], batch_size=2).train_dataloader())
    monkeypatch.setattr(scipy.signal, "resample_poly", refuse)
    same = list(_dm([rates["eeg250"]], batch_size=2, sfreq=250.0).train_dataloader())
    assert len(plain) == len(same) > 0
    for a, b in zip(plain, same, strict=True):
        assert a.keys() == b.keys()
        assert a["signal"].numpy().tobytes() == b["signal"].numpy().tobytes()
        assert a["sample_id"] == b["sample_id"] and torch.equal(a["sfreq"], b["sfreq"])


def test_only_the_kept_rows_are_resampled_and_land_in_their_slots(tmp_path: Path) -> None:
    """Channels interleaved with ones left out (here eeg, misc, eeg, misc, eeg) and a target
    channel: each slot holds the resampled stored row it names, as resampling all rows gives."""
    sfreq, names = 1000.0, ["Cz", "M1x", "Pz", "M2x", "Oz"]
    info = mne.create_info(names, sfreq, ["eeg", "misc", "eeg", "misc", "eeg"])
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5, 8000)) * 1e-5
    mne.io.RawArray(data, info, verbose="error").save(tmp_path / "mix_raw.fif", verbose="error")
    shard_dataset(
        [tmp_path / "mix_raw.fif"],
        tmp_path / "s",
        dtype="float32",
        split_ratios=(1.0, 0.0, 0.0),
        noisy_threshold=0.0,
        min_segment_seconds=1.0,
        channel_types=["eeg", "misc"],  # keep the misc channels stored
    )
    dm = _dm(
        [tmp_path / "s"],
        sfreq=250.0,
        normalize=False,
        channel_types=["eeg"],
        target_channel="M2x",
        target_reduce="end",
        window_seconds=1.0,
    )
    from neurotrain.datamodules.loading.tar_index import SegmentReader

    seg = dm._segments["train"][0]
    full = resample_segment(SegmentReader().read(seg), sfreq, 250.0)  # every row, [5, 2000]
    batch = next(iter(dm.eval_dataloader("train")))
    starts = np.rint(batch["onset_s"].double().numpy() * 250).astype(int)
    for j, st in enumerate(starts):
        assert np.allclose(batch["signal"][j, :3].numpy(), full[[0, 2, 4], st : st + 250], atol=1e-5)
        assert np.isclose(float(batch["labels"][j]), full[3, st + 249], atol=1e-5)
