"""The layers of the package hold: no module imports a layer above its own (docs/architecture.md).

Every ``import`` of ``neurotrain.*`` in the package's source, at module level or inside a
function, is read with ``ast`` and checked against ``MAY_IMPORT``: the data side is the bottom
(``io`` < ``format`` < ``sharding`` | ``loading``, the two sides never importing each other),
``models`` sits on the format, and ``train``'s subpackages stack ``tracking`` < ``run`` <
``report`` | ``sweeps`` | ``evaluation``, with the console entry point on top.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "datamodules": "neurotrain.datamodules",
    "models": "neurotrain.models",
    "train": "neurotrain.train",
}

# unit -> the units it may import (besides itself). A module belongs to the longest unit prefix.
MAY_IMPORT: dict[str, set[str]] = {
    "neurotrain.datamodules.io": set(),
    "neurotrain.datamodules.format": {"neurotrain.datamodules.io"},
    "neurotrain.datamodules.sharding": {"neurotrain.datamodules.io", "neurotrain.datamodules.format"},
    "neurotrain.datamodules.loading": {"neurotrain.datamodules.io", "neurotrain.datamodules.format"},
    # the package's own modules: lazy exports and kept import paths of moved modules
    "neurotrain.datamodules": {
        "neurotrain.datamodules.io",
        "neurotrain.datamodules.format",
        "neurotrain.datamodules.sharding",
        "neurotrain.datamodules.loading",
    },
    "neurotrain.models": {"neurotrain.datamodules.io", "neurotrain.datamodules.format"},
}
_DATA = set(MAY_IMPORT)
MAY_IMPORT["neurotrain.train.tracking"] = _DATA | {"neurotrain.models"}
MAY_IMPORT["neurotrain.train.run"] = MAY_IMPORT["neurotrain.train.tracking"] | {"neurotrain.train.tracking"}
MAY_IMPORT["neurotrain.train.report"] = MAY_IMPORT["neurotrain.train.tracking"] | {
    "neurotrain.train.tracking"
}
MAY_IMPORT["neurotrain.train.sweeps"] = MAY_IMPORT["neurotrain.train.run"] | {"neurotrain.train.run"}
MAY_IMPORT["neurotrain.train.evaluation"] = MAY_IMPORT["neurotrain.train.sweeps"] | {
    "neurotrain.train.report"
}
# the entry point and the data commands sit on top of everything
MAY_IMPORT["neurotrain.train"] = set(MAY_IMPORT) | {"neurotrain.train.evaluation"}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((package, *parts))] = path
    return out


def _unit(module: str) -> str:
    return max((u for u in MAY_IMPORT if module == u or module.startswith(u + ".")), key=len)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every neurotrain import in ``path``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from neurotrain.train import run` imports the subpackage run
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("neurotrain.")]


def _layer_of(name: str, modules: dict[str, Path]) -> str:
    # `from pkg.mod import Name`: the module is the longest prefix that is a module of ours
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return _unit(name)


def test_no_module_imports_a_higher_layer() -> None:
    modules = _modules()
    assert len(modules) > 60  # the walk found the package
    wrong = []
    for module, path in modules.items():
        unit = _unit(module)
        for line, name in _imports(path, module):
            target = _layer_of(name, modules)
            if target != unit and target not in MAY_IMPORT[unit]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {unit} imports {name} ({target})")
    assert not wrong, "imports against the layering (docs/architecture.md):\n" + "\n".join(wrong)


def test_the_layering_check_catches_an_upward_import(tmp_path: Path) -> None:
    # The check itself must see lazy (function-level) and `from x import y` imports.
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from neurotrain.train.run import lightning_cli\n")
    modules = {**_modules(), "neurotrain.models.x": path}
    (line, name), *_ = _imports(path, "neurotrain.models.x")
    assert line == 2 and _layer_of(name, modules) == "neurotrain.train.run"
    assert "neurotrain.train.run" not in MAY_IMPORT["neurotrain.models"]


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_every_subpackage_is_installed(folder: str) -> None:
    """pyproject lists every package folder, so a wheel (not only an editable install) holds it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for init in (ROOT / folder).rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT / folder)
        name = ".".join((FOLDERS[folder], *rel.parts))
        assert name in listed, f"{name} is missing from [tool.setuptools] packages in pyproject.toml"


# Public import paths that moved in the layout change, and where the object lives now.
MOVED = [
    ("neurotrain.models.lightning_modules", "PretrainModule", "neurotrain.models.modules"),
    ("neurotrain.models.lightning_modules", "ClassifierModule", "neurotrain.models.modules"),
    ("neurotrain.models.lightning_modules", "RegressorModule", "neurotrain.models.modules"),
    ("neurotrain.models.lightning_modules", "AlignmentModule", "neurotrain.models.modules"),
    (
        "neurotrain.datamodules.shard_datamodule",
        "ShardDataModule",
        "neurotrain.datamodules.loading.datamodule",
    ),
    ("neurotrain.datamodules", "ShardDataModule", "neurotrain.datamodules.loading.datamodule"),
    ("neurotrain.datamodules.sharding", "shard_dataset", "neurotrain.datamodules.sharding.pipeline"),
    ("neurotrain.datamodules.channel_types", "CHANNEL_TYPES", "neurotrain.datamodules.format.channel_types"),
    ("neurotrain.datamodules.example_data", "fetch", "neurotrain.datamodules.sharding.examples"),
    ("neurotrain.train.baselines", "score_on_loaders", "neurotrain.train.evaluation.baselines"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_moved_public_paths_still_import(old: str, name: str, new: str) -> None:
    import importlib

    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)
