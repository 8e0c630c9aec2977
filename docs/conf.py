"""Sphinx configuration for the commhistory documentation.

Built by ``nox -s docs`` with ``-n -W``: every cross-reference must resolve and
every warning is an error. The doctest builder runs the examples in the pages.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import Any

project = "commhistory"
author = "The commhistory developers"
copyright = "the commhistory developers"
release = _version("commhistory")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

# -- MyST ---------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc and napoleon ----------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# -- nitpicky references -----------------------------------------------------
# The build has no network, so there is no intersphinx; references to the
# standard library and to dependencies cannot resolve. Ignore exactly those,
# by module prefix, rather than switching nitpicky mode off: a typo in one of
# our own names still fails the build.
nitpicky = True
_STDLIB = (
    r"(datetime|timedelta|decimal|collections\.abc|typing|enum|pathlib|os|functools"
    r"|abc|ipaddress|math|zoneinfo)"
)
_DEPENDENCIES = (
    r"(attrs|attr|cattrs|sqlalchemy|cryptography|phonenumbers|email_validator"
    r"|starlette|flask|django)"
)
nitpick_ignore_regex = [
    # Standard library names in signatures and docstrings (datetime, Decimal,
    # Mapping, os.PathLike, functools.lru_cache, datetime.UTC, abc.ABC,
    # ipaddress.IPv4Network, math.erf, zoneinfo.ZoneInfo).
    ("py:(class|data|func|mod)", rf"{_STDLIB}(\..*)?"),
    # Builtin exceptions our errors also inherit, as show-inheritance prints them.
    ("py:class", r"(ValueError|KeyError|LookupError|PermissionError|Exception)"),
    # Dependencies whose inventories intersphinx would provide.
    ("py:(class|mod|func|exc)", rf"{_DEPENDENCIES}(\..*)?"),
    # The same, as our modules spell them in annotations that only a type checker
    # imports (``import sqlalchemy as sa``; cryptography's ``ec`` and ``rsa``; Starlette's
    # ``Route``), so autodoc shows them unresolved.
    ("py:class", r"(sa|ec|rsa)\..*"),
    ("py:class", r"Route"),
]
# Without intersphinx, the builtin ``type`` of annotations (``type[Message]``) is
# looked up among our own attributes named ``type`` (``Event.type``, the contact
# attribute declarations' ``type``); more than one is found and Sphinx warns.
# Only that ambiguity is silenced: an unresolved reference still fails.
suppress_warnings = ["ref.python"]
nitpick_ignore = [
    # A private type in a public signature (``SQLRepository.backend``); it is
    # deliberately not documented.
    ("py:class", "commhistory.store._backend.Backend"),
    # The type variable of ``CommHistory[S]`` (the store it composes); autodoc
    # prints it in signatures but a TypeVar has no page of its own.
    ("py:class", "S"),
    ("py:class", "commhistory.facade.history.S"),
    ("py:obj", "commhistory.facade.history.S"),
    # The parts SQLRepository is built from (``sql_core``, ``sql_ingest``,
    # ``sql_reads``), shown as its bases; their methods are documented on it.
    ("py:class", "commhistory.store.sql_core.SQLCore"),
    ("py:class", "commhistory.store.sql_ingest.SQLIngest"),
    ("py:class", "commhistory.store.sql_reads.SQLReads"),
    # Shared private bases: the write entry points and the context-manager shape.
    ("py:class", "commhistory.store.batching.BatchedWrites"),
    ("py:class", "commhistory._lifecycle.ClosesOnExit"),
]

# -- doctest -------------------------------------------------------------------
doctest_global_setup = """
import commhistory as ch
from datetime import datetime, timezone, timedelta
from decimal import Decimal
"""

# -- HTML --------------------------------------------------------------------
html_theme = "furo"
html_title = f"commhistory {release}"
html_static_path: list[str] = []


# -- re-exported names -----------------------------------------------------
# The API page documents each object once, under its public name: ``Keyring``
# as ``commhistory.Keyring``, ``compare`` as ``commhistory.kpi.compare``. A
# docstring may still name it by another import path (``commhistory.crypto.Keyring``,
# ``commhistory.kpi.abtest.compare``, or ``compare`` inside ``commhistory.kpi.abtest``).
# When such a reference does not resolve, import what it names and, if that very
# object is documented under another name with the same last component, link there.
# A name that imports nothing, or an object documented nowhere, still fails.
_MISSING = object()


def _import_path(path: str) -> Any:
    """Return the object ``path`` names (a module, then attributes), or ``_MISSING``."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        # A classmethod is a new bound method on every access; compare its function.
        return getattr(obj, "__func__", obj)
    return _MISSING


def _documented(app: Any) -> dict[tuple[int, str], str]:
    """Map (object id, last name component) to the name the object is documented under.

    Built once per build, when the first reference fails: by then every page has
    been read. Kept on the application, not the environment, so it is never pickled.
    """
    cache: dict[tuple[int, str], str] | None = getattr(app, "_commhistory_documented", None)
    if cache is None:
        cache = {}
        for name, entry in app.env.get_domain("py").objects.items():
            if entry.aliased or not name.startswith("commhistory"):
                continue
            obj = _import_path(name)
            if obj is not _MISSING:
                cache.setdefault((id(obj), name.rpartition(".")[2]), name)
        app._commhistory_documented = cache
    return cache


def _resolve_reexport(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates.insert(0, f"{module}.{target}")
    if module and cls:
        candidates.insert(0, f"{module}.{cls}.{target}")
        # A short name in a class's docstring means what it means in the module
        # that defines the class, wherever the class is documented.
        home = getattr(_import_path(f"{module}.{cls.partition('.')[0]}"), "__module__", None)
        if isinstance(home, str) and home != module:
            candidates.append(f"{home}.{target}")
    for candidate in candidates:
        if not candidate.startswith("commhistory"):
            continue
        obj = _import_path(candidate)
        if obj is _MISSING:
            continue
        name = _documented(app).get((id(obj), target.rpartition(".")[2]))
        if name is None:
            continue
        domain = env.get_domain("py")
        resolved = domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
        )
        if resolved is not None:
            return resolved
    return None


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_reexport)
