"""The public API is pinned: a name added to or dropped from ``__all__`` is a decision,
made here on purpose (after httpx's tests/test_exported_members.py).

The packages are imported in a fresh interpreter, as a user imports them: inside pytest,
``tests/`` is on ``sys.path`` (the rootdir conftest) and its ``tests/workers`` and
``tests/queues`` directories would be picked up as namespace packages named ``workers``
and ``queues``, hiding the real ``__init__``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

WORKERS_ALL = {
    "App",
    "Call",
    "CircuitBreaker",
    "ConfigError",
    "Context",
    "HandlerError",
    "HandlerTimeout",
    "MessageRejected",
    "MessageTooLarge",
    "Next",
    "NonRetryable",
    "Outcome",
    "PayloadTooLarge",
    "PoolConfig",
    "Retry",
    "SeawallError",
    "SignatureError",
    "StepAborted",
}

QUEUES_ALL = {
    "Envelope",
    "EnvelopeError",
    "HandlerKeys",
    "connect",
    "connect_sync",
    "encode",
    "redact",
    "resolve_url",
}

PROBE = textwrap.dedent("""
    import importlib, json, sys
    out = {}
    for package in ("workers", "queues"):
        module = importlib.import_module(package)
        namespace = {}
        exec(f"from {package} import *", namespace)
        out[package] = {
            "file": module.__file__,
            "all": list(module.__all__),
            "star_matches": all(namespace[n] is getattr(module, n) for n in module.__all__),
            "owners": {n: getattr(getattr(module, n), "__module__", package)
                       for n in module.__all__},
        }
    import workers
    e = {n: getattr(workers, n) for n in workers.__all__}
    out["tree"] = {
        "config": issubclass(e["ConfigError"], (e["SeawallError"]))
                  and issubclass(e["ConfigError"], ValueError),
        "handler_errors": all(issubclass(e[n], e["HandlerError"])
                              for n in ("NonRetryable", "Retry", "HandlerTimeout")),
        "never_retried": all(issubclass(e[n], e["NonRetryable"])
                             for n in ("PayloadTooLarge", "MessageRejected", "StepAborted")),
        "rejected": all(issubclass(e[n], e["MessageRejected"])
                        for n in ("SignatureError", "MessageTooLarge")),
        "too_large": issubclass(e["PayloadTooLarge"], ValueError),
        "handler_error": issubclass(e["HandlerError"], e["SeawallError"]),
        "timeout": issubclass(e["HandlerTimeout"], TimeoutError),
    }
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("probe")
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_real_packages_were_imported(exported: dict[str, Any]) -> None:
    root = Path(__file__).resolve().parents[1]
    assert exported["workers"]["file"] == str(root / "workers" / "__init__.py")
    assert exported["queues"]["file"] == str(root / "queues" / "__init__.py")


@pytest.mark.parametrize(("package", "expected"), [("workers", WORKERS_ALL),
                                                   ("queues", QUEUES_ALL)])
def test_all_is_pinned_sorted_and_unique(exported: dict[str, Any], package: str,
                                          expected: set[str]) -> None:
    names = exported[package]["all"]

    assert set(names) == expected
    assert names == sorted(set(names))


@pytest.mark.parametrize("package", ["workers", "queues"])
def test_every_exported_name_is_importable_from_the_package(exported: dict[str, Any],
                                                            package: str) -> None:
    info = exported[package]

    assert info["star_matches"] is True
    # Each name is defined inside the package itself, not re-exported from a dependency.
    foreign = {n: o for n, o in info["owners"].items() if o.split(".")[0] != package}
    assert foreign == {}


def test_the_exceptions_form_the_documented_tree(exported: dict[str, Any]) -> None:
    assert exported["tree"] == dict.fromkeys(
        ("config", "handler_errors", "never_retried", "rejected", "too_large", "handler_error",
         "timeout"), True)


def test_importing_the_packages_emits_no_warnings(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-W", "error", "-c", "import workers, queues"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr


def test_queues_imports_nothing_from_workers() -> None:
    """Imports point one way: sagas -> workers -> queues."""
    import ast

    root = Path(__file__).resolve().parents[1] / "queues"
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names
                          if n.split(".")[0] in {"workers", "sagas"}]
    assert offenders == []
