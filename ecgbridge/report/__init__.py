"""Evaluation and review pictures: accuracy metrics, figures, page overlays, debug images.

:mod:`ecgbridge.report.metrics` needs only numpy; :mod:`ecgbridge.report.figures` needs the
optional ``plot`` extra (matplotlib); :mod:`ecgbridge.report.overlay` and
:mod:`ecgbridge.report.debug_images` draw with OpenCV so the daemon can produce them.
"""
