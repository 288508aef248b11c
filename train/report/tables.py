"""`ReportTable`: a caller's own table, shown above the runs table of a ``neurotrain compare`` report.

Plain data with no heavy import, so any caller (the quickstart's results, a benchmark summary) can
build one and pass it to `build_report`; the page template renders and escapes it like every
other value on the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReportTable:
    """A titled table: ``columns`` are the header texts, each row one value per column.

    Values are shown as `format_value` text (``None`` empty, floats to 6 significant digits); pass
    strings to choose the formatting. ``id`` becomes the table's element id.
    """

    id: str
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    note: str = ""  # one line under the title
