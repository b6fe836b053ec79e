"""The import rules of docs/ARCHITECTURE.md, read from the source: who may import the measurement
tools and the command line, and which layers stay free of torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "reusevos"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions, relative imports resolved."""
    found = set()
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _importers(target: str, among: str = "reusevos") -> list[str]:
    return sorted(m for m, imports in MODULES.items() if m.startswith(among) and not m.startswith(target)
                  and any(i == target or i.startswith(target + ".") for i in imports))


def test_the_scan_sees_the_package():
    assert "reusevos.session" in MODULES and "reusevos.bench.run" in MODULES
    assert "reusevos.session" in _importers("reusevos.model")  # a rule that holds is found


def test_nothing_in_the_library_imports_the_measurement_tools_or_the_command_line():
    assert _importers("reusevos.bench") == ["reusevos.cli.bench"]
    assert _importers("reusevos.cli") == ["reusevos.__main__"]  # python -m reusevos


def test_nothing_in_the_library_imports_the_web_app_and_only_its_page_imports_gradio():
    assert _importers("reusevos.app") == ["reusevos.cli.app"]  # `reusevos app`, lazily inside the command
    gradio = sorted(m for m, imports in MODULES.items() if any(i == "gradio" or i.startswith("gradio.") for i in imports))
    assert gradio == ["reusevos.app.page"]


def test_training_never_imports_measurement():
    assert _importers("reusevos.bench", among="reusevos.train") == []


@pytest.mark.parametrize("layer", ["reusevos.config", "reusevos.errors", "reusevos.io", "reusevos.evaluation"])
def test_the_lower_layers_need_no_torch(layer):
    heavy = sorted(m for m, imports in MODULES.items() if m.startswith(layer)
                   and any(i == "torch" or i.startswith("torch.") for i in imports))
    assert heavy == []
