"""Patient and order identity from an HL7 v2 message file (``X.hl7`` beside ``X.png``).

A hospital's order (ORM^O01, OMI^O23, OMG^O19) or result (ORU^R01) message for the ECG,
in the ordinary pipe-delimited encoding (ER7), gives:

============================  ==================================================
DICOM keyword                 HL7 v2 field
============================  ==================================================
PatientID, IssuerOfPatientID  PID-3 (the repetition with identifier type ``MR``, else
                              ``PI``, else the first): CX.1, and CX.4 (assigning
                              authority: namespace, else universal ID)
PatientName                   PID-5 (the legal name ``L`` if marked, else the first):
                              family^given^middle^prefix^suffix
PatientBirthDate              PID-7 (the date part, YYYYMMDD)
PatientSex                    PID-8: M, F, O; A and N as O; U left empty
AccessionNumber               IPC-1 (v2.5.1), else OBR-18 (IHE, v2.3.1), else
                              ORC-3.1 (filler order number), else OBR-3.1
StudyInstanceUID              IPC-3, else ZDS-1.1 (IHE)
============================  ==================================================

No time is taken from the message: an order's times are when it was placed or
scheduled, not when the ECG was recorded. Escape sequences (``\\F\\``, ``\\S\\``,
``\\T\\``, ``\\R\\``, ``\\E\\``, ``\\Xhh..\\``) are decoded; MLLP framing bytes are
ignored; the text is read in the character set MSH-18 names (UTF-8 when empty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ecgbridge.errors import InputError

#: Character sets of MSH-18 (HL7 table 0211) that Python decodes, by their HL7 name.
_CHARSETS = {
    "": "utf-8", "ASCII": "ascii", "UNICODE UTF-8": "utf-8", "8859/1": "latin-1",
    "8859/2": "iso8859-2", "8859/5": "iso8859-5", "8859/7": "iso8859-7",
    "8859/9": "iso8859-9", "8859/15": "iso8859-15",
}
#: PID-8 (HL7 table 0001) -> DICOM PatientSex.
_SEX = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O", "U": ""}
_FRAMING = "\x0b\x1c"


@dataclass(frozen=True)
class _Encoding:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str


def read_hl7_identity(data: bytes, name: str) -> dict[str, str]:
    """Patient and order identity (DICOM keyword -> value) of an HL7 v2 message.

    Parameters
    ----------
    data : bytes
        The message file (one message; MLLP framing allowed).
    name : str
        File name, for error messages.

    Returns
    -------
    dict
        Non-empty values among PatientID, IssuerOfPatientID, PatientName,
        PatientBirthDate (as given), PatientSex, AccessionNumber, StudyInstanceUID.

    Raises
    ------
    InputError
        Not an HL7 v2 message, no PID segment, two PID segments naming different
        patients, an unknown character set or PID-8 value.
    """
    text = _decode(data, name)
    encoding = _encoding(text, name)
    segments: dict[str, list[list[str]]] = {}
    for line in re.split(r"\r\n|\r|\n", text):
        if len(line) >= 3 and line[:3].isalnum():
            segments.setdefault(line[:3], []).append(line.split(encoding.field))
    patients = segments.get("PID", [])
    if not patients:
        raise InputError(f"{name}: HL7 message without a PID segment (no patient)")
    identities = [_patient(pid, encoding, name) for pid in patients]
    if any(other != identities[0] for other in identities[1:]):
        raise InputError(f"{name}: HL7 message names more than one patient")
    identity = dict(identities[0])
    identity.update(_order(segments, encoding))
    return {key: value for key, value in identity.items() if value}


def _decode(data: bytes, name: str) -> str:
    head = data.lstrip(b"\x0b\xef\xbb\xbf \r\n")
    if not head.startswith(b"MSH") or len(head) < 8:
        raise InputError(f"{name}: not an HL7 v2 message (it must begin with MSH)")
    separator = head[3:4]
    fields = head.split(b"\r", 1)[0].split(b"\n", 1)[0].split(separator)
    charset = fields[17].decode("ascii", "replace").split("~")[0].strip() \
        if len(fields) > 17 else ""
    codec = _CHARSETS.get(charset.upper())
    if codec is None:
        raise InputError(f"{name}: HL7 character set {charset!r} (MSH-18) is not supported; "
                         f"use one of {', '.join(repr(c) for c in _CHARSETS if c)}")
    try:
        text = head.decode(codec)
    except UnicodeDecodeError:
        if charset:
            raise InputError(f"{name}: HL7 message is not {charset} text as MSH-18 says") \
                from None
        text = head.decode("latin-1")  # no MSH-18: a common 8-bit legacy encoding
    return text.strip(_FRAMING + " \r\n")


def _encoding(text: str, name: str) -> _Encoding:
    field = text[3]
    chars = text[4:].split(field, 1)[0]
    if len(chars) < 4 or field.isalnum() or len(set(chars[:4] + field)) < 5:
        raise InputError(f"{name}: HL7 MSH-2 encoding characters {chars!r} are not valid")
    return _Encoding(field, chars[0], chars[1], chars[2], chars[3])


def _field(segment: list[str], number: int) -> str:
    return segment[number] if len(segment) > number else ""


def _first(segments: dict[str, list[list[str]]], key: str, number: int) -> str:
    for segment in segments.get(key, []):
        if _field(segment, number):
            return _field(segment, number)
    return ""


def _unescape(value: str, enc: _Encoding) -> str:
    """Decode HL7 escape sequences (``\\F\\`` ... ``\\Xhh\\``); others are dropped."""
    if enc.escape not in value:
        return value
    e = re.escape(enc.escape)
    plain = {"F": enc.field, "S": enc.component, "T": enc.subcomponent,
             "R": enc.repetition, "E": enc.escape}

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in plain:
            return plain[code]
        if code.startswith("X") and re.fullmatch(r"X(?:[0-9A-Fa-f]{2})+", code):
            return bytes.fromhex(code[1:]).decode("latin-1")
        return ""

    return re.sub(f"{e}([^{e}]*){e}", replace, value)


def _components(value: str, enc: _Encoding) -> list[str]:
    """Components of one repetition, each without its sub-components after the first."""
    return [_unescape(part.split(enc.subcomponent)[0], enc).strip()
            for part in value.split(enc.component)]


def _component(value: str, enc: _Encoding, number: int, sub: int = 1) -> str:
    parts = value.split(enc.component)
    if len(parts) < number:
        return ""
    subs = parts[number - 1].split(enc.subcomponent)
    return _unescape(subs[sub - 1], enc).strip() if len(subs) >= sub else ""


def _patient(pid: list[str], enc: _Encoding, name: str) -> dict[str, str]:
    identity: dict[str, str] = {}
    ids = [r for r in _field(pid, 3).split(enc.repetition) if _component(r, enc, 1)]
    if ids:
        chosen = next((r for kind in ("MR", "PI") for r in ids
                       if _component(r, enc, 5).upper() == kind), ids[0])
        identity["PatientID"] = _component(chosen, enc, 1)
        identity["IssuerOfPatientID"] = (_component(chosen, enc, 4, 1)
                                         or _component(chosen, enc, 4, 2))
    names = [r for r in _field(pid, 5).split(enc.repetition) if r.strip(enc.component)]
    if names:
        legal = next((r for r in names if _component(r, enc, 7).upper() == "L"), names[0])
        parts = [re.sub(r"[\^=\\]", " ", part).strip()  # PN separators inside a part
                 for part in (_components(legal, enc) + [""] * 5)[:5]]
        family, given, middle, suffix, prefix = parts
        identity["PatientName"] = "^".join((family, given, middle, prefix, suffix)).rstrip("^")
    born = _component(_field(pid, 7), enc, 1)
    if born:
        identity["PatientBirthDate"] = born[:8] if re.match(r"^\d{8}", born) else born
    sex = _unescape(_field(pid, 8), enc).strip().upper()
    if sex:
        if sex not in _SEX:
            raise InputError(f"{name}: HL7 PID-8 sex {sex!r} is not one of M, F, O, A, N, U")
        identity["PatientSex"] = _SEX[sex]
    return identity


def _order(segments: dict[str, list[list[str]]], enc: _Encoding) -> dict[str, str]:
    accession = ""
    for key, number in (("IPC", 1), ("OBR", 18), ("ORC", 3), ("OBR", 3)):
        accession = _component(_first(segments, key, number), enc, 1)
        if accession:
            break
    study = (_component(_first(segments, "IPC", 3), enc, 1)
             or _component(_first(segments, "ZDS", 1), enc, 1))
    return {"AccessionNumber": accession, "StudyInstanceUID": study}
