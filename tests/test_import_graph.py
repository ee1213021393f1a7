"""The package's import graph: no cycles, evaluation and export apart, a core free of config.

Every `import` statement counts, those inside functions included, since a
lazy import is a dependency that only waits for its first call.
"""

import ast
from pathlib import Path

import byol_keras

PACKAGE_ROOT = Path(byol_keras.__file__).parent
# The training core: the method classes and what they are made of. A user can
# build and fit them without a config file, so none may reach `byol_keras.config`.
CORE = ("byol_keras.methods", "byol_keras.nn")
# What every layer reads, and which must load before TensorFlow: the config, the name
# tables and the field checker. They reach no folder of the package.
BOTTOM = ("byol_keras.config", "byol_keras.catalog", "byol_keras.schema", "byol_keras.errors")
FOLDERS = ("augment", "data", "evaluation", "export", "methods", "nn", "training", "transfer")


def within(module: str, folder: str) -> bool:
    """Whether `module` is `folder` or lies inside it."""
    return module == folder or module.startswith(folder + ".")


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports, anywhere in its source."""
    modules = module_names()
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from package import module` depends on the module itself.
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            else:
                continue
            imported |= {t for t in targets if t in modules and t != name}
        graph[name] = imported
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for successor in graph[todo.pop()] - seen:
            seen.add(successor)
            todo.append(successor)
    return seen


def test_the_graph_sees_imports_inside_functions_and_relative_imports():
    # A hand-checked sample: pretrain imports the method base at the top,
    # evaluation.pictures imports the segmentation pictures inside a function.
    graph = import_graph()
    assert "byol_keras.methods.base" in graph["byol_keras.pretrain"]
    assert "byol_keras.transfer.segment_pictures" in graph["byol_keras.evaluation.pictures"]


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_evaluation_and_export_never_import_each_other():
    graph = import_graph()
    crossings = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        for mine, theirs in (("evaluation", "export"), ("export", "evaluation"))
        if module.startswith(f"byol_keras.{mine}") and target.startswith(f"byol_keras.{theirs}")
    ]
    assert crossings == []


def test_the_core_does_not_reach_the_config():
    graph = import_graph()
    core = [module for module in graph if any(within(module, folder) for folder in CORE)]
    assert {"byol_keras.methods.byol", "byol_keras.nn.backbones"} <= set(core)
    reaching = sorted(
        m for m in core if any(within(r, "byol_keras.config") for r in reachable(graph, m))
    )
    assert reaching == []


def test_the_methods_never_import_training():
    graph = import_graph()
    crossings = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        if within(module, "byol_keras.methods")
        for target in targets
        if within(target, "byol_keras.training")
    ]
    assert crossings == []


def test_the_bottom_reaches_no_folder_of_the_package():
    graph = import_graph()
    reached = {
        f"{module} -> {target}"
        for module in BOTTOM
        for target in reachable(graph, module)
        if any(within(target, f"byol_keras.{folder}") for folder in FOLDERS)
    }
    assert reached == set()
