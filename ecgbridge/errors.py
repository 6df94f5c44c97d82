"""Error hierarchy of ecgbridge.

Every error says what was wrong with which input, so a daemon can put the
message beside the quarantined file and a person can act on it.
"""

from __future__ import annotations

import re


class EcgBridgeError(Exception):
    """Base class of all errors raised by ecgbridge on purpose."""


class ConfigError(EcgBridgeError, ValueError):
    """A configuration value is invalid; the message names the key."""


class OptionError(EcgBridgeError, ValueError):
    """A digitizer option is unknown or out of range; the message names the option."""


class InputError(EcgBridgeError, ValueError):
    """An input file or object cannot be read (corrupt, truncated, unsupported)."""


class UnsupportedInputError(InputError):
    """The input is readable but of a kind ecgbridge does not digitize
    (e.g. an unsupported DICOM SOP class or transfer syntax)."""


class ImageTooLargeError(InputError):
    """The image exceeds the configured pixel limit (decompression bomb guard)."""


class DigitizationError(EcgBridgeError):
    """The page could be read but no trustworthy ECG could be extracted
    (not an ECG, blank page, no grid, no traces...)."""


class NotAnEcgError(DigitizationError):
    """The image does not look like an ECG page."""


class EncodingError(EcgBridgeError, ValueError):
    """An ECG cannot be encoded into the requested output format."""


class DeliveryError(EcgBridgeError):
    """A destination refused or could not be reached.

    Parameters
    ----------
    message : str
        What went wrong.
    retryable : bool
        True when trying again later may succeed (server down, 5xx);
        False for permanent refusals (4xx, DICOM failure status).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


#: Python's rendering of an object without a readable form (``<_io.BytesIO object at 0x…>``).
_OBJECT_REPR = re.compile(r"<[^<>]*? (?:object )?at 0x[0-9a-fA-F]+>")


def plain(text: str) -> str:
    """`text` without Python object addresses, on one line."""
    return " ".join(_OBJECT_REPR.sub("(data)", text).split())


def describe_failure(exc: BaseException) -> str:
    """Why an input failed, in words a user can act on (never a bare exception name).

    Errors raised on purpose (:class:`EcgBridgeError`) keep their message; running
    out of memory or disk says so; anything else is a defect of ecgbridge, said as
    such without Python's internals (the details belong in the log).
    """
    if isinstance(exc, EcgBridgeError):
        return plain(str(exc)) or "the input could not be digitized"
    if isinstance(exc, MemoryError):
        return "out of memory while digitizing"
    if isinstance(exc, OSError):
        reason = exc.strerror or "input/output error"
        return f"a file could not be read or written ({reason.lower()})"
    return ("ecgbridge could not process this input because of an unexpected problem in "
            "the program (a defect to report; the details are in the log)")
