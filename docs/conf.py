"""Sphinx configuration: MyST Markdown pages, the pydata theme, and the pages generated from
the package (REST reference, configuration reference) by ``_ext/agentbuild_docs.py``.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors). Nothing is
fetched from the network.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

from jupyter_agentbuild import __version__  # noqa: E402

project = "jupyter_agentbuild"
author = "jupyter_agentbuild contributors"
copyright = "jupyter_agentbuild contributors"
version = release = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "agentbuild_docs"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": False}

html_theme = "pydata_sphinx_theme"
html_title = "jupyter_agentbuild"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_static_path: list[str] = []
