"""The shape of the source tree, kept true by tests: no module reaches into another's
private names, the import graph has no cycle (type-only imports included), the protocol
layer loads nothing of the framework, and the docs name only modules that exist."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "tether"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _own_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(attribute names the module defines itself: its classes, functions and the attributes
    it sets; names bound by `import x` of a module outside tether, whose private-looking
    attributes such as `os._exit` are that module's public API)."""
    defined, imported = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            defined.add(node.name)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            defined.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)  # module globals and class attributes (`Hub._instances`)
    return defined, imported


def test_no_module_reaches_into_another_modules_private_names() -> None:
    """`obj._name` is allowed on `self`/`cls` and for names the module defines itself."""
    offences = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(), str(path))
        defined, imported = _own_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or name.startswith("__"):
                continue
            target = node.value
            if isinstance(target, ast.Name) and (target.id in ("self", "cls") or target.id in imported):
                continue
            if name in defined:
                continue  # a private of this module's own classes (e.g. another instance's)
            offences.append(f"{module}:{node.lineno}: .{name}")
    assert not offences, "cross-module private access:\n" + "\n".join(offences)


def _imports(module: str, path: Path) -> set[str]:
    """Every tether module `module` imports, at any depth, including under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    known = _modules()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate in known and candidate != module:
                found.add(candidate)
    return found


def _ancestors(module: str) -> set[str]:
    """Packages whose __init__ Python runs before `module` (not an edge of the design)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_the_import_graph_has_no_cycle_type_imports_included() -> None:
    graph = {module: _imports(module, path) - _ancestors(module) for module, path in _modules().items()}
    # The package's own lazy __init__ names every export for type checkers only.
    graph["tether"] = set()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# The layers of docs/architecture.md, top first: a module may import its own group and any
# group of a lower layer, never upward nor sideways. Modules not listed are core.
LAYERS: list[dict[str, tuple[str, ...]]] = [
    {"entry": ("tether.cli", "tether.__main__", "tether.testing", "tether.client")},
    {"assembly": ("tether.app", "tether.routing")},
    {"faces": ("tether.styles",), "live": ("tether.live",), "roads": ("tether.server", "tether.asgi")},
    {"core": ()},
    {"seam": ("tether.channel",)},
    {"protocol": ("tether.protocol",)},
]


def _place(module: str) -> tuple[int, str]:
    """(layer index, 0 at the top; group name) of a module."""
    for index, groups in enumerate(LAYERS):
        for group, prefixes in groups.items():
            if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
                return index, group
    return next(i for i, groups in enumerate(LAYERS) if "core" in groups), "core"


def test_imports_point_down_the_layers() -> None:
    """The App and its Router (the assembly) may import the faces and the roads; nothing below
    them does; faces and roads do not import each other; the core imports neither."""
    upward = []
    for module, path in _modules().items():
        if module == "tether":
            continue  # the package's lazy __init__ names every export
        layer, group = _place(module)
        for target in _imports(module, path) - _ancestors(module):
            target_layer, target_group = _place(target)
            if target_layer < layer or (target_layer == layer and target_group != group):
                upward.append(f"{module} ({group}) imports {target} ({target_group})")
    assert not upward, "imports that do not point down:\n" + "\n".join(sorted(upward))


def test_the_protocol_layer_imports_nothing_of_the_framework() -> None:
    for module, path in _modules().items():
        if module.startswith("tether.protocol"):
            outside = {m for m in _imports(module, path) if not m.startswith("tether.protocol")}
            assert not outside, f"{module} imports {outside}"


def test_importing_tether_protocol_loads_no_other_tether_module() -> None:
    code = ("import sys, tether.protocol; "
            "print(sorted(m for m in sys.modules if m.startswith('tether')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules = eval(loaded)  # a printed list of str
    assert modules, loaded
    assert all(m == "tether" or m.startswith("tether.protocol") for m in modules), modules


def test_import_tether_is_lazy_and_names_load_on_first_use() -> None:
    code = ("import sys, tether; before = sorted(m for m in sys.modules if m.startswith('tether.')); "
            "tether.App; after = 'tether.app' in sys.modules; print(before, after)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True", out


def test_docs_architecture_names_only_modules_and_functions_that_exist() -> None:
    text = (DOCS / "architecture.md").read_text()
    named = set(re.findall(r"`(tether(?:\.\w+)*)`", text))
    assert len(named) > 20, "docs/architecture.md names too few modules and functions to be a map"
    for dotted in sorted(named):
        parts = dotted.split(".")
        # the longest importable prefix is the module; the rest are attributes in it
        for cut in range(len(parts), 0, -1):
            try:
                target = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            break
        for attr in parts[cut:]:
            assert hasattr(target, attr), f"docs/architecture.md names {dotted}: no {attr} there"
            target = getattr(target, attr)
