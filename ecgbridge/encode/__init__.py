"""Encoders (ECG -> file formats) and readers (file formats -> ECG).

:data:`WRITERS` (in :mod:`ecgbridge.encode.registry`) maps a ``--format`` name to the
``"module:function"`` of a writer ``write(ecg, out_dir, stem, context) -> list[Path]``,
imported when first used. Every writer lives in this package, the review overlay
(``overlay``: traces drawn over the page) included.
"""

from ecgbridge.encode.registry import WRITERS, WriteContext, available_formats, write_outputs

__all__ = ["WRITERS", "WriteContext", "available_formats", "write_outputs"]
