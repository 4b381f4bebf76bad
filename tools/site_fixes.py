"""Small Sphinx fixes for this book's website, loaded through ``_config.yml``
(``sphinx.local_extensions``).

- A notebook's reference solutions (code cells tagged ``solution``, see
  ``kdbook.exercises``) are folded on the website: each gets myst-nb's ``hide-input``
  tag at build time unless it already has a hide/remove tag, so no author can forget
  it. The notebooks themselves are not changed.
- Some extensions (sphinx-thebe, sphinx-togglebutton) end up with their inline
  configuration script twice in every page's ``<head>`` under Sphinx 7.4; sphinx-thebe's
  declares ``const THEBE_JS_URL``, so the second copy throws "Identifier 'THEBE_JS_URL'
  has already been declared" in every reader's console. Here each page keeps the first
  copy of every script (same file or same inline body, same attributes).
"""

from __future__ import annotations

import json

SOLUTION_TAG = "solution"
HIDING_TAGS = {"hide-input", "hide-cell", "remove-input", "remove-cell"}


def _hide_solutions(app, docname, source) -> None:
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    try:
        nb = json.loads(source[0])
    except ValueError:  # not JSON: leave it to myst-nb to report
        return
    changed = False
    for cell in nb.get("cells", []):
        metadata = cell.setdefault("metadata", {})
        tags = list(metadata.get("tags", []))
        if cell.get("cell_type") == "code" and SOLUTION_TAG in tags and not HIDING_TAGS & set(tags):
            metadata["tags"] = [*tags, "hide-input"]
            changed = True
    if changed:
        source[0] = json.dumps(nb, ensure_ascii=False)


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        # an inline script's filename is None or "" depending on how it was added
        key = (getattr(script, "filename", str(script)) or "",
               tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept  # the builder restores its own list after each page


def setup(app):
    app.connect("source-read", _hide_solutions)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
