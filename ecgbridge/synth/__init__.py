"""Synthetic ECG pages with exact ground truth, for tests, development sets and benchmarks."""

from ecgbridge.synth.render import RenderedPage, RenderedPanel, render_page

__all__ = ["RenderedPage", "RenderedPanel", "render_page"]
