"""Facts printed in a vector PDF's text layer: the acquisition date/time and filter settings.

Carts print the recording time in the page header (``05.02.2021 13:39:33``,
``2009/10/21 09:59:17``, ``23-MAY-2005 21:27:32``, or the date and time as two text
items). Other printed times are not the recording's: print time (``Gedruckt am ...``,
``Printed ...``), edit/confirmation time (``EDT:``, ``Confirmed``) and dates without a
time (birth dates) are skipped. All remaining candidates must agree (pages repeat the
header); otherwise the time is unknown. ``dd/dd/yyyy`` is used only when one part is
above 12 (else day and month cannot be told apart). The result is local wall-clock time
without a zone (see the ``timezone`` setting).

Patient ID: only a labelled value (``Patienten-Nr.: 1282423``, ``Pat.-ID: 7``,
``Patient ID: 7``, ``ID:502`` as GE MUSE prints it; not ``CID:``/``EID:``), all
candidates agreeing. It is offered, not used, unless the ``printed_identity`` setting
accepts it (a misread ID files an ECG under another patient).

Filter settings: a band ``0.05-150 Hz``, labelled values (``TP 40Hz``/``LP``/``low-pass``
-> high cut-off, ``HP`` -> low cut-off, ``AC 50Hz``/``notch`` -> notch), and a bare
``40Hz`` item as GE carts print the low-pass (50/60 Hz alone are ambiguous, skipped).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from ecgbridge.inputs.page import Page

#: Evidence text of a printed acquisition time.
PRINTED_EVIDENCE = "date and time printed on the page"

_MONTHS = {m: i + 1 for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))}
_DATE = re.compile(
    r"(?P<dmy>(?P<d1>\d{1,2})\.(?P<m1>\d{1,2})\.(?P<y1>\d{4}))"
    r"|(?P<ymd>(?P<y2>\d{4})[-/](?P<m2>\d{1,2})[-/](?P<d2>\d{1,2}))"
    r"|(?P<dmony>(?P<d3>\d{1,2})[- ](?P<mon>[A-Za-z]{3})[- ](?P<y3>\d{4}))"
    r"|(?P<slash>(?P<a4>\d{1,2})/(?P<b4>\d{1,2})/(?P<y4>\d{4}))"
)
_TIME = re.compile(r"^(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?$")
_EXCLUDE = re.compile(
    r"gedruckt|printed|print|drucks|\bedt\b|edited|confirm|bestätigt|geb\.|birth|\bdob\b",
    re.IGNORECASE,
)
_NUMBER = r"(\d+(?:[.,]\d+)?)"
_BAND = re.compile(_NUMBER + r"\s*[-–]\s*" + _NUMBER + r"\s*Hz", re.IGNORECASE)
_LABELLED = (
    ("high_hz", re.compile(r"(?:\bTP|\bLP|low-?pass|tiefpass)\s*:?\s*" + _NUMBER + r"\s*Hz",
                           re.IGNORECASE)),
    ("low_hz", re.compile(r"(?:\bHP|high-?pass|hochpass)\s*:?\s*" + _NUMBER + r"\s*Hz",
                          re.IGNORECASE)),
    ("notch_hz", re.compile(r"(?:\bAC|notch|netzfilter)\s*:?\s*" + _NUMBER + r"\s*Hz",
                            re.IGNORECASE)),
)
_BARE = re.compile(r"(?:^|mm/mV\s+)(\d+)\s*Hz\s*$", re.IGNORECASE)
_MAINS = re.compile(r"\b(50|60)\s*Hz", re.IGNORECASE)


def page_texts(pages: Sequence[Page]) -> list[str]:
    """Text items of the pages in order (empty for raster pages)."""
    return [item.text.replace("\u2011", "-").strip() for page in pages for item in page.texts]


def printed_acquisition_time(texts: Sequence[str]) -> str:
    """The recording time printed on the pages as a DICOM DT (``YYYYMMDDHHMMSS``), or ``""``."""
    found = set()
    for index, text in enumerate(texts):
        if _EXCLUDE.search(text):
            continue
        for match in _DATE.finditer(text):
            day = _date_of(match)
            if day is None:
                continue
            rest = text[match.end():].strip()
            if not rest and index + 1 < len(texts):
                rest = texts[index + 1]
            when = _time_of(rest.split()[0] if rest.split() else "")
            if when is not None:
                found.add(day + when)
    return found.pop() if len(found) == 1 else ""


def _date_of(match: re.Match[str]) -> str | None:
    g = match.groupdict()
    if g["dmy"]:
        y, m, d = int(g["y1"]), int(g["m1"]), int(g["d1"])
    elif g["ymd"]:
        y, m, d = int(g["y2"]), int(g["m2"]), int(g["d2"])
    elif g["dmony"]:
        month = _MONTHS.get(g["mon"].upper())
        if month is None:
            return None
        y, m, d = int(g["y3"]), month, int(g["d3"])
    else:
        a, b, y = int(g["a4"]), int(g["b4"]), int(g["y4"])
        if a > 12 >= b:
            d, m = a, b
        elif b > 12 >= a:
            m, d = a, b
        else:
            return None  # 03/04/2021: day and month cannot be told apart
    try:
        return datetime(y, m, d).strftime("%Y%m%d")
    except ValueError:
        return None


def _time_of(text: str) -> str | None:
    match = _TIME.match(text.strip().rstrip(",;"))
    if match is None:
        return None
    h, mi, s = int(match["h"]), int(match["mi"]), int(match["s"] or 0)
    if h > 23 or mi > 59 or s > 59:
        return None
    return f"{h:02d}{mi:02d}{s:02d}" if match["s"] else f"{h:02d}{mi:02d}"


_PATIENT_ID = re.compile(
    r"(?:patienten-?nr\.?|pat\.?\s*-?\s*id|patient\s*id|(?<![A-Za-z])id)\s*:\s*"
    r"([A-Za-z0-9][A-Za-z0-9._/-]{0,63})",
    re.IGNORECASE,
)


def printed_identity(texts: Iterable[str]) -> dict[str, str]:
    """The patient ID printed with a label on the pages (``{"PatientID": ...}``), or ``{}``."""
    found = {match.group(1) for text in texts for match in _PATIENT_ID.finditer(text)}
    return {"PatientID": found.pop()} if len(found) == 1 else {}


def printed_filters(texts: Iterable[str]) -> dict[str, float]:
    """Filter settings printed on the pages (Hz); a setting printed with two values is dropped."""
    seen: dict[str, set[float]] = {}
    for text in texts:
        for key, value in _filters_of(text).items():
            seen.setdefault(key, set()).add(value)
    return {key: values.pop() for key, values in seen.items() if len(values) == 1}


def _filters_of(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    band = _BAND.search(text)
    if band:
        out["low_hz"], out["high_hz"] = _num(band.group(1)), _num(band.group(2))
        mains = _MAINS.search(text[band.end():])
        if mains:
            out["notch_hz"] = float(mains.group(1))
    for key, pattern in _LABELLED:
        match = pattern.search(text)
        if match:
            out[key] = _num(match.group(1))
    if not out:
        bare = _BARE.search(text)
        if bare and int(bare.group(1)) not in (50, 60):
            out["high_hz"] = float(bare.group(1))
    return out


def _num(text: str) -> float:
    return float(text.replace(",", "."))
