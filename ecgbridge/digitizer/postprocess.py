"""Step 8: from pixel traces to timed samples; panel time checks; debug drawings."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from ecgbridge.digitizer import beat_timing, column_laws
from ecgbridge.digitizer.consistency import LIMB_BASIS, read_together
from ecgbridge.digitizer.geometry import warp_image
from ecgbridge.ecg import PanelInfo

#: Gaps up to this long (seconds) inside a panel are bridged by linear interpolation.
MAX_BRIDGED_GAP_S = 0.08

Candidate = tuple[np.ndarray, float, PanelInfo]


def place_samples(
    values: np.ndarray, x0: int, x_origin: float, px_per_s: float, fs: float, n: int,
    fine: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Resample per-column values onto the output time grid at their true times.

    Parameters
    ----------
    values : numpy.ndarray
        One value per pixel column starting at column `x0` (NaN = no trace there).
    x0 : int
        First column of `values`.
    x_origin : float
        Column of time 0 in this row.
    px_per_s : float
        Horizontal scale in pixels per second.
    fs : float
        Output sampling rate.
    n : int
        Output length.
    fine : tuple of numpy.ndarray, optional
        ``(positions, values)``: the trace at sub-pixel positions (columns from `x0`,
        ascending) to interpolate instead of the per-column values; `values` still
        says which columns were seen.

    Returns
    -------
    numpy.ndarray
        Length `n`, NaN outside the panel and in gaps (or unseen panel ends) longer
        than :data:`MAX_BRIDGED_GAP_S`.
    """
    out = np.full(n, np.nan)
    cols = np.arange(values.size)
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return out
    t_cols = (x0 + cols - x_origin) / px_per_s
    i0 = max(0, int(np.ceil(t_cols[0] * fs - 1e-9)))
    i1 = min(n - 1, int(np.floor(t_cols[-1] * fs + 1e-9)))
    if i1 < i0:
        return out
    t = np.arange(i0, i1 + 1) / fs
    xc = t * px_per_s + x_origin - x0
    good = cols[ok]
    at, vals = (good, values[ok]) if fine is None or fine[0].size < 2 else fine
    out[i0: i1 + 1] = np.interp(xc, at, vals)
    # Blank samples far from any observed column.
    pos = np.searchsorted(good, xc)
    left = good[np.clip(pos - 1, 0, good.size - 1)]
    right = good[np.clip(pos, 0, good.size - 1)]
    gap_px = MAX_BRIDGED_GAP_S * px_per_s
    # Inside the panel but before its first (after its last) seen column, e.g. under a
    # lead-change marker: the edge value is held for up to the same bridged length.
    far = (right - left > gap_px) | (xc < good[0] - gap_px) | (xc > good[-1] + gap_px)
    out[i0: i1 + 1][far] = np.nan
    return out


def align_panels_to_rhythm(
    candidates: dict[str, list[Candidate]], fs: float, warnings: list[str] | None = None
) -> dict[str, list[Candidate]]:
    """Place each column of short panels in time by its beats (see :mod:`beat_timing`).

    A panel's start time comes from its position. Some printers draw every column
    from time 0 (the benchmark generator's 6x2 pages) or otherwise not at its
    geometric time: each later column's beat envelope is compared with the rhythm
    strip's at the geometric start and at whole column periods before it, and the
    column moves when another start fits clearly better. Nothing moves without a strip,
    nor when the first column (which starts the recording) does not line up with it.
    A column of a standard width whose limb leads give a strip's lead is placed where
    they agree with the strip sample by sample (:mod:`column_laws`), which a regular
    rhythm cannot fool; its beats decide only where the laws do not.

    Parameters
    ----------
    candidates : dict
        lead -> list of ``(samples, quality, PanelInfo)``.
    fs : float
        Sampling rate.
    warnings : list of str, optional
        A line is added for every column moved, with the evidence.

    Returns
    -------
    dict
        The candidates, moved panels with shifted samples and start times.
    """
    flat = [(lead, item) for lead, items in candidates.items() for item in items]
    named_strips = [(lead, item[0]) for lead, item in flat if item[2].rhythm_strip]
    strips = [s for _lead, s in named_strips]
    if not strips:
        return candidates
    envelopes = [beat_timing.beat_envelope(s, fs) for s in strips]
    n_common = min(e.size for e in envelopes)  # strips may end a sample apart
    ref = np.max(np.vstack([e[:n_common] for e in envelopes]), axis=0)
    panels = {k: item for k, (_lead, item) in enumerate(flat)
              if not item[2].rhythm_strip and item[2].duration_s > 0.5}
    moved: dict[int, Candidate] = {}
    # The first column starts the recording: unless it lines up with the strip there,
    # the strip (or the traces) is no timing evidence. Its lag is the beat envelopes'
    # own offset between leads and strip, which a moved column's lag is measured from.
    first_lag: float | None = None
    keys = list(panels)
    for group in beat_timing.group_columns([panels[k][2].start_s for k in keys]):
        column = {keys[i]: panels[keys[i]] for i in group}
        fit, standard = _fit_column(list(column.values()), ref, fs)
        if fit is None:
            continue
        if fit.geometric_s < 0.05 + beat_timing.MAX_LAG_S:
            if fit.scores[fit.geometric_s] >= beat_timing.MIN_FIT:
                first_lag = fit.lag_s
            continue
        by_laws = (_fit_by_laws(fit, [(flat[k][0], item) for k, item in column.items()],
                                named_strips, fs) if standard else None)
        if by_laws is not None:
            fit = by_laws
        elif first_lag is None or not fit.moved:
            continue
        elif not standard:
            fit = dataclasses.replace(fit, start_s=fit.start_s + fit.lag_s - first_lag)
        if not fit.moved:
            continue
        moved.update({k: _shift_panel(item, fit.start_s - fit.geometric_s, fs)
                      for k, item in column.items()})
        if warnings is not None:
            warnings.append(_moved_warning(sorted({flat[k][0] for k in column}), fit))
    out: dict[str, list[Candidate]] = {lead: [] for lead in candidates}
    for k, (lead, item) in enumerate(flat):
        out[lead].append(moved.get(k, item))
    return out


def _fit_column(column: list[Candidate], ref: np.ndarray, fs: float
                ) -> tuple[beat_timing.ColumnFit | None, bool]:
    """A column's start chosen by its beats, and whether its width is a standard one.

    Columns of a standard width are a standard period apart, whatever the rounding of
    the panel boxes; else (time scale misread) the beats' lag is to fix the start.
    The fit is None when the column holds too little trace.
    """
    geo = float(np.median([info.start_s for _s, _q, info in column]))
    duration = float(np.median([info.duration_s for _s, _q, info in column]))
    period = beat_timing.standard_period(duration)
    segments = [_panel_segment(item, fs) for item in column]
    if not beat_timing.enough_signal(segments, fs):
        return None, period is not None
    env = beat_timing.column_envelope(segments, fs)
    return beat_timing.place_column(env, ref, geo, period or duration, fs), period is not None


def _fit_by_laws(fit: beat_timing.ColumnFit, column: list[tuple[str, Candidate]],
                 strips: list[tuple[str, np.ndarray]], fs: float
                 ) -> beat_timing.ColumnFit | None:
    """The column's start where its limb leads agree with a strip (:mod:`column_laws`).

    Stronger evidence than the beats, and it needs no regular-looking first column;
    None when the column's limb leads give no strip's lead or no start stands out.
    """
    segments: dict[str, np.ndarray] = {}
    for lead, item in sorted(column, key=lambda li: li[1][1]):
        segments[lead] = _panel_segment(item, fs)  # the best-quality panel of a lead last
    start, residuals = column_laws.start_by_laws(
        segments, strips, list(fit.scores), fs, beat_timing.MAX_LAG_S)
    if start is None:
        return None
    return dataclasses.replace(fit, start_s=start, moved=start != fit.geometric_s,
                               by_laws=residuals)


def _panel_segment(item: Candidate, fs: float) -> np.ndarray:
    """A panel's samples from its start time over its duration."""
    samples, _q, info = item
    i0 = max(0, int(round(info.start_s * fs)))
    return samples[i0: i0 + int(round(info.duration_s * fs))]


def _shift_panel(item: Candidate, shift_s: float, fs: float) -> Candidate:
    """The panel moved by `shift_s` seconds (samples and start time)."""
    samples, q, info = item
    shift = int(round(shift_s * fs))
    out = np.full(samples.size, np.nan)
    if shift < 0:
        out[: samples.size + shift] = samples[-shift:]
    elif shift > 0:
        out[shift:] = samples[: samples.size - shift]
    else:
        out[:] = samples
    return out, q, dataclasses.replace(info, start_s=float(info.start_s + shift / fs))


def _moved_warning(leads: list[str], fit: beat_timing.ColumnFit) -> str:
    """Warning line for a column placed away from its geometric time."""
    scores = ", ".join(f"{s:.2f} s: r={r:.2f}" for s, r in sorted(fit.scores.items()))
    if fit.by_laws:
        resid = ", ".join(f"{s:.2f} s: {r:.2f}" for s, r in sorted(fit.by_laws.items()))
        return (f"panels {', '.join(leads)} placed at {fit.start_s:.2f} s instead of "
                f"{fit.geometric_s:.2f} s (their position): the limb leads they show agree "
                f"with the rhythm strip there (limb-lead relative residual {resid}; "
                f"beats {scores})")
    return (f"panels {', '.join(leads)} placed at {fit.start_s:.2f} s instead of "
            f"{fit.geometric_s:.2f} s (their position): their beats line up with the rhythm "
            f"strip's there ({scores})")


def debug_images(rgb, homography, rows, row_slots, paths, labels) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Drawings of the layout and the followed traces over the rectified page."""
    h, w = rgb.shape[:2]
    page = rgb if homography is None else warp_image(rgb, homography, (w, h))
    lay = (0.6 * page + 0.4 * 255).astype(np.uint8)
    for row, slots in zip(rows, row_slots, strict=True):
        cv2.line(lay, (0, int(row.baseline)), (w - 1, int(row.baseline)), (0, 160, 0), 1)
        for s in slots:
            cv2.rectangle(lay, (s.x0, row.top), (s.x1 - 1, row.bottom - 1), (0, 0, 255), 2)
            cv2.putText(lay, s.lead, (s.x0 + 5, row.top + 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0,
                        (0, 0, 255), 2)
    for row_labels in labels:
        for lw in row_labels:
            cv2.rectangle(lay, lw.box[:2], (lw.box[2], lw.box[3]), (255, 0, 255), 1)
    tr = (0.5 * page + 0.5 * 255).astype(np.uint8)
    for p in paths:
        ok = np.isfinite(p.y)
        pts = np.stack([p.x0 + np.nonzero(ok)[0], p.y[ok]], axis=1).astype(np.int32)
        if pts.size:
            cv2.polylines(tr, [pts.reshape(-1, 1, 2)], False, (0, 0, 255), 1)
    return {"3_layout": lay, "4_traces": tr}


#: Samples whose limb leads disagree with Einthoven's and Goldberger's relations by more
#: than this (mV, largest residual) are left as read: one of the leads is wrong there.
MAX_RECONCILE_RESIDUAL_MV = 0.3
#: Leads read at the same time whose RMS residual exceeds this fraction of their RMS
#: are left as read.
MAX_RECONCILE_RMS_RATIO = 0.3


def reconcile_limb_leads(signals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Make simultaneously read limb leads obey I + III = II and aVR + aVL + aVF = 0.

    The six limb leads span two dimensions. Wherever three or more of them were read
    at the same sample, their least-squares projection onto that plane averages out
    part of each lead's independent reading error (pen smear, pixel rounding). Samples
    whose residual exceeds :data:`MAX_RECONCILE_RESIDUAL_MV` are left unchanged, and so
    are leads whose RMS residual over their common samples exceeds
    :data:`MAX_RECONCILE_RMS_RATIO` of any one lead's RMS (rows out of step in time).

    Parameters
    ----------
    signals : dict
        Lead name -> samples (equal lengths), NaN where not shown.

    Returns
    -------
    dict
        The same leads, limb leads reconciled where possible.
    """
    names = [lead for lead in LIMB_BASIS if lead in signals]
    if len(names) < 3:
        return signals
    n = min(signals[lead].size for lead in names)
    values = np.stack([signals[lead][:n] for lead in names])
    basis = np.array([LIMB_BASIS[lead] for lead in names])
    out = values.copy()
    for rows, cols in read_together(values, min_leads=3):
        b = basis[rows]
        proj = b @ np.linalg.pinv(b)
        v = values[np.ix_(rows, cols)]
        fitted = proj @ v
        # Leads read from rows whose time or scale disagree (a photo's rows) fit
        # poorly as a whole: mixing them would spread each lead's error to the others.
        res_rms = np.sqrt(np.mean((fitted - v) ** 2, axis=1))
        lead_rms = np.sqrt(np.mean((v - v.mean(axis=1, keepdims=True)) ** 2, axis=1))
        if np.any(res_rms > MAX_RECONCILE_RMS_RATIO * lead_rms):
            continue
        ok = np.abs(fitted - v).max(axis=0) <= MAX_RECONCILE_RESIDUAL_MV
        out[np.ix_(rows, cols[ok])] = fitted[:, ok]
    result = dict(signals)
    for k, lead in enumerate(names):
        sig = signals[lead].copy()
        sig[:n] = out[k]
        result[lead] = sig
    return result


def derive_missing_limb_leads(signals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Compute absent limb leads from two others recorded at the same time.

    The six limb leads depend on two (Einthoven's and Goldberger's relations), so
    wherever two different limb leads were digitized at the same samples, any missing
    one follows. Only leads absent from `signals` are returned (NaN where no pair of
    leads overlaps).

    Parameters
    ----------
    signals : dict
        Lead name -> samples (equal lengths), NaN where not shown.

    Returns
    -------
    dict
        Derived lead name -> samples, for leads with at least one derived sample.
    """
    known = [lead for lead in LIMB_BASIS if lead in signals]
    missing = [lead for lead in LIMB_BASIS if lead not in signals]
    if len(known) < 2 or not missing:
        return {}
    n = min(signals[lead].size for lead in known)
    basis_i = np.full(n, np.nan)
    basis_ii = np.full(n, np.nan)
    for a_idx, a in enumerate(known):
        for b in known[a_idx + 1:]:
            m = np.array([LIMB_BASIS[a], LIMB_BASIS[b]])
            if abs(np.linalg.det(m)) < 1e-9:
                continue
            inv = np.linalg.inv(m)
            va, vb = signals[a][:n], signals[b][:n]
            ok = np.isfinite(va) & np.isfinite(vb) & ~np.isfinite(basis_i)
            basis_i[ok] = inv[0, 0] * va[ok] + inv[0, 1] * vb[ok]
            basis_ii[ok] = inv[1, 0] * va[ok] + inv[1, 1] * vb[ok]
    out: dict[str, np.ndarray] = {}
    for lead in missing:
        ci, cii = LIMB_BASIS[lead]
        derived = ci * basis_i + cii * basis_ii
        if np.isfinite(derived).any():
            out[lead] = derived
    return out


#: A rhythm strip matching a grid panel this well (Pearson r) over their common time is
#: the same lead.
_SAME_LEAD_R = 0.9


#: Lead names that look alike in print (a misread label stays within its family).
_CONFUSABLE: tuple[tuple[str, ...], ...] = (
    ("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3", "V4", "V5", "V6"),
)


#: An unlabelled rhythm strip's best-matching panel must fit this much better (RMS ratio)
#: than the panel of any other lead.
_STRIP_NAME_MARGIN = 0.67


#: Largest time offset (s) searched between an unlabelled strip and a grid panel.
_STRIP_MAX_LAG_S = 0.2


def _best_lagged_fit(panel: np.ndarray, strip: np.ndarray, max_lag: int) -> tuple[float, float]:
    """Smallest RMS misfit (offsets removed) of `strip` against `panel` over time shifts.

    Returns ``(rms, r)`` at the best shift, ``(inf, 0)`` when they barely overlap.
    """
    best = (np.inf, 0.0)
    m = min(panel.size, strip.size)
    for lag in range(-max_lag, max_lag + 1, 2):
        a = panel[max(0, -lag): m - max(0, lag)]
        b = strip[max(0, lag): m - max(0, -lag)]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 100:
            continue
        a, b = a[ok], b[ok]
        if a.std() == 0 or b.std() == 0:
            continue
        rms = float(np.sqrt(np.mean(((a - a.mean()) - (b - b.mean())) ** 2)))
        if rms < best[0]:
            best = (rms, float(np.corrcoef(a, b)[0, 1]))
    return best


def name_unlabelled_strips(
    candidates: dict[str, list[Candidate]], fs: float, default: str = "",
    warnings: list[str] | None = None,
) -> dict[str, list[Candidate]]:
    """Name rhythm strips whose label was unreadable (key ``""``) after the panel they repeat.

    A rhythm strip shows one lead of the grid over the whole recording; where that
    lead's short panel is shown, the two traces coincide. The strip takes the name
    of the panel it matches (r >= 0.9, at a time shift of up to 0.2 s: photographed
    rows are not exactly aligned) when that panel fits clearly better (RMS) than
    every other lead's; otherwise it takes the `default` lead (the usual rhythm
    lead, II) or, without one, is left out.

    Parameters
    ----------
    candidates : dict
        lead -> list of ``(samples, quality, PanelInfo)``; unnamed strips under ``""``.
    fs : float
        Sampling rate of the samples.
    default : str
        Lead of strips that match no panel ("" to leave them out).
    warnings : list of str, optional
        Receives one line per strip left out or named by default, saying why.

    Returns
    -------
    dict
        The same without the ``""`` key; identified strips under their lead.
    """
    out = {k: list(v) for k, v in candidates.items() if k}
    panels = [(lead, c) for lead, items in out.items() for c in items if not c[2].rhythm_strip]
    for strip in candidates.get("", []):
        misfit: dict[str, float] = {}
        corr: dict[str, float] = {}
        max_lag = int(round(_STRIP_MAX_LAG_S * fs))
        for other_lead, (samples, _q, _info) in panels:
            rms, r = _best_lagged_fit(samples, strip[0], max_lag)
            if rms < misfit.get(other_lead, np.inf):
                corr[other_lead] = r
                misfit[other_lead] = rms
        why = "no panel of the grid overlaps it in time"
        if misfit:
            ranked = sorted(misfit, key=lambda k: misfit[k])
            best = ranked[0]
            clear = len(ranked) == 1 or misfit[best] < _STRIP_NAME_MARGIN * misfit[ranked[1]]
            if corr[best] >= _SAME_LEAD_R and clear:
                info = dataclasses.replace(strip[2], lead=best)
                out.setdefault(best, []).append((strip[0], strip[1], info))
                continue
            why = (f"its trace matches no grid panel clearly (best {best}, r={corr[best]:.2f}"
                   + ("" if clear else f", as close to {ranked[1]}") + ")")
        if default:
            info = dataclasses.replace(strip[2], lead=default)
            out.setdefault(default, []).append((strip[0], strip[1], info))
            if warnings is not None:
                warnings.append(f"unlabelled rhythm strip taken as lead {default}, the usual "
                                f"rhythm lead: {why}")
        else:
            _note_strip_left_out(strip[2], why, warnings)
    return out


def _note_strip_left_out(info: PanelInfo, why: str, warnings: list[str] | None) -> None:
    """Name an unlabelled strip that is not delivered, and why, in `warnings`."""
    if warnings is None:
        return
    kind = "rhythm strip" if info.rhythm_strip else "panel"
    x0, y0, x1, y1 = info.box
    warnings.append(
        f"unlabelled {kind} on page {info.page + 1} (x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f} px) "
        f"left out: its label could not be read and {why}"
    )


def unused_rows_warnings(boxes: list[tuple[float, float, float, float]], page: int,
                         has_panel: list[bool]) -> list[str]:
    """One warning per traced row that yields no lead panel at all.

    Parameters
    ----------
    boxes : list of tuple
        ``(x0, y0, x1, y1)`` of every traced row (rectified page pixels).
    page : int
        0-based page index.
    has_panel : list of bool
        Whether each row was given at least one panel.
    """
    return [
        f"trace row {i + 1} on page {page + 1} (x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f} px) "
        "left out: no lead could be assigned to it"
        for i, ((x0, y0, x1, y1), used) in enumerate(zip(boxes, has_panel, strict=True))
        if not used
    ]


def relabel_rhythm_strips(candidates: dict[str, list[Candidate]]) -> dict[str, list[Candidate]]:
    """Check each rhythm strip's lead against the short panels it overlaps in time.

    A rhythm strip repeats one lead of the grid over the full recording; where that
    lead's grid panel is shown, the two traces are the same. A strip whose label was
    misread (e.g. "I" for "II") is renamed after the look-alike lead whose panel it
    matches (r >= 0.9) when it matches its own label's panel clearly worse.

    Parameters
    ----------
    candidates : dict
        lead -> list of ``(samples, quality, PanelInfo)``.
    """
    panels = [(lead, c) for lead, items in candidates.items() for c in items
              if not c[2].rhythm_strip]
    out: dict[str, list[Candidate]] = {k: [c for c in v if not c[2].rhythm_strip]
                                       for k, v in candidates.items()}
    for lead, items in candidates.items():
        for strip in (c for c in items if c[2].rhythm_strip):
            scores: dict[str, float] = {}
            misfit: dict[str, float] = {}
            for other_lead, (samples, _q, _info) in panels:
                m = min(samples.size, strip[0].size)
                ok = np.isfinite(samples[:m]) & np.isfinite(strip[0][:m])
                if ok.sum() < 100:
                    continue
                a, b = samples[:m][ok], strip[0][:m][ok]
                if a.std() == 0 or b.std() == 0:
                    continue
                r = float(np.corrcoef(a, b)[0, 1])
                rms = float(np.sqrt(np.mean(((a - a.mean()) - (b - b.mean())) ** 2)))
                if r > scores.get(other_lead, -1.0):
                    scores[other_lead], misfit[other_lead] = r, rms
            new_lead = lead
            # Only names a label reader confuses with the one read are candidates; the
            # same lead printed twice differs by extraction noise only (smallest RMS).
            family = next((f for f in _CONFUSABLE if lead in f), (lead,))
            close = {k: misfit[k] for k in scores if k in family and scores[k] >= _SAME_LEAD_R}
            if close:
                best = min(close, key=lambda k: close[k])
                own = misfit.get(lead, np.inf)
                if best != lead and own > 1.5 * close[best]:
                    new_lead = best
            info = strip[2] if new_lead == lead else dataclasses.replace(strip[2], lead=new_lead)
            out.setdefault(new_lead, []).append((strip[0], strip[1], info))
    return {k: v for k, v in out.items() if v}


#: A relabelling by Einthoven's law must cut the residual |II - (I + III)| by this factor.
_EINTHOVEN_GAIN = 0.5


def check_einthoven(candidates: dict[str, list[Candidate]]) -> dict[str, list[Candidate]]:
    """Swap limb-lead names when Einthoven's law (II = I + III) says "II" is another panel.

    Where I, II and III were printed side by side in time (one column of a 3x4 page),
    the panel that equals the sum of the other two is lead II. A misread "I"/"II"
    label (the strokes of "II" are easily cut by a crossing trace) is corrected when
    the other choice explains the three traces clearly better. I and III cannot be
    told apart this way (the law is symmetric in them) and keep their labels.

    Parameters
    ----------
    candidates : dict
        lead -> list of ``(samples, quality, PanelInfo)``.
    """
    limb = {}
    for lead in ("I", "II", "III"):
        items = [c for c in candidates.get(lead, []) if not c[2].rhythm_strip]
        if len(items) != 1:
            return candidates
        limb[lead] = items[0]
    starts = {round(c[2].start_s, 2) for c in limb.values()}
    if len(starts) != 1:
        return candidates
    # Rows of a 12x1 page may run a little past 10 s, by different amounts.
    n = min(v[0].size for v in limb.values())
    sig = {k: v[0][:n] for k, v in limb.items()}
    ok = np.isfinite(sig["I"]) & np.isfinite(sig["II"]) & np.isfinite(sig["III"])
    if ok.sum() < 200:
        return candidates
    x = {k: v[ok] - np.mean(v[ok]) for k, v in sig.items()}

    def residual(total: str) -> float:
        a, b = (k for k in x if k != total)
        return float(np.linalg.norm(x[total] - x[a] - x[b]))

    current = residual("II")
    best = min(("I", "III"), key=residual)
    if residual(best) >= _EINTHOVEN_GAIN * current:
        return candidates
    # The panel labelled `best` is really II, and the "II" panel takes its name.
    moved = (limb[best], limb["II"])
    out = {k: [c for c in v if not any(c is m for m in moved)] for k, v in candidates.items()}
    for old, new in ((best, "II"), ("II", best)):
        samples, q, info = limb[old]
        out.setdefault(new, []).append((samples, q, dataclasses.replace(info, lead=new)))
    return {k: v for k, v in out.items() if v}
