"""Each script once per page (a Sphinx extension of this book, listed in _config.yml)."""
from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx


def drop_repeated_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Each script once per page. sphinx-thebe registers its inline ``const THEBE_JS_URL = ...``
    script twice under Jupyter Book, and the second copy throws "Identifier 'THEBE_JS_URL' has
    already been declared" in every page's console (tools/check_book.py fails on such errors)."""
    seen, kept = set(), []
    for js in context.get("script_files", []):
        # the same file or inline body with the same attributes, whatever its priority
        key = (str(getattr(js, "filename", js) or ""),
               tuple(sorted((k, str(v)) for k, v in (getattr(js, "attributes", None) or {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"] = kept


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("html-page-context", drop_repeated_scripts, priority=900)   # after the theme's handlers
    return {"parallel_read_safe": True, "parallel_write_safe": True}
