"""Evaluation and review pictures: accuracy metrics, figures, debug images.

:mod:`ecgbridge.report.metrics` needs only numpy; :mod:`ecgbridge.report.figures` needs the
optional ``plot`` extra (matplotlib); :mod:`ecgbridge.report.debug_images` draws with
OpenCV. The review overlay is an output format: :mod:`ecgbridge.encode.overlay`.
"""
