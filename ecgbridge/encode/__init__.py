"""Encoders (ECG -> file formats) and readers (file formats -> ECG).

:data:`WRITERS` maps a ``--format`` name to a function
``write(ecg, out_dir, stem, context) -> list[Path]``; modules register themselves
in :mod:`ecgbridge.encode.registry`. The review overlay (``overlay``: traces drawn
over the page) is one of them.
"""

from ecgbridge.encode.registry import WRITERS, WriteContext, available_formats, write_outputs

__all__ = ["WRITERS", "WriteContext", "available_formats", "write_outputs"]
