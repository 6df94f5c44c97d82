"""Pair digitized records with references, score them and write the evaluation report.

Two ways to say what the reference is:

* **Pairs by name.** PRED and REF are files or folders of records (WFDB ``.hea``/``.dat``,
  CSV, and DICOM waveform / FHIR Observation when :mod:`ecgbridge.encode.readers` is
  available); records are paired by name and scored over the samples where the prediction
  (and the reference) are defined.
* **A set folder.** REF holds a ``manifest.json`` (as ``shared/data/dev``): each entry names an
  image, its reference WFDB record and the visible window(s) per lead. Only those windows are
  scored, a missing prediction counts as 0 mV, exactly as the project's independent scorer.

Mismatches (missing partner, different lead sets or rates, unreadable files) are reported
per record and the others are still scored.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecgbridge.ecg import ECG, LEADS
from ecgbridge.errors import EcgBridgeError, InputError
from ecgbridge.fsutil import write_text_atomic
from ecgbridge.report.metrics import (
    DEFAULT_MAX_SHIFT_S,
    DEFAULT_SNR_CAP_DB,
    METRIC_NAMES,
    ErrorHistogram,
    RecordScore,
    per_lead_means,
    resample_to_grid,
    score_record,
    summarise,
    windows_from_manifest,
    windows_where_defined,
)

log = logging.getLogger(__name__)

#: File name of a set folder's manifest.
MANIFEST_NAME = "manifest.json"

#: Record file suffixes, most preferred first when one name has several files.
RECORD_SUFFIXES: tuple[str, ...] = (".hea", ".dcm", ".csv", ".json")

#: Optional module providing ``read_ecg(path) -> ECG`` for DICOM waveforms and FHIR.
_READERS_MODULE = "ecgbridge.encode.readers"

#: Suffixes readable without the optional DICOM/FHIR reader module.
_BASIC_SUFFIXES = (".hea", ".csv")

#: Format tags a writer may put before the suffix (``X.fhir-r4.json``); stripped for pairing.
_FORMAT_TAGS = (".fhir-r4", ".fhir-r5", ".fhir", ".r4", ".r5", ".observation", ".waveform")

#: First-column names that give each CSV row's time in seconds (as the scorer accepts).
_CSV_TIME_COLUMNS = ("time_s", "time", "t", "t_s")

#: Duration differences noted as a mismatch: above this many seconds and this fraction.
_DURATION_TOLERANCE_S = 0.1
_DURATION_TOLERANCE_REL = 0.01

#: Status of a record in the report.
STATUS_OK = "ok"
STATUS_MISSING_PREDICTION = "missing-prediction"
STATUS_MISSING_REFERENCE = "missing-reference"
STATUS_ERROR = "error"


# --------------------------------------------------------------------------- reading
def load_ecg(path: Path) -> ECG:
    """Read one record file (WFDB header, CSV, DICOM waveform, FHIR Observation).

    Uses ``ecgbridge.encode.readers.read_ecg`` when that module exists, else the WFDB and
    CSV readers.

    Raises
    ------
    InputError
        If the file cannot be read or its kind is not supported.
    """
    reader = _optional_reader()
    if reader is not None:
        return reader(path)
    suffix = path.suffix.lower()
    if suffix == ".hea" or (suffix == "" and path.with_suffix(".hea").exists()):
        from ecgbridge.encode.wfdb_format import read_wfdb

        return read_wfdb(path)
    if suffix == ".csv":
        from ecgbridge.encode.csv_format import read_csv

        return read_csv(path)
    raise InputError(
        f"{path}: cannot read {suffix or 'suffix-less'} records here (WFDB .hea and CSV are "
        "supported; DICOM/FHIR need ecgbridge.encode.readers)"
    )


def _optional_reader() -> Callable[[Path], ECG] | None:
    try:
        readers = importlib.import_module(_READERS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == _READERS_MODULE:
            return None
        raise
    return getattr(readers, "read_ecg", None)


def record_name(path: Path) -> str:
    """Name used for pairing: the file name without its suffix and format tag."""
    name = path.name
    lower = name.lower()
    for suffix in RECORD_SUFFIXES:
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for tag in _FORMAT_TAGS:
        if name.lower().endswith(tag):
            return name[: -len(tag)]
    return name


def find_records(folder: Path) -> dict[str, Path]:
    """Map record name -> file for every record file in `folder` (not recursive).

    When one name has several files (``X.hea`` and ``X.csv``) the first suffix of
    :data:`RECORD_SUFFIXES` wins (``X.fhir-r4.json`` before a plain ``X.json``); JSON files
    are only considered when the DICOM/FHIR reader is available.
    """
    allowed = RECORD_SUFFIXES if _optional_reader() is not None else _BASIC_SUFFIXES
    found: dict[str, Path] = {}
    rank: dict[str, int] = {}
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if not path.is_file() or path.name.startswith(".") or suffix not in allowed:
            continue
        if path.name == MANIFEST_NAME:
            continue
        name = record_name(path)
        r = 2 * allowed.index(suffix)
        if suffix == ".json" and not _has_format_tag(path):
            r += 1  # a plain X.json may be the digitizer's summary: after X.fhir-r4.json
        if name not in found or r < rank[name]:
            found[name], rank[name] = path, r
    return found


def _has_format_tag(path: Path) -> bool:
    stem = path.name[: -len(path.suffix)].lower()
    return any(stem.endswith(tag) for tag in _FORMAT_TAGS)


# --------------------------------------------------------------------------- pairing
@dataclass(frozen=True)
class RecordPair:
    """One prediction/reference pair to score.

    Attributes
    ----------
    name : str
        Record (or image) name.
    prediction, reference : Path or None
        Files; None when the partner is missing.
    windows : dict or None
        Manifest windows per lead (set mode); None scores where the prediction is defined.
    """

    name: str
    prediction: Path | None
    reference: Path | None
    windows: dict[str, Any] | None = None


def pair_by_name(prediction: Path, reference: Path) -> list[RecordPair]:
    """Pair record files of `prediction` and `reference` (each a file or a folder) by name."""
    if prediction.is_file() and reference.is_file():
        return [RecordPair(record_name(prediction), prediction, reference)]
    preds = {record_name(prediction): prediction} if prediction.is_file() else \
        find_records(prediction)
    refs = {record_name(reference): reference} if reference.is_file() else find_records(reference)
    names = sorted(set(preds) | set(refs))
    return [RecordPair(n, preds.get(n), refs.get(n)) for n in names]


def pairs_from_manifest(
    prediction_dir: Path, set_dir: Path, record_dirs: Sequence[Path] = ()
) -> list[RecordPair]:
    """Pairs of a set folder: each manifest image's prediction with its reference record.

    Parameters
    ----------
    prediction_dir : Path
        Folder holding ``<image stem>.hea`` (or ``.csv``...) predictions.
    set_dir : Path
        Folder with ``manifest.json``.
    record_dirs : sequence of Path
        Where the reference records are looked up (default ``set_dir/records``).

    Raises
    ------
    InputError
        If the manifest cannot be read or an entry lacks ``image``/``record``/``windows``.
    """
    manifest_path = set_dir / MANIFEST_NAME
    try:
        entries = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{manifest_path}: not a readable manifest ({exc})") from exc
    if not isinstance(entries, list):
        raise InputError(f"{manifest_path}: expected a JSON list of images")
    dirs = list(record_dirs) or [set_dir / "records"]
    preds = find_records(prediction_dir) if prediction_dir.is_dir() else {
        record_name(prediction_dir): prediction_dir}
    pairs = []
    for i, entry in enumerate(entries):
        missing = [k for k in ("image", "record", "windows") if k not in entry]
        if missing:
            raise InputError(f"{manifest_path}: entry {i} lacks {', '.join(missing)}")
        stem = Path(str(entry["image"])).stem
        pairs.append(
            RecordPair(
                name=stem,
                prediction=preds.get(stem),
                reference=_find_reference(str(entry["record"]), dirs),
                windows=dict(entry["windows"]),
            )
        )
    return pairs


def _find_reference(record: str, dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        for suffix in RECORD_SUFFIXES:
            p = d / f"{record}{suffix}"
            if p.is_file():
                return p
    return None


# --------------------------------------------------------------------------- scoring
@dataclass
class RecordResult:
    """Outcome of one pair: its score (if any) and what did not match."""

    name: str
    status: str
    score: RecordScore | None = None
    notes: list[str] = field(default_factory=list)
    prediction: Path | None = None
    reference: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out: dict[str, Any] = {
            "record": self.name,
            "status": self.status,
            "notes": list(self.notes),
            "prediction": str(self.prediction) if self.prediction else None,
            "reference": str(self.reference) if self.reference else None,
        }
        if self.score is not None:
            out.update(self.score.to_dict())
        return out


@dataclass(frozen=True)
class AlignedPair:
    """Reference and prediction on the reference's time grid, ready to score or plot."""

    reference: np.ndarray
    prediction: np.ndarray
    fs: float
    windows: list[np.ndarray]
    notes: list[str]


def align_pair(pair: RecordPair) -> AlignedPair:
    """Read both sides of `pair` and put the prediction on the reference's grid.

    A missing prediction (set mode) becomes all NaN, i.e. 0 mV in the strict metrics.

    Raises
    ------
    InputError
        If the reference is missing or a file cannot be read.
    """
    if pair.reference is None:
        raise InputError(f"{pair.name}: no reference record")
    ref = load_ecg(pair.reference)
    notes: list[str] = []
    if pair.prediction is None:
        pred_grid = np.full_like(ref.signals, np.nan)
    else:
        pred = load_ecg(pair.prediction)
        if _csv_without_time(pair.prediction) and pred.n_samples:
            # rows without times are taken to span the reference's duration evenly
            pred = pred.replace(fs=pred.n_samples / ref.duration_s)
            notes.append(f"CSV without time_s: {pred.n_samples} rows spread over "
                         f"{ref.duration_s:g} s")
        notes.extend(_mismatches(pred, ref))
        pred_grid = resample_to_grid(pred.signals, pred.fs, ref.n_samples, ref.fs)
    if pair.windows is not None:
        windows = windows_from_manifest(pair.windows, ref.n_samples)
    else:  # where both are defined (a reference may itself be partial)
        both = np.where(np.isfinite(ref.signals), pred_grid, np.nan)
        windows = windows_where_defined(both)
    return AlignedPair(np.array(ref.signals), pred_grid, ref.fs, windows, notes)


def _csv_without_time(path: Path) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().split(",")
    return header[0].strip().lower() not in _CSV_TIME_COLUMNS


def _mismatches(pred: ECG, ref: ECG) -> list[str]:
    notes = []
    if not math.isclose(pred.fs, ref.fs, rel_tol=1e-9):
        notes.append(f"prediction at {pred.fs:g} Hz resampled to the reference's {ref.fs:g} Hz")
    tolerance = max(_DURATION_TOLERANCE_S, _DURATION_TOLERANCE_REL * ref.duration_s)
    if abs(pred.duration_s - ref.duration_s) > tolerance:
        notes.append(
            f"prediction lasts {pred.duration_s:g} s, reference {ref.duration_s:g} s "
            "(scored on the overlap)"
        )
    pred_leads, ref_leads = set(pred.present_leads()), set(ref.present_leads())
    lacking = [lead for lead in LEADS if lead in ref_leads and lead not in pred_leads]
    extra = [lead for lead in LEADS if lead in pred_leads and lead not in ref_leads]
    if lacking:
        notes.append(f"prediction lacks leads {', '.join(lacking)}")
    if extra:
        notes.append(f"reference lacks leads {', '.join(extra)} (not scored)")
    return notes


def evaluate_pair(
    pair: RecordPair,
    *,
    cap_db: float = DEFAULT_SNR_CAP_DB,
    max_shift_s: float = DEFAULT_MAX_SHIFT_S,
    histogram: ErrorHistogram | None = None,
) -> RecordResult:
    """Score one pair; never raises for bad inputs (the result's status and notes say why)."""
    base = RecordResult(pair.name, STATUS_OK, prediction=pair.prediction,
                        reference=pair.reference)
    if pair.reference is None:
        base.status = STATUS_MISSING_REFERENCE
        base.notes.append("no reference record with this name")
        return base
    if pair.prediction is None and pair.windows is None:
        base.status = STATUS_MISSING_PREDICTION
        base.notes.append("no prediction with this name")
        return base
    try:
        aligned = align_pair(pair)
    except EcgBridgeError as exc:
        base.status = STATUS_ERROR
        base.notes.append(str(exc))
        if pair.windows is None or pair.prediction is None:
            return base
        # set mode: an unreadable prediction counts as 0 mV, like a missing one
        try:
            aligned = align_pair(RecordPair(pair.name, None, pair.reference, pair.windows))
        except EcgBridgeError as again:
            base.notes.append(str(again))
            return base
        base.notes.append("unreadable prediction: scored as 0 mV")
    base.notes.extend(aligned.notes)
    if pair.prediction is None:
        base.status = STATUS_MISSING_PREDICTION
        base.notes.append("no prediction: scored as 0 mV")
    base.score = score_record(
        aligned.reference, aligned.prediction, aligned.fs, aligned.windows,
        cap_db=cap_db, max_shift_s=max_shift_s,
    )
    if base.score.leads_scored == 0:
        base.notes.append("no lead could be scored (prediction empty where the reference is)")
    if histogram is not None:
        histogram.add_record(aligned.reference, aligned.prediction, aligned.windows)
    return base


# --------------------------------------------------------------------------- the report
@dataclass
class EvaluationReport:
    """Everything `evaluate` computed."""

    results: list[RecordResult]
    histogram: ErrorHistogram
    cap_db: float = DEFAULT_SNR_CAP_DB
    max_shift_s: float = DEFAULT_MAX_SHIFT_S
    set_mode: bool = False

    @property
    def scores(self) -> list[RecordScore]:
        """Scores of the records that were scored."""
        return [r.score for r in self.results if r.score is not None]

    @property
    def problems(self) -> list[RecordResult]:
        """Records that were not scored, or scored with a mismatch."""
        return [r for r in self.results if r.status != STATUS_OK or r.notes]

    def summary(self) -> dict[str, Any]:
        """Set-level numbers."""
        out: dict[str, Any] = dict(summarise(self.scores))
        out["records"] = int(out["records"])
        out["leads_scored"] = int(out["leads_scored"])
        out["pairs"] = len(self.results)
        for status in (STATUS_MISSING_PREDICTION, STATUS_MISSING_REFERENCE, STATUS_ERROR):
            out[status.replace("-", "_")] = sum(1 for r in self.results if r.status == status)
        out["cap_db"] = self.cap_db
        out["max_shift_s"] = self.max_shift_s
        out["scored_samples"] = "manifest windows" if self.set_mode else \
            "where the prediction is defined"
        out["error_mean_mv"] = self.histogram.mean_mv
        out["error_std_mv"] = self.histogram.std_mv
        return out

    def median_record(self) -> RecordResult | None:
        """The scored record whose aligned SNR is the median (lower middle for even counts)."""
        scored = [r for r in self.results if r.score and math.isfinite(r.score.aligned_snr_db)]
        if not scored:
            return None
        scored.sort(key=lambda r: (r.score.aligned_snr_db if r.score else 0.0, r.name))
        return scored[(len(scored) - 1) // 2]


def evaluate(
    pairs: Sequence[RecordPair],
    *,
    cap_db: float = DEFAULT_SNR_CAP_DB,
    max_shift_s: float = DEFAULT_MAX_SHIFT_S,
    progress: bool = False,
    on_problem: Callable[[RecordResult], None] | None = None,
    set_mode: bool = False,
) -> EvaluationReport:
    """Score every pair (sequentially, with an optional tqdm progress bar on stderr)."""
    histogram = ErrorHistogram()
    iterator: Iterable[RecordPair] = pairs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pairs, unit="record", file=sys.stderr)
    results = []
    for pair in iterator:
        result = evaluate_pair(pair, cap_db=cap_db, max_shift_s=max_shift_s, histogram=histogram)
        results.append(result)
        if on_problem is not None and (result.status != STATUS_OK or result.notes):
            on_problem(result)
    return EvaluationReport(results, histogram, cap_db, max_shift_s, set_mode)


# --------------------------------------------------------------------------- files
RECORD_COLUMNS = ("record", "status", *METRIC_NAMES, "shift_s", "leads_scored",
                  "leads_predicted", "notes")
LEAD_COLUMNS = ("record", "lead", *METRIC_NAMES, "offset_mv", "n_samples", "predicted")


def metrics_csv_text(report: EvaluationReport) -> str:
    """One row per record: status, the record means, the shift and the notes."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RECORD_COLUMNS)
    for r in report.results:
        s = r.score
        values = [_fmt(s.means[m]) for m in METRIC_NAMES] if s else [""] * len(METRIC_NAMES)
        w.writerow([
            r.name, r.status, *values,
            _fmt(s.shift_s) if s else "",
            s.leads_scored if s else 0,
            s.leads_predicted if s else 0,
            "; ".join(r.notes),
        ])
    return buf.getvalue()


def lead_metrics_csv_text(report: EvaluationReport) -> str:
    """One row per record and lead."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LEAD_COLUMNS)
    for r in report.results:
        if r.score is None:
            continue
        for ls in r.score.leads:
            w.writerow([r.name, ls.lead, *(_fmt(getattr(ls, m)) for m in METRIC_NAMES),
                        _fmt(ls.offset_mv), ls.n_samples, int(ls.predicted)])
    return buf.getvalue()


def metrics_document(report: EvaluationReport) -> dict[str, Any]:
    """The content of ``metrics.json``: summary, per-lead means and every record."""
    return json_safe({
        "summary": report.summary(),
        "per_lead": {m: per_lead_means(report.scores, m) for m in METRIC_NAMES},
        "error_histogram": {
            "edges_mv": report.histogram.edges.tolist(),
            "counts": report.histogram.counts.tolist(),
        },
        "records": [r.to_dict() for r in report.results],
    })


def write_metrics(report: EvaluationReport, out_dir: Path) -> list[Path]:
    """Write ``metrics.csv`` (per record), ``metrics_leads.csv`` and ``metrics.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_text_atomic(out_dir / "metrics.csv", metrics_csv_text(report), fsync=False),
        write_text_atomic(out_dir / "metrics_leads.csv", lead_metrics_csv_text(report),
                          fsync=False),
        write_text_atomic(
            out_dir / "metrics.json",
            json.dumps(metrics_document(report), indent=1, allow_nan=False) + "\n",
            fsync=False,
        ),
    ]


def _fmt(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.6g}"


def json_safe(x: Any) -> Any:
    """`x` with every non-finite float (in nested dicts, lists, tuples) replaced by None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x
