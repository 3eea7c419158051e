"""Data flows one way: kid.data reads data and imports neither the SQL scorer nor the
benchmark generator built above it (kid.data.synth is only the contract's command name)."""

import ast
import pathlib

KID = pathlib.Path(__file__).resolve().parents[1] / "kid"


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_kid_data_imports_nothing_above_it():
    entry_point = KID / "data" / "synth" / "__main__.py"
    for path in sorted((KID / "data").rglob("*.py")):
        if path == entry_point:
            continue
        above = {n for n in _imports(path) if n.startswith(("kid.sql", "kid.synth", "kid.models"))}
        assert not above, f"{path.relative_to(KID.parent)} imports {sorted(above)}"
