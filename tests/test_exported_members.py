"""``__all__`` is exactly the public surface, and every public name is documented."""

from __future__ import annotations

import importlib
import inspect

import pytest

import commhistory as ch

PUBLIC_MODULES = [
    "commhistory",
    "commhistory.errors",
    "commhistory.model",
    "commhistory.convert",
    "commhistory.normalize",
    "commhistory.crypto",
    "commhistory.store",
    "commhistory.kpi",
    "commhistory.consent",
    "commhistory.privacy",
    "commhistory.providers",
    "commhistory.testing",
    "commhistory.audit",
]


def test_package_all_is_exactly_its_public_names() -> None:
    for attr in ch.__all__:
        getattr(ch, attr)  # the package imports its names on first use
    public = {
        attr
        for attr, value in vars(ch).items()
        if not attr.startswith("_")
        and not inspect.ismodule(value)
        and attr not in {"annotations", "TYPE_CHECKING"}
    }
    # Subpackages whose names are part of the contract (``ch.kpi.compute``).
    public_modules = {"kpi"}
    assert set(ch.__all__) == public | {"__version__"} | public_modules


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_module_all_lists_what_it_defines(name: str) -> None:
    module = importlib.import_module(name)
    defined = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == name
    }
    assert defined <= set(module.__all__)
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_exported_name_is_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__
    for attr in module.__all__:
        value = getattr(module, attr)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{attr} has no docstring"


def test_version_is_the_installed_distribution() -> None:
    from importlib.metadata import version

    assert ch.__version__ == version("commhistory")
