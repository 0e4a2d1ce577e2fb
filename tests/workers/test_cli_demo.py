"""``seawall demo`` without a source checkout: the shop is not installed with the framework,
so the demo says where it runs from and exits 1, before it touches Redis."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from workers.cli import demo as demo_module


def test_the_shop_is_found_in_the_checkout_above_the_workers_package() -> None:
    root = demo_module.source_root()
    assert (root / "workers" / "__init__.py").is_file()
    assert (root / "examples" / "shop" / "app.py").is_file()


def test_without_a_checkout_the_demo_exits_1_and_says_how_to_get_one(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Given workers installed somewhere with no examples/ beside it (a wheel in site-packages)
    monkeypatch.setattr(demo_module, "source_root", lambda: tmp_path)

    result = CliRunner().invoke(demo_module.demo, ["--redis-url", "redis://127.0.0.1:1/0"])

    assert result.exit_code == 1
    assert "runs the example shop from a source checkout" in result.output
    assert "pip install -e ." in result.output


def test_the_workers_get_the_checkout_on_their_pythonpath(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setattr("sys.path", ["/x"])

    env = demo_module._on_path(tmp_path)

    assert env == {"PYTHONPATH": f"{tmp_path}{os.pathsep}/elsewhere"}
    assert sys.path[0] == str(tmp_path)
