"""The classical baseline of intracranial decoding: log band power per channel + ridge regression.

Features (as in py-neuromodulation's oscillatory features): for each window ``x [C, T]`` the
Welch power spectrum of each channel (``scipy.signal.welch``, Hann windows of up to 256 ms, 50 %
overlap), averaged within the bands θ 4–8, α 8–12, β 13–30, low γ 30–60 and high γ 60–200 Hz
(bands above the Nyquist frequency are left out), log10: ``[N, C * bands]``. Ridge regression
(scikit-learn ``RidgeCV``, the penalty chosen by efficient leave-one-out on the *training* windows
only, features standardised on them) maps them to the target. Scores: Pearson r and R² on the
held-out windows, the metrics the ``RegressorModule`` logs.

    pred, alpha = bandpower_ridge(x_train, y_train, x_test, sfreq)   # x [N, C, T], y [N]
    scores = regression_scores(y_test, pred)                           # {"pearson_r", "r2"}
"""

from __future__ import annotations

import numpy as np

BANDS: dict[str, tuple[float, float]] = {
    "theta": (4.0, 8.0),
    "alpha": (8.0, 12.0),
    "beta": (13.0, 30.0),
    "low_gamma": (30.0, 60.0),
    "high_gamma": (60.0, 200.0),
}
ALPHAS = tuple(10.0**k for k in range(-3, 5))  # the ridge penalties RidgeCV chooses among


def band_power(x: np.ndarray, sfreq: float, bands: dict[str, tuple[float, float]] = BANDS) -> np.ndarray:
    """log10 mean Welch power per channel and band: ``x [N, C, T]`` -> ``[N, C * B]`` (channel-major)."""
    from scipy.signal import welch

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected windows [N, C, T], got shape {x.shape}")
    nperseg = min(x.shape[-1], int(round(0.256 * sfreq)))
    freqs, psd = welch(x, fs=sfreq, nperseg=nperseg, axis=-1)  # psd [N, C, F]
    kept = [(lo, hi) for lo, hi in bands.values() if lo < sfreq / 2]
    if not kept:
        raise ValueError(f"no band below the Nyquist frequency ({sfreq / 2:g} Hz)")
    columns = []
    for lo, hi in kept:
        inside = (freqs >= lo) & (freqs < min(hi, sfreq / 2))
        if not inside.any():  # a band narrower than the frequency resolution: its nearest bin
            inside = np.abs(freqs - (lo + hi) / 2) == np.abs(freqs - (lo + hi) / 2).min()
        columns.append(psd[..., inside].mean(axis=-1))  # [N, C]
    power = np.stack(columns, axis=-1)  # [N, C, B]
    return np.log10(power + np.finfo(np.float64).tiny).reshape(len(x), -1)


def bandpower_ridge(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, sfreq: float, alphas=ALPHAS
) -> tuple[np.ndarray, float]:
    """(predictions ``[N_test]``, the chosen penalty): band power + standardisation + ``RidgeCV``
    fitted on the training windows only."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=list(alphas)))
    model.fit(band_power(x_train, sfreq), np.asarray(y_train, dtype=np.float64))
    return model.predict(band_power(x_test, sfreq)), float(model[-1].alpha_)


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Pearson r (NaN when either side is constant) and R² of held-out predictions."""
    from sklearn.metrics import r2_score

    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    constant = np.std(y_true) == 0 or np.std(y_pred) == 0
    r = float("nan") if constant else float(np.corrcoef(y_true, y_pred)[0, 1])
    return {"pearson_r": r, "r2": float(r2_score(y_true, y_pred))}
