"""The public surface: one sorted `__all__`, the union of every module's."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

import shotstamp

MODULES = [
    "anchors",
    "canonical",
    "checkpoint",
    "client",
    "config",
    "consistency",
    "errors",
    "merkle",
    "models",
    "verify",
    "webhooks",
    "witness",
]
# Modules that are programs rather than library surface: not re-exported.
PROGRAMS = {"cli"}
SDK = Path(shotstamp.__file__).resolve().parent


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions.
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_every_module_is_listed() -> None:
    on_disk = {p.stem for p in SDK.glob("*.py") if not p.stem.startswith("_")}
    assert on_disk == set(MODULES) | PROGRAMS


@pytest.mark.parametrize("name", MODULES)
def test_module_all_lists_exactly_its_public_definitions(name: str) -> None:
    module = importlib.import_module(f"shotstamp.{name}")
    assert module.__all__ == sorted(module.__all__, key=_isort_key)
    defined = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }
    assert defined <= set(module.__all__)
    for attr in module.__all__:
        assert hasattr(module, attr), attr


def test_package_all_is_the_sorted_union_of_module_alls() -> None:
    union: list[str] = []
    for name in MODULES:
        module = importlib.import_module(f"shotstamp.{name}")
        union.extend(module.__all__)
        for attr in module.__all__:
            assert getattr(shotstamp, attr) is getattr(module, attr)
    assert len(union) == len(set(union))
    assert shotstamp.__all__ == sorted(union, key=_isort_key)

