"""The house rules that import-linter cannot check: small modules, a short top level, no private name imported
from another room, no test importing a benchmark script."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rescore"


def test_modules_stay_small_and_the_top_level_short():
    long = {str(f.relative_to(ROOT)): n for f in PACKAGE.rglob("*.py") if (n := len(f.read_text().splitlines())) > 500}
    assert not long, long
    assert len(list(PACKAGE.glob("*.py"))) <= 8


def test_no_private_name_crosses_rooms():
    crossing = []
    for f in PACKAGE.rglob("*.py"):
        room = f.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rescore."):
                target = node.module.split(".")[1]
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private and target != room:
                    crossing.append(f"{f.relative_to(ROOT)}: {node.module} {private}")
    assert not crossing, crossing


def test_no_test_imports_a_benchmark():
    for f in (ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n == "eval" or n.startswith("eval.") for n in names), f.name
