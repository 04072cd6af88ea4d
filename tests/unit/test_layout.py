"""The test pyramid stays what tests/conftest.py says it is: unit tests are pure (no
store, no processes, no test module's bodies), processes start only in tests/e2e (and
through tests/processes.py), every e2e module is marked ``e2e``."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# What a unit test may not import: a store, a read model, a server, a process.
NOT_PURE = ("sqlite3", "psycopg", "eventsourcing", "adapters.store", "projections", "falcon.testing",
            "subprocess", "tests.processes", "tests.service", "tests.http", "tests.e2e")
# ... nor ask for one of tests/conftest.py's (or tests/http/conftest.py's) store or app fixtures.
STORE_FIXTURES = {"store", "pg_store", "postgres_url", "runtime", "sqlite_runtime", "app", "client", "sqlite_app",
                  "sqlite_client", "raw_app"}
PROCESSES = ("subprocess", "tests.processes", "multiprocessing")


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def fixtures_asked(path: Path) -> set[str]:
    return {arg.arg for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.FunctionDef) for arg in node.args.args}


def modules(folder: str) -> list[Path]:
    return sorted((TESTS / folder).glob("*.py"))


def starts_with_any(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_unit_tests_need_no_store_no_process_and_no_other_layer():
    found = {path.name: sorted(n for n in imported(path) if starts_with_any(n, NOT_PURE))
             + sorted(fixtures_asked(path) & STORE_FIXTURES) for path in modules("unit")}
    assert len(found) >= 5
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_no_test_module_takes_bodies_from_another_test_module_below_e2e():
    """Sample bodies live in tests/samples.py, not in a test module (e2e may reuse a
    lower layer's oracle, as test_concurrency does)."""
    borrowed = {}
    for folder in ("unit", "service", "http"):
        for path in modules(folder):
            others = sorted(n for n in imported(path) if n.startswith("tests.") and n.rpartition(".")[2].startswith("test_"))
            if others:
                borrowed[f"{folder}/{path.name}"] = others
    assert borrowed == {}


def test_only_e2e_tests_start_processes_and_all_of_them_say_so():
    for folder in ("unit", "service", "http"):
        for path in modules(folder):
            assert not [n for n in imported(path) if starts_with_any(n, PROCESSES)], f"{folder}/{path.name} starts processes"
    e2e = [path for path in modules("e2e") if path.name.startswith("test_")]
    assert len(e2e) >= 9
    for path in e2e:
        text = path.read_text()
        assert "pytestmark" in text and "pytest.mark.e2e" in text.split("pytestmark", 1)[1].split("\n\n", 1)[0], path.name
        assert "Popen" not in text, f"{path.name}: start processes through tests/processes.py"
