"""Command-line options about the clinical record (time, zone, identity policies) and
the permissions of the files written.

Shared by ``digitize`` and ``convert`` (``batch`` takes ``--file-mode``); their values
become writer options (:func:`ecgbridge.encode.record_facts.record_settings`,
:func:`ecgbridge.encode.context.file_mode_of`).
"""

from __future__ import annotations

import argparse
from typing import Any

#: Values of ``--unknown-time`` and ``--missing-patient``.
UNKNOWN_TIME_CHOICES = ("digitization-time", "refuse")
MISSING_PATIENT_CHOICES = ("empty", "refuse")


def file_mode_text(text: str) -> str:
    """An argparse ``type``: an octal file mode (``0640``), kept as text."""
    from ecgbridge.fsutil import parse_file_mode

    try:
        parse_file_mode(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_file_mode_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--file-mode`` to `p`."""
    p.add_argument("--file-mode", type=file_mode_text, default=None, metavar="OCTAL",
                   help="permissions of the files written, e.g. 0640 (default: 0666 "
                   "minus the umask, as for any new file)")


def add_record_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--fhir-subject``, ``--acquired``, ``--timezone``, ``--unknown-time``,
    ``--patient-id-system``, ``--missing-patient``, ``--printed-identity`` and
    ``--file-mode`` to `p`."""
    p.add_argument("--fhir-subject", default=None, metavar="REFERENCE",
                   help="FHIR subject reference, e.g. Patient/123 (default: a logical "
                   "reference by the PatientID of the source or sidecar file)")
    p.add_argument("--acquired", default=None, metavar="DATETIME",
                   help="when the ECG was recorded (ISO 8601, e.g. 2021-02-05T13:39:33); "
                   "default: the source waveform, the time printed on the page or a sidecar "
                   "file, never the processing time")
    p.add_argument("--timezone", default=None, metavar="ZONE",
                   help="IANA zone of times printed or stored without one (e.g. "
                   "Europe/Berlin); without it their UTC offset stays unknown")
    p.add_argument("--unknown-time", default="digitization-time", choices=UNKNOWN_TIME_CHOICES,
                   help="DICOM needs an acquisition time: without evidence write the "
                   "digitization time, said so (default), or refuse the DICOM output")
    p.add_argument("--patient-id-system", default=None, metavar="URI",
                   help="FHIR subject.identifier.system of PatientIDs (your MRN system)")
    p.add_argument("--missing-patient", default="empty", choices=MISSING_PATIENT_CHOICES,
                   help="without a PatientID: leave it empty (default) or refuse the "
                   "DICOM/FHIR outputs")
    p.add_argument("--patient-folder-pattern", default=None, metavar="REGEX",
                   help="identity from the input's folders: a regular expression with named "
                   "groups PatientID / AccessionNumber / StudyID, e.g. "
                   "'inbox/(?P<PatientID>[^/]+)$' for inbox/<PatientID>/scan.png; an input "
                   "whose folder does not match fails (a sidecar file wins)")
    p.add_argument("--printed-identity", default="ignore", choices=("ignore", "accept"),
                   help="use the patient ID printed (with a label) on a vector PDF page "
                   "when no DICOM identity or sidecar gives one (default ignore: it is only "
                   "listed in the JSON summary)")
    add_file_mode_argument(p)


def record_options(args: argparse.Namespace) -> dict[str, Any]:
    """Writer options of the parsed record arguments (absent ones left out)."""
    pairs = {
        "fhir_subject": args.fhir_subject,
        "acquisition_datetime": args.acquired,
        "timezone": args.timezone,
        "unknown_time": args.unknown_time,
        "patient_id_system": args.patient_id_system,
        "missing_patient": args.missing_patient,
        "printed_identity": args.printed_identity,
        "patient_folder_pattern": getattr(args, "patient_folder_pattern", None),
        "file_mode": getattr(args, "file_mode", None),
    }
    return {key: value for key, value in pairs.items() if value}
