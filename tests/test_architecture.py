"""The package's layering: every module imports, and module-level imports form no cycle."""

import ast
import importlib
import pkgutil
from pathlib import Path

import funad

PACKAGE_ROOT = Path(funad.__file__).parent

# Lower layers never import these (image decoding, data loading, the estimator).
_HIGH_LEVEL = ("funad.data", "funad.features.extraction", "funad.model", "funad.cli")
_LOW_LEVEL = ("funad.method", "funad.inference", "funad.baselines", "funad.features.containers")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = ("funad",) + path.relative_to(PACKAGE_ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The funad module ``name`` refers to: itself, or the module holding it (for ``from m import x``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _module_level_imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """funad modules imported when ``module`` is imported (not inside functions or TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])

    visit(tree.body)
    return {target for name in found if name.startswith("funad")
            if (target := _resolve(name, modules)) and target != module}


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _module_level_imports(module, path, modules) for module, path in modules.items()}


def test_every_module_imports():
    names = [info.name for info in pkgutil.walk_packages(funad.__path__, "funad.")]
    assert set(names) | {"funad"} == set(_modules())
    for name in names:
        if not name.endswith(".__main__"):  # importing it runs the command line
            importlib.import_module(name)


def test_module_level_imports_have_no_cycle():
    graph = _import_graph()
    state: dict[str, str] = {}

    def cycle_from(module: str, trail: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return trail[trail.index(target):] + [target] if target in trail else [module, target]
            if target not in state and (found := cycle_from(target, trail + [target])):
                return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = cycle_from(module, [module])
            assert cycle is None, " -> ".join(cycle)


def test_lower_layers_never_import_image_decoding_or_the_estimator():
    graph = _import_graph()
    offending = [(module, target) for module, targets in graph.items() if module.startswith(_LOW_LEVEL)
                 for target in targets if target.startswith(_HIGH_LEVEL)]
    assert not offending


def test_the_graph_reader_sees_a_cycle(tmp_path, monkeypatch):
    """The cycle test's own check: two modules importing each other are found."""
    package = tmp_path / "funad"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from funad.b import x\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import funad.c\n"
                                  "def f():\n    import funad.c\nfrom funad import a\n")
    (package / "c.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE_ROOT", package)
    graph = _import_graph()
    assert graph["funad.a"] == {"funad.b"} and graph["funad.b"] == {"funad.a"} and graph["funad.c"] == set()
