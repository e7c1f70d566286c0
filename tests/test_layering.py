"""The import rules of the project, read from every module's imports (ast, nothing is run).

generation/ and reward_models/ never import each other; the evaluator (geneval/) and the shapes
world (shapes/) import neither of them, nor the policies, dpo/ or training/; search.py (the paper's
policies) imports neither scaling_policies.py nor the registry policies.py, which stands above both; the recipes in training/
are imported by nothing outside training/; and nothing imports ``main``. No test module imports another
test module (``test_*.py``): shared fixtures live in conftest.py or a helper module (``*_fixtures.py``).
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICY_MODULES = {"search", "scaling_policies", "policies"}
LIBRARIES = ("generation", "reward_models", *sorted(POLICY_MODULES), "dpo", "training")
FORBIDDEN = {
    "generation": {"reward_models", *POLICY_MODULES, "dpo", "training", "main"},
    "reward_models": {"generation", *POLICY_MODULES, "dpo", "training", "main"},
    # The paper's policies, then the later ones built on them, then the registry of both.
    "search": {"scaling_policies", "policies"},
    "scaling_policies": {"policies"},
    "geneval": set(LIBRARIES) | {"main"},
    "shapes": set(LIBRARIES) | {"main"},
}
"""Top-level package of the importer -> top-level names it must not import."""


def modules() -> list[Path]:
    skip = {"tests", ".venv", "build", ".git"}
    return sorted(p for p in REPO.rglob("*.py") if not skip & set(p.relative_to(REPO).parts))


def imported(path: Path) -> set[str]:
    """Top-level names of every import in ``path``, at any depth (lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def owner(path: Path) -> str:
    parts = path.relative_to(REPO).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_every_module_keeps_the_import_rules():
    broken = []
    for path in modules():
        package, names = owner(path), imported(path)
        bad = names & FORBIDDEN.get(package, set())
        if package != "training":
            bad |= names & {"training", "main"}
        broken += [f"{path.relative_to(REPO)} imports {name}" for name in sorted(bad)]
    assert not broken, "import rules broken:\n" + "\n".join(broken)


def test_the_rule_reader_sees_lazy_imports(tmp_path):
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from reward_models.judge import Question\n    import main as runner\n")
    assert imported(source) == {"reward_models", "main"}


def imported_test_modules(path: Path) -> set[str]:
    """Every ``test_*`` module that ``path`` imports, at any depth, as ``test_x`` or ``tests.test_x``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[-1].startswith("test_")}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[-1].startswith("test_"):
                names.add(module)
            if module in ("", "tests"):  # ``from tests import test_x``, ``from . import test_x``
                names |= {f"{module}.{alias.name}".lstrip(".") for alias in node.names
                          if alias.name.startswith("test_")}
    return names


def test_no_test_module_imports_another():
    broken = [f"{path.relative_to(REPO)} imports {name}" for path in sorted((REPO / "tests").glob("*.py"))
              for name in sorted(imported_test_modules(path))]
    assert not broken, "put shared fixtures in conftest.py or a *_fixtures.py module:\n" + "\n".join(broken)


def test_the_test_import_reader_sees_every_spelling(tmp_path):
    source = tmp_path / "spellings.py"
    source.write_text("import test_a\nfrom test_b import x\nfrom tests.test_c import y\nfrom tests import test_d\n"
                      "def f():\n    import tests.test_e as e\nfrom runner_fixtures import test_like_name\n"
                      "from dpo_fixtures import pair_file\n")
    assert imported_test_modules(source) == {"test_a", "test_b", "tests.test_c", "tests.test_d", "tests.test_e"}
