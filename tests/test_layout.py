"""The layout the architecture depends on (docs/design.md, "Layout"): no import circles in `magic141_core` or `nodes`,
the core never imports ComfyUI, the loaders never import the demo, and no module grows past one sitting (400 lines).

The import graph is read from the source with `ast` (every import statement, at module level or inside a function:
a lazy import still ties two modules together). `from pkg import name` is an edge to `pkg.name` when that is a module,
else to `pkg`. The checker itself is tested on a small package with a planted circle."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 400
LOADERS = ("magic141_core.dit", "magic141_core.vae", "magic141_core.text", "magic141_core.weights")


def modules(root: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} for every .py file under `root` (the package `package`)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """{module: the modules of `files` it imports}; imports of anything else (torch, comfy, ...) are left out."""
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in files else source for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def absolute_imports(path: Path) -> set[str]:
    """The top-level names of every absolute import in a file (`import comfy.utils`, `from comfy import x` -> comfy)."""
    tree = ast.parse(path.read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return roots | {n.module.split(".")[0] for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.module and not n.level}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm): each is an import circle."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


PACK = {**modules(REPO / "magic141_core", "magic141_core"), **modules(REPO / "nodes", "nodes")}


def test_the_checker_finds_a_planted_circle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from .sub import b\n\ndef f():\n    pass\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..c import h\n")  # a lazy import counts
    (pkg / "c.py").write_text("from . import a\n")
    assert circles(import_graph(modules(pkg, "pkg"))) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    (pkg / "c.py").write_text("import os\n")
    assert circles(import_graph(modules(pkg, "pkg"))) == []


def test_no_import_circles():
    assert circles(import_graph(PACK)) == []


def test_the_core_never_imports_comfyui():
    for name, path in PACK.items():
        if name.startswith("magic141_core"):
            assert not absolute_imports(path) & {"comfy", "folder_paths", "comfy_api", "server", "nodes"}, name


def test_loaders_never_import_the_demo():
    graph = import_graph(PACK)
    for name, edges in graph.items():
        if name.startswith(LOADERS):
            assert not [e for e in edges if e.startswith("magic141_core.demo")], name


def test_node_modules_reach_comfyui_only_through_nodes_host():
    for name, path in PACK.items():
        if name.startswith("nodes") and not name.startswith("nodes.host"):
            assert not absolute_imports(path) & {"comfy", "folder_paths", "comfy_api", "server", "latent_preview"}, name


def test_every_module_reads_in_one_sitting():
    long = {name: n for name, path in PACK.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
