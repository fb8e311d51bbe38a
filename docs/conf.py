"""Sphinx configuration: the user guide (Markdown, via MyST) and the API reference (numpydoc docstrings)."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("KERAS_BACKEND", "torch")

import fastconv  # noqa: E402  (the installed, compiled package documents itself)

project = "fastconv"
author = "the fastconv developers"
copyright = "2026, the fastconv developers"
release = fastconv.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autosummary_generate = True
# scikit-learn generates set_*_request methods on every estimator; their docstrings use sklearn's own glossary.
autodoc_default_options = {"members": True, "inherited-members": False,
                           "exclude-members": "set_fit_request,set_score_request,set_predict_request,"
                                              "set_predict_proba_request"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Links to files outside the docs (examples/, BENCHMARKS.md) are fine in the Markdown sources on GitHub; in the
# built HTML they are plain links, not cross-references.
suppress_warnings = ["myst.xref_missing"]
html_theme = "alabaster"
html_title = f"fastconv {release}"
