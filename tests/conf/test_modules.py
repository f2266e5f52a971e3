"""tunsec.conf is one module per concern: each imports on its own, and they import one another without a cycle."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import tunsec.conf

PACKAGE = Path(tunsec.conf.__file__).parent
MODULES = sorted(f"tunsec.conf.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)]))


def conf_imports(module: str) -> set[str]:
    """The tunsec.conf modules ``module`` imports, anywhere in the file (TYPE_CHECKING blocks and functions too)."""
    tree = ast.parse((PACKAGE / (module.rsplit(".", 1)[1] + ".py")).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add("relative import")   # the package uses absolute imports only; keeps this walk honest
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if n in MODULES}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
    return found


def test_the_package_has_its_modules() -> None:
    names = {m.rsplit(".", 1)[1] for m in MODULES}
    assert {"config", "errors", "syntax", "values", "reader", "tunsec_section", "manual", "connections",
            "secrets", "authorities", "credentials"} <= names


def test_no_import_cycle() -> None:
    graph = {m: conf_imports(m) for m in MODULES}
    assert all("relative import" not in deps for deps in graph.values())
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, (*path, module))
        done.add(module)

    for module in MODULES:
        visit(module, ())
    assert {"tunsec.conf.connections", "tunsec.conf.syntax"} <= graph["tunsec.conf.config"]   # the walk sees imports
    assert graph["tunsec.conf.errors"] == set()   # the bottom layer
    assert all("tunsec.conf.config" not in deps for deps in graph.values())   # the top layer


def test_each_module_imports_on_its_own() -> None:
    # one fresh interpreter; every conf module is forgotten before the next one is imported
    # (the rest of tunsec stays loaded: importing the engine anew each time would only cost time)
    script = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('tunsec.conf.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_ike_engine_does_not_import_conf() -> None:
    # the sans-I/O engine defines its own types (IkeConfig, RetransmitConfig, DosLimits); conf builds them
    src = PACKAGE.parent.parent
    for path in (PACKAGE.parent / "ike").rglob("*.py"):
        package = path.parent.relative_to(src).parts
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else ()
                module = ".".join((*base, node.module or ""))
                assert not module.startswith("tunsec.conf"), f"{path} imports {module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("tunsec.conf") for a in node.names), path
