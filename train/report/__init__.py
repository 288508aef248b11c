"""The ``neurotrain compare`` dashboard: reads run folders and renders one self-contained HTML report.

    compare.py   the ``neurotrain compare`` parser and `build_report` (light: imported at CLI start-up)
    runs.py      reading run folders: discovery, status (and sweep-trial state), config diff, filters, curves
    settings.py  which config keys a runs table shows (those that differ) and how their values read
    scores.py    held-out size and chance level of a run, from its ``predictions/``
    runs_table.py  the runs tables: one per run kind (pretrain, finetune, eval, a sweep's trials)
    panels.py    the curve panels: science then system metrics, one per metric meaning, readable y axes
    tables.py    `ReportTable`, a caller's own table shown above the runs
    page.py      the page: the values it shows, rendered by the Jinja2 template in ``assets/``
    assets/      ``report.html.j2``, ``report.css``, ``report.js`` (inlined into every report)

Layering: this package may import ``neurotrain.datamodules.io``, ``neurotrain.models.metric_names``
and ``neurotrain.train.tracking``, never ``train.run``, ``train.sweeps`` or ``train.evaluation``
(those import it).
"""
