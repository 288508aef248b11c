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

A resumed fit redoes the steps after its checkpoint, which the killed process may already have
written; `RunCSVLogger.drop_rows_from` (called by `RunRecord` once the checkpoint is restored)
removes those rows first, so every step has one row.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only, rank_zero_warn

from neurotrain.datamodules.io.files import atomic_write_text
from neurotrain.train.tracking.run_folder import METRICS_ASIDE_FILE, METRICS_FILE

_ASIDE = METRICS_ASIDE_FILE
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

    @rank_zero_only
    def drop_rows_from(self, step: int) -> int:
        """Remove the saved rows of training epochs stamped ``step`` or later; how many were removed.

        Rows without an epoch (Lightning's throughput monitor stamps validation rows with its own
        counter) are kept. Call it before this process saves rows of its own.
        """
        path = Path(self.log_dir) / METRICS_FILE
        if not path.is_file():
            return 0
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [row for row in rows if not _at_or_after(row, step)]
        if len(kept) == len(rows):
            return 0
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(path, out.getvalue())
        return len(rows) - len(kept)


def _at_or_after(row: dict[str, str], step: int) -> bool:
    try:
        return row.get("epoch") not in (None, "") and int(float(row.get("step") or "")) >= step
    except ValueError:
        return False
