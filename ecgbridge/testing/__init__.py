"""Synthetic ECG pages with exact ground truth, for tests, development sets and tools.

Not part of the runtime: no module outside this package imports it (checked by
``tests/test_import_layers.py``) and the wheel leaves it out; tests and ``tools/`` import
it from the source tree.
"""

from ecgbridge.testing.render import RenderedPage, RenderedPanel, render_page

__all__ = ["RenderedPage", "RenderedPanel", "render_page"]
