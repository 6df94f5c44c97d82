"""What a writer gets besides the ECG: the loaded input and the writer options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ecgbridge.errors import EncodingError
from ecgbridge.fsutil import parse_file_mode


@dataclass(frozen=True)
class WriteContext:
    """Extra material some writers need (e.g. the page images for overlays).

    Attributes
    ----------
    loaded : object or None
        The :class:`ecgbridge.inputs.page.LoadedInput` the ECG was digitized from.
    options : dict
        Writer-specific options (e.g. ``{"fhir_subject": "Patient/1"}``); ``file_mode``
        (octal text such as ``"0640"``) fixes the permissions of every file written,
        which otherwise follow the umask.
    """

    loaded: Any = None
    options: dict[str, Any] | None = None


def file_mode_of(context: Any) -> int | None:
    """The permission bits the writers give their files (None: follow the umask).

    Raises
    ------
    EncodingError
        If the ``file_mode`` option is not an octal mode.
    """
    options = getattr(context, "options", None) or {}
    try:
        return parse_file_mode(options.get("file_mode"))
    except ValueError as exc:
        raise EncodingError(f"file_mode: {exc}") from None
