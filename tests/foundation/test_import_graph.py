"""postlab's import graph has no circle and no module reaches into another's private names.

A function-local import hides a circle from Python (it runs after both modules have loaded) but
not from a reader: two modules that import each other are one module split in two files, and
the next module-level import between them breaks the package at import time. So the graph here
holds every import, at module level or inside a function, resolved from the source with `ast`
without importing anything.

A package's ``__init__`` counts as the module ``postlab.pkg``; importing ``postlab.pkg.mod`` is
an edge to ``postlab.pkg.mod`` only (not to the package ``__init__`` Python also runs), since a
package that re-exports its modules' names would otherwise close a circle with every module
that imports a sibling package's module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import postlab

PACKAGE_ROOT = Path(postlab.__file__).parent


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imported_names(name: str, path: Path, modules: dict[str, Path]):
    """(line, imported module, name imported from it or None) for each postlab import in the file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "postlab":
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from . import x` inside postlab.a.b is postlab.a
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "postlab":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:  # `from postlab.models import lora` imports the module lora
                    yield node.lineno, submodule, None
                else:
                    yield node.lineno, source, alias.name


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}."""
    modules = package_modules(root)
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        for line, target, _ in imported_names(name, path, modules):
            if target != name:
                graph[name].setdefault(target, line)
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan), shown as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_through(graph, component) for component in components]


def _path_through(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """The shortest circle from the component's first module back to itself, as module names."""
    start, members = component[0], set(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in graph[v]:
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1] + [start]
                if w in members and w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    return component


def describe(graph: dict[str, dict[str, int]], circle: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(circle, circle[1:])) + f" -> {circle[-1]}"


def test_import_graph_has_no_circle():
    graph = import_graph()
    found = circles(graph)
    assert not found, "import circles (each module imports the next, at module level or in a function):\n" + \
        "\n".join(describe(graph, c) for c in found)


def test_no_module_imports_another_modules_private_name():
    modules = package_modules()
    offenders = []
    for name, path in modules.items():
        for line, target, imported in imported_names(name, path, modules):
            private = imported if imported is not None else target.rsplit(".", 1)[-1]
            if target != name and private.startswith("_") and not private.startswith("__"):
                offenders.append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{line} imports {private} from {target}")
    assert not offenders, "private names are the module's own; make the name public where it belongs:\n" + \
        "\n".join(offenders)


def test_the_graph_walker_sees_function_level_and_relative_imports(tmp_path):
    """The walker itself, on a made-up package: a circle closed only inside a function is found."""
    package = tmp_path / "postlab"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .a import thing\n")
    (package / "sub" / "a.py").write_text("from postlab.sub.b import other\nthing = 1\n")
    (package / "sub" / "b.py").write_text("def other():\n    from . import a\n    from postlab.sub.a import _hidden\n")
    graph = import_graph(package)
    assert graph["postlab.sub"] == {"postlab.sub.a": 1}
    assert circles(graph) == [["postlab.sub.a", "postlab.sub.b", "postlab.sub.a"]]
    modules = package_modules(package)
    assert (3, "postlab.sub.a", "_hidden") in list(imported_names("postlab.sub.b", modules["postlab.sub.b"], modules))
