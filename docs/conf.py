"""Sphinx configuration for the commhistory documentation.

Built by ``nox -s docs`` with ``-n -W``: every cross-reference must resolve and
every warning is an error. The doctest builder runs the examples in the pages.
"""

from __future__ import annotations

from importlib.metadata import version as _version

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
_STDLIB = r"(datetime|decimal|collections\.abc|typing|enum|pathlib|os|functools)"
_DEPENDENCIES = r"(attrs|attr|cattrs|sqlalchemy|cryptography|phonenumbers|email_validator)"
nitpick_ignore_regex = [
    # Standard library names in signatures and docstrings (datetime, Decimal,
    # Mapping, os.PathLike, functools.lru_cache, datetime.UTC).
    ("py:(class|data|func|mod)", rf"{_STDLIB}(\..*)?"),
    # Builtin exceptions our errors also inherit, as show-inheritance prints them.
    ("py:class", r"(ValueError|KeyError|LookupError|PermissionError|Exception)"),
    # Dependencies whose inventories intersphinx would provide.
    ("py:(class|mod|func|exc)", rf"{_DEPENDENCIES}(\..*)?"),
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
