"""The import rules of docs/architecture.md, checked on the source.

Every module of ``src/steerable_alignment`` sits on a floor; a module may
import only from its own floor or the ones below, Kedro only on the top
floor, and named siblings not from each other (training and evaluation).
Imports inside functions count: they are how heavy libraries are deferred,
not a way round the rules. The module graph has no cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

PACKAGE = "steerable_alignment"
SOURCE = PROJECT_ROOT / "src" / PACKAGE

#: Floor of every module, by the longest matching dotted prefix (docs/architecture.md).
FLOORS = {
    # 0 foundations: nothing of the project below them
    "splits": 0,
    "runtime": 0,
    "models.config": 0,
    # 1 data: contracts, episodes, tokenised pairs, the data generators
    "episodes": 1,
    "contracts": 1,
    "policy.base_model": 1,  # the policy's data side (docs/architecture.md)
    "policy.tokenise": 1,
    "policy.pairs": 1,
    "ultrafeedback": 1,
    "synthetic": 1,
    # 2 models: reward models, policies, the embedding models
    "models": 2,
    "policy": 2,
    "embedding": 2,
    # 3 training (the loop, and the recipes on it) and evaluation, side by side
    "training": 3,
    "recipes": 3,
    "evaluation": 3,
    # 4 what a user reads: steering logic, report building
    "steering": 4,
    "reporting": 4,
    # 5 the Kedro adapters and entry points
    "datasets": 5,
    "pipelines": 5,
    "hooks": 5,
    "settings": 5,
    "pipeline_registry": 5,
    "steer": 5,
    "__main__": 5,
}
TOP = max(FLOORS.values())
#: Same-floor packages that must not import each other (either way).
SIBLINGS = [
    ("training", "evaluation"),
    ("recipes", "evaluation"),
    ("training", "recipes"),
    ("steering", "reporting"),
    ("models", "policy"),
]
#: Allowed despite the sibling rule, one way only: the NP-DPO policy starts from the
#: reward model's context encoder (policy -> models); a recipe runs the loop
#: (recipes -> training), the loop never knows a recipe.
ONE_WAY = {("policy", "models"), ("recipes", "training")}
FRAMEWORKS = ("kedro", "kedro_datasets", "kedro_viz")


def module_name(path: Path, source: Path = SOURCE) -> str:
    parts = path.relative_to(source).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


def imports_of(path: Path, source: Path = SOURCE) -> list[tuple[str, int]]:
    """(imported name, line) of every import in the file, function-level ones included.

    Project modules are given relative to the package (``training.loop``);
    libraries by their top-level name after ``<lib>`` (``<lib>kedro``).
    """
    module = module_name(path, source)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                name = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            names = [name]
            if name.startswith(PACKAGE):  # `from package import submodule` imports the submodule
                names += [f"{name}.{alias.name}" for alias in node.names]
            found += [(n, node.lineno) for n in names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    out = []
    for name, line in found:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            out.append((name[len(PACKAGE) + 1 :] or "__init__", line))
        else:  # a library: marked so that `datasets` (Hugging Face) is not ours
            out.append(("<lib>" + name.split(".")[0], line))
    return out


def floor_of(module: str) -> int | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in FLOORS:
            return FLOORS[prefix]
    return None


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def known(module: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name refers to (a name may be a function in it)."""
    if module.startswith("<lib>"):
        return None
    while module and module not in modules:
        module = module.rpartition(".")[0]
    return module or None


def test_every_module_has_a_floor():
    unplaced = [m for m in project_modules() if m != "__init__" and floor_of(m) is None]
    assert not unplaced, f"place these modules on a floor in FLOORS (and the docs): {unplaced}"


def test_no_module_imports_a_higher_floor_or_a_forbidden_sibling():
    modules = project_modules()
    wrong = []
    for module, path in modules.items():
        floor = floor_of(module)
        top = module.split(".")[0]
        for name, line in imports_of(path):
            target = known(name, modules)
            if target is None or target == "__init__":
                continue
            where = f"{path.relative_to(PROJECT_ROOT)}:{line}"
            if floor_of(target) > floor:
                wrong.append(
                    f"{where}: {module} (floor {floor}) imports {target} (floor {floor_of(target)})"
                )
            other = target.split(".")[0]
            for a, b in SIBLINGS:
                if {top, other} == {a, b} and top != other and (top, other) not in ONE_WAY:
                    wrong.append(f"{where}: {module} imports its sibling {target}")
    assert not wrong, "\n".join(wrong)


def test_only_the_top_floor_imports_kedro():
    wrong = [
        f"{path.relative_to(PROJECT_ROOT)}:{line}: {module} imports {name}"
        for module, path in project_modules().items()
        if floor_of(module) is not None and floor_of(module) < TOP
        for name, line in imports_of(path)
        if name.removeprefix("<lib>") in FRAMEWORKS and name.startswith("<lib>")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_module_graph_has_no_cycles():
    modules = project_modules()
    graph = {
        m: sorted({t for n, _ in imports_of(p) if (t := known(n, modules)) not in (None, m)})
        for m, p in modules.items()
    }
    # A package's __init__ re-exporting its own submodules is not a design cycle.
    graph = {
        m: [t for t in targets if not (m.startswith(t + ".") and modules[t].name == "__init__.py")]
        for m, targets in graph.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_architecture_doc_places_every_top_level_package():
    text = (PROJECT_ROOT / "docs" / "architecture.md").read_text()
    tops = sorted({m.split(".")[0] for m in FLOORS})
    missing = [t for t in tops if f"`{t}" not in text]
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_the_rules_catch_a_violation(tmp_path):
    """The checker itself: function-level imports of a pipeline, a sibling and Kedro are seen."""
    package = tmp_path / PACKAGE
    (package / "training").mkdir(parents=True)
    bad = package / "training" / "bad.py"
    bad.write_text(
        "def f():\n"
        "    from steerable_alignment.pipelines.dpo import nodes\n"
        "    from ..evaluation import metrics\n"
        "    import kedro.io\n"
    )
    names = {n for n, _ in imports_of(bad, package)}
    assert {"pipelines.dpo", "pipelines.dpo.nodes", "evaluation", "evaluation.metrics"} <= names
    assert "<lib>kedro" in names
    assert floor_of("pipelines.dpo.nodes") > floor_of("training.bad")
    assert floor_of("models.config") == 0 and floor_of("models.losses") == 2
