"""Small Sphinx fixes for this book's website, loaded through ``_config.yml``
(``sphinx.local_extensions``).

- A notebook's reference solutions (code cells tagged ``solution``, see
  ``kdbook.exercises``) are folded on the website: each gets myst-nb's ``hide-input``
  tag at build time unless it already has a hide/remove tag, so no author can forget
  it. The notebooks themselves are not changed.
- A string glued with ``kdbook.report.glue`` is stored as its ``text/plain`` repr,
  ``'70.81'``, and ``{glue:}`` pastes that text as is, so Sphinx would print the quotes
  (curled: "reached ‘70.81’%"). Every glued output gets myst-nb's
  ``strip_text_quotes`` output flag at build time, so the string itself is pasted.
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


def _hide_solutions(cell: dict) -> bool:
    metadata = cell.setdefault("metadata", {})
    tags = list(metadata.get("tags", []))
    if cell.get("cell_type") == "code" and SOLUTION_TAG in tags and not HIDING_TAGS & set(tags):
        metadata["tags"] = [*tags, "hide-input"]
        return True
    return False


def _unquote_glued_strings(cell: dict) -> bool:
    # myst-nb's own switch (its eval role sets it): an inline text/plain pasted with its
    # outer quotes removed. Numbers have none, so every glued output may carry it.
    glued = [o for o in cell.get("outputs", []) if "scrapbook" in o.get("metadata", {})]
    for output in glued:
        output["metadata"]["strip_text_quotes"] = True
    return bool(glued)


def _fix_notebook(app, docname, source) -> None:
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    try:
        nb = json.loads(source[0])
    except ValueError:  # not JSON: leave it to myst-nb to report
        return
    changed = False
    for cell in nb.get("cells", []):
        changed |= _hide_solutions(cell)
        changed |= _unquote_glued_strings(cell)
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
    app.connect("source-read", _fix_notebook)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
