"""Data flows down the layers: pages, CLI and API call the services; the services call tuning, rewards,
generation and the store; each lower layer imports only the layers below it. A module that reaches up (tuning
importing the services, as it once did) makes an import circle and two owners for one action."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# each package, and the top-level project modules it may import (besides the shared leaf modules)
LAYERS = ["services", "tuning", "rewards", "generation", "store"]
LEAVES = {"settings", "limits", "pii", "untrusted"}  # configuration, bounds, redaction and untrusted text:
# imported from every layer, import no layer
PROJECT = set(LAYERS) | LEAVES | {"evaluation", "access", "cli", "pages", "api", "bench", "tests"}


def imported_packages(file: Path) -> set[str]:
    """The project's top-level packages and modules a file imports, at any depth (late imports too)."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & PROJECT


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_what_lies_below_it(layer: str) -> None:
    allowed = set(LAYERS[LAYERS.index(layer):]) | LEAVES | ({"evaluation"} if layer == "services" else set())
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files, f"no modules in {layer}/"
    upward = {f"{f.relative_to(ROOT)} imports {name}" for f in files for name in imported_packages(f) - allowed}
    assert not upward, f"{layer}/ reaches up a layer: {sorted(upward)}"


def test_the_api_calls_the_services_and_nothing_below_them() -> None:
    files = sorted((ROOT / "api").rglob("*.py"))
    below = {f"{f.relative_to(ROOT)} imports {name}" for f in files
             for name in imported_packages(f) - {"api", "services", "access", *LEAVES}}
    assert files and not below, f"api/ skips the service layer: {sorted(below)}"


def test_the_leaf_modules_import_no_layer() -> None:
    for name in LEAVES:
        assert not imported_packages(ROOT / f"{name}.py") - LEAVES, f"{name}.py imports a layer"


def test_the_check_sees_a_late_import(tmp_path: Path) -> None:
    """The check itself: an import inside a function body (how the circle used to hide) is found."""
    module = tmp_path / "late.py"
    module.write_text("def f():\n    import services\n    from tuning import runs\n", encoding="utf-8")
    assert imported_packages(module) == {"services", "tuning"}
