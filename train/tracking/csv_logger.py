"""``<run_dir>/metrics.csv``: Lightning's CSVLogger, kept across a resume, through its public API only.

    logger = csv_logger(run_dir, resume=bool(ckpt_path))   # first in the trainer's loggers

``name=""`` and ``version=""`` make ``log_dir`` the run folder itself (no ``name/version_N``), and
ModelCheckpoint's default folder ``<run_dir>/checkpoints``. Lightning saves the file every
``flush_logs_every_n_steps`` and at each validation end (`RunRecord` flushes it), so a killed
process loses at most the rows since.

The stock writer deletes an existing ``metrics.csv`` when it is created and warns whenever the
folder is not empty, which a run folder always is (config, summary, wandb/). On resume the old
file is moved aside while the writer is created and put back right after, with its columns
given to the writer (``metrics_keys``), so new rows append to it and a new column rewrites the
header once; a kill between the two renames leaves ``.metrics.csv.resume``, which the next
resume picks up. Without resume an old file is replaced, said in one warning.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only, rank_zero_warn

from neurotrain.train.tracking.run_folder import METRICS_FILE

_ASIDE = ".metrics.csv.resume"
_STOCK_WARNING = r"Experiment logs directory .* exists and is not empty"


def csv_logger(
    run_dir: str | Path, *, resume: bool = False, flush_logs_every_n_steps: int = 10
) -> RunCSVLogger:
    """A CSVLogger that writes exactly ``<run_dir>/metrics.csv``; ``resume=True`` keeps the rows there.

    Pass ``resume=True`` when continuing a run from its checkpoint (``--ckpt_path``), so the metrics
    logged before the interruption stay in the file; otherwise an old ``metrics.csv`` is replaced.
    """
    return RunCSVLogger(run_dir, resume=resume, flush_logs_every_n_steps=flush_logs_every_n_steps)


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger writing ``<run_dir>/metrics.csv``, appending to it when resuming.

    ``logged_steps`` maps each metric to the step of the row it was last logged on, the step
    Lightning stamps on rows (during an epoch-end validation one less than ``global_step``), so
    the run record can name the row of its best value.
    """

    def __init__(
        self, run_dir: str | Path, *, resume: bool = False, flush_logs_every_n_steps: int = 10
    ) -> None:
        super().__init__(
            save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=flush_logs_every_n_steps
        )
        self.resume = resume
        self.logged_steps: dict[str, int] = {}
        if rank_zero_only.rank == 0:
            self._open(Path(run_dir))

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        if step is not None:
            self.logged_steps.update(dict.fromkeys(metrics, int(step)))

    def _open(self, run_dir: Path) -> None:
        """Create the writer now, keeping (resume) or replacing the run folder's ``metrics.csv``."""
        path, aside = run_dir / METRICS_FILE, run_dir / _ASIDE
        header: list[str] | None = None
        if self.resume:
            if path.is_file():
                os.replace(path, aside)
            if aside.is_file():
                with open(aside, newline="") as fh:
                    header = next(csv.reader(fh), [])
        elif path.is_file():
            rank_zero_warn(f"{path} exists and is replaced by this run's metrics")
        run_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_STOCK_WARNING)
            writer = self.experiment
        if header is not None:
            os.replace(aside, path)
            # New columns merge with these; the writer rewrites the header when they appear.
            writer.metrics_keys = sorted(header)
