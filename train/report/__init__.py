"""The ``neurotrain compare`` dashboard: reads run folders and renders one self-contained HTML report.

    compare.py   the ``neurotrain compare`` parser and `build_report` (light: imported at CLI start-up)
    runs.py      reading run folders: discovery, status, config diff, filters, metric curves
    tables.py    `ReportTable`, a caller's own table shown above the runs
    page.py      the page: the values it shows, rendered by the Jinja2 template in ``assets/``
    assets/      ``report.html.j2``, ``report.css``, ``report.js`` (inlined into every report)

Layering: this package may import ``neurotrain.datamodules.io``, ``neurotrain.models.metric_names``
and ``neurotrain.train.tracking``, never ``train.run``, ``train.sweeps`` or ``train.evaluation``
(those import it).
"""
