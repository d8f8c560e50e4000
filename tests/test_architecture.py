"""Every import in esper/ — at module level or inside a function — against the layer table in
docs/architecture.md: a package imports only packages on a lower floor (a package's `__init__` may
re-export its own sub-packages), and only the runtime and the launcher import Ray."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "esper"
RAY_ALLOWED = ("esper.runtime", "esper.launch")


def layer_table() -> dict[str, int]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*`(esper[\w.]*)`", section, flags=re.M)
    return {name: int(floor) for floor, name in rows}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, me: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import statement anywhere in the file of module `me`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # `from esper.x import y` where y is a module imports esper.x.y
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names
                    if (PACKAGE.parent / f"{target}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                    or (PACKAGE.parent / f"{target}.{a.name}".replace(".", "/") / "__init__.py").exists()]
    return out


def owner(module: str, table: dict[str, int]) -> str | None:
    """The table row a module belongs to: the longest package name it starts with."""
    hits = [p for p in table if module == p or module.startswith(p + ".")]
    return max(hits, key=len) if hits else None


def test_the_layer_table_covers_every_module():
    table = layer_table()
    assert len(table) >= 12, f"could not read the layer table from docs/architecture.md: {table}"
    unowned = [module_name(p) for p in PACKAGE.rglob("*.py") if owner(module_name(p), table) is None
               and module_name(p) != "esper"]
    assert not unowned, f"modules without a row in docs/architecture.md's layer table: {unowned}"


def test_no_module_imports_its_own_floor_or_above():
    table = layer_table()
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        mine = owner(me, table)
        if mine is None:
            continue
        for line, target in imports(path, me):
            if not target.startswith("esper"):
                if target.split(".")[0] == "ray" and mine not in RAY_ALLOWED:
                    violations.append(f"{path.relative_to(ROOT)}:{line} imports ray ({mine} may not)")
                continue
            theirs = owner(target, table)
            if theirs is None or theirs == mine:
                continue
            reexport = path.name == "__init__.py" and target.startswith(me + ".")
            if not reexport and table[theirs] >= table[mine]:
                violations.append(f"{path.relative_to(ROOT)}:{line} {mine} (floor {table[mine]}) imports "
                                  f"{target} ({theirs}, floor {table[theirs]})")
    assert not violations, "imports against docs/architecture.md's layers:\n" + "\n".join(violations)


def test_the_walk_sees_imports_inside_functions_and_relative_ones(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from esper.config import load_config\n    import ray\n    from .core import x\n")
    found = {t for _, t in imports(f, "esper.simic.environment.m")}
    assert {"esper.config", "ray", "esper.simic.environment.core"} <= found
