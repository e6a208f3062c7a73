"""``objstore ui``: a local web view of a store (local or on a bucket).

Layer 7, above maintenance (it shows what ``du``, ``log``, ``show``, ``lineage``
and ``diff`` show) and below the CLI, which starts it. The pieces:

- :mod:`objstore.ui.views`: what each page shows, read through the same public
  library functions the CLI calls, never a second implementation;
- :mod:`objstore.ui.graph`: the lineage graph laid out as SVG boxes and edges;
- :mod:`objstore.ui.app`: the Starlette application (routes, templates, edits);
- :mod:`objstore.ui.serve`: binding a port, printing the address, stopping cleanly.

Invariants: the view is read-only unless started with ``allow_edits``; then each
change is one compare-and-swap against the value the page showed, behind a
per-server CSRF token, so a stale page's change is refused and said to be. Every
name, description and metadata value reaches the page through Jinja2's
autoescaping (no ``|safe`` on store data): a hostile alias never runs script.

Starlette, uvicorn and Jinja2 are the optional extra ``objstore[ui]``; importing
this package without them raises a one-line error naming the extra.
"""
