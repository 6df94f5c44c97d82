"""DICOM UIDs and the coded values of the clinical encoders, readers and DICOM peers.

Every SOP Class and Transfer Syntax UID ecgbridge names is defined here once (PS3.4
Annex B, PS3.6 Annex A), as are the codes it writes into DICOM and FHIR objects.

Lead codes come from ISO/IEEE 11073-10101 (MDC) in two spellings: DICOM uses the
``2:n`` form of CID 3001 "ECG Leads" (scheme ``MDC``), FHIR uses the 32-bit
numeric form (system ``urn:oid:2.16.840.1.113883.6.24``). Older electrocardiographs
write the SCP-ECG form ``5.6.3-9-n`` (scheme ``SCPECG``), which shares the lead
numbers of the DICOM ``2:n`` form.
"""

from __future__ import annotations

from typing import NamedTuple

from ecgbridge.ecg import LEADS, CalibrationMethod


class CodedConcept(NamedTuple):
    """A coded concept: value, coding scheme (DICOM designator or FHIR system), meaning."""

    value: str
    scheme: str
    meaning: str


# --- DICOM UIDs ------------------------------------------------------------------

#: Secondary Capture Image Storage and its multi-frame variants: pixel frames are pages.
SECONDARY_CAPTURE_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_SINGLE_BIT_SC = "1.2.840.10008.5.1.4.1.1.7.1"
MULTIFRAME_GRAYSCALE_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
MULTIFRAME_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
MULTIFRAME_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"
#: VL Photographic Image Storage (a photographed page).
VL_PHOTOGRAPHIC_IMAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"
#: Encapsulated PDF Storage (EncapsulatedDocument is a PDF).
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"

#: SOP classes that hold ECG pages (stored by the SCP, read by :mod:`ecgbridge.inputs`).
PAGE_SOP_CLASSES: tuple[str, ...] = (
    SECONDARY_CAPTURE_IMAGE,
    MULTIFRAME_SINGLE_BIT_SC,
    MULTIFRAME_GRAYSCALE_BYTE_SC,
    MULTIFRAME_GRAYSCALE_WORD_SC,
    MULTIFRAME_TRUE_COLOR_SC,
    ENCAPSULATED_PDF,
    VL_PHOTOGRAPHIC_IMAGE,
)
#: The page SOP classes whose pixel frames are the pages (all but the PDF).
IMAGE_SOP_CLASSES: frozenset[str] = frozenset(PAGE_SOP_CLASSES) - {ENCAPSULATED_PDF}

#: 12-Lead ECG Waveform Storage (what ecgbridge writes).
TWELVE_LEAD_ECG_WAVEFORM = "1.2.840.10008.5.1.4.1.1.9.1.1"
#: General ECG Waveform Storage (also sent to a PACS).
GENERAL_ECG_WAVEFORM = "1.2.840.10008.5.1.4.1.1.9.1.2"

#: Explicit VR Little Endian: assumed for a DICOM file without a transfer syntax.
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

# --- coding schemes ---------------------------------------------------------------

#: DICOM Coding Scheme Designator of ISO/IEEE 11073 MDC.
DICOM_SCHEME_MDC = "MDC"
#: DICOM Coding Scheme Designator of SCP-ECG (EN 1064) lead codes.
DICOM_SCHEME_SCPECG = "SCPECG"
#: DICOM Coding Scheme Designator of UCUM.
DICOM_SCHEME_UCUM = "UCUM"
#: DICOM Coding Scheme Designator of DICOM's own codes.
DICOM_SCHEME_DCM = "DCM"
#: Private coding scheme of ecgbridge (DICOM reserves designators starting with "99").
DICOM_SCHEME_ECGBRIDGE = "99ECGBRIDGE"
#: Name and owner declared in CodingSchemeIdentificationSequence for the private scheme.
DICOM_SCHEME_ECGBRIDGE_NAME = "ecgbridge digitization measurements"
DICOM_SCHEME_ECGBRIDGE_ORGANIZATION = "ecgbridge developers"

#: FHIR system URI of ISO/IEEE 11073 MDC.
FHIR_SYSTEM_MDC = "urn:oid:2.16.840.1.113883.6.24"
#: Other URIs that name MDC in the wild (read, never written).
FHIR_SYSTEM_MDC_ALIASES: frozenset[str] = frozenset({"urn:iso:std:iso:11073:10101"})
#: FHIR system URI of LOINC.
FHIR_SYSTEM_LOINC = "http://loinc.org"
#: FHIR system URI of UCUM.
FHIR_SYSTEM_UCUM = "http://unitsofmeasure.org"
#: FHIR system URI of the Observation category code system.
FHIR_SYSTEM_OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
#: Identifier system of ecgbridge Observations: the SHA-256 of the digitized source file.
FHIR_IDENTIFIER_SYSTEM_SOURCE = "urn:ecgbridge:source-sha256"
#: Identifier system used when the ECG has no source file hash (hash of the samples).
FHIR_IDENTIFIER_SYSTEM_CONTENT = "urn:ecgbridge:content-sha256"

# --- DICOM lead codes (CID 3001) ---------------------------------------------------

#: Lead number n of the MDC ``2:n`` / SCP-ECG ``5.6.3-9-n`` codes of each lead.
LEAD_CODE_NUMBER: dict[str, int] = {
    "I": 1, "II": 2, "III": 61, "aVR": 62, "aVL": 63, "aVF": 64,
    "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
}

#: Code meanings of CID 3001 "ECG Leads".
_DICOM_LEAD_MEANING: dict[str, str] = {
    "I": "Lead I",
    "II": "Lead II",
    "III": "Lead III",
    "aVR": "aVR, augmented voltage, right",
    "aVL": "aVL, augmented voltage, left",
    "aVF": "aVF, augmented voltage, foot",
    **{f"V{i}": f"Lead V{i}" for i in range(1, 7)},
}

#: Lead name -> DICOM ChannelSourceSequence code (scheme MDC).
DICOM_LEAD_CODES: dict[str, CodedConcept] = {
    lead: CodedConcept(f"2:{LEAD_CODE_NUMBER[lead]}", DICOM_SCHEME_MDC, _DICOM_LEAD_MEANING[lead])
    for lead in LEADS
}

#: MDC code of "-aVR" (2:65), accepted on input as the negated aVR.
DICOM_CODE_NEGATIVE_AVR = "2:65"

# --- FHIR / MDC numeric codes ------------------------------------------------------

#: MDC_ECG_ELEC_POTL: the whole ECG, Observation.code of the spec's ECG example.
MDC_ECG_ELEC_POTL = CodedConcept("131328", FHIR_SYSTEM_MDC, "MDC_ECG_ELEC_POTL")

_FHIR_LEAD_NUMBERS: dict[str, int] = {
    "I": 131329, "II": 131330, "III": 131389, "aVR": 131390, "aVL": 131391, "aVF": 131392,
    "V1": 131331, "V2": 131332, "V3": 131333, "V4": 131334, "V5": 131335, "V6": 131336,
}

#: Lead name -> Observation.component.code (MDC numeric code, display MDC_ECG_ELEC_POTL_x).
FHIR_LEAD_CODES: dict[str, CodedConcept] = {
    lead: CodedConcept(
        str(_FHIR_LEAD_NUMBERS[lead]), FHIR_SYSTEM_MDC, f"MDC_ECG_ELEC_POTL_{lead.upper()}"
    )
    for lead in LEADS
}

#: LOINC 11524-6 "EKG study".
LOINC_EKG_STUDY = CodedConcept("11524-6", FHIR_SYSTEM_LOINC, "EKG study")

#: Observation category of ECG tracings (as in the spec's ECG example and e.g. the German
#: EKG base profile): "procedure", not "vital-signs".
OBSERVATION_CATEGORY_PROCEDURE = CodedConcept(
    "procedure", FHIR_SYSTEM_OBSERVATION_CATEGORY, "Procedure"
)

# --- units ------------------------------------------------------------------------

#: UCUM microvolt as DICOM ChannelSensitivityUnitsSequence wants it.
DICOM_UNIT_MICROVOLT = CodedConcept("uV", DICOM_SCHEME_UCUM, "microvolt")
#: UCUM millivolt.
UCUM_MILLIVOLT = CodedConcept("mV", FHIR_SYSTEM_UCUM, "mV")
#: UCUM dimensionless unity, for ratios such as a quality score.
DICOM_UNIT_NO_UNITS = CodedConcept("1", DICOM_SCHEME_UCUM, "no units")

#: Private concept: per-lead digitization quality in [0, 1] (Waveform Annotation).
DICOM_CONCEPT_DIGITIZATION_QUALITY = CodedConcept(
    "DIGQ", DICOM_SCHEME_ECGBRIDGE, "Digitization quality"
)

# --- provenance -----------------------------------------------------------------

#: Calibration.method values meaning "digitized from a page" -> wording for outputs.
DIGITIZED_METHODS: dict[str, str] = {
    CalibrationMethod.RASTER: "raster trace extraction",
    CalibrationMethod.VECTOR: "vector PDF paths",
}


def lead_from_dicom_code(value: str, scheme: str) -> str | None:
    """Return the lead name of a DICOM channel source code, or None if not a standard lead.

    Parameters
    ----------
    value : str
        Code Value, e.g. ``"2:61"`` (MDC) or ``"5.6.3-9-61"`` (SCPECG).
    scheme : str
        Coding Scheme Designator (``"MDC"`` or ``"SCPECG"``; others give None).

    Returns
    -------
    str or None
        Canonical lead name (``"III"``) or None.
    """
    value = value.strip()
    scheme = scheme.strip().upper()
    if scheme == DICOM_SCHEME_MDC and value.startswith("2:"):
        number = value[2:]
    elif scheme == DICOM_SCHEME_SCPECG and value.startswith("5.6.3-9-"):
        number = value[len("5.6.3-9-"):]
    else:
        return None
    if not number.isdigit():
        return None
    for lead, n in LEAD_CODE_NUMBER.items():
        if n == int(number):
            return lead
    return None


def lead_from_fhir_code(system: str | None, code: str | None) -> str | None:
    """Return the lead name of an MDC Observation.component code, or None.

    MDC is accepted under ``urn:oid:2.16.840.1.113883.6.24`` (what FHIR R4 names it and
    what ecgbridge writes) and ``urn:iso:std:iso:11073:10101`` (used by some devices).
    """
    if code is None or (system != FHIR_SYSTEM_MDC and system not in FHIR_SYSTEM_MDC_ALIASES):
        return None
    for lead, concept in FHIR_LEAD_CODES.items():
        if concept.value == code.strip():
            return lead
    return None
