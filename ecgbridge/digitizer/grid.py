"""Step 3: measure the grid pitch (pixels per millimetre) separately in x and y.

The ink profile along an axis (mean darkness of every column, or every row) of a
grid page is a comb: major lines every 5 mm, minor lines every 1 mm. Its spectrum
has peaks at multiples of 1/(5 mm). The fundamental is found with a harmonic sum,
then refined to sub-pixel precision by maximising the magnitude of the discrete-time
Fourier transform at the highest strong harmonic (precision grows with the harmonic
number and the number of periods on the page).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Accepted range of pixels per millimetre (about 50 to 1200 dpi).
MIN_PX_PER_MM = 2.0
MAX_PX_PER_MM = 48.0
#: Grid spacing in mm of minor and major lines.
MINOR_MM = 1.0
MAJOR_MM = 5.0
#: A spectral peak must exceed the median spectrum by this factor to count as a grid.
_MIN_PEAK_RATIO = 6.0
#: A lower-frequency comb must have a peak this strong (relative to the best comb's).
_MIN_FUNDAMENTAL_PEAK = 0.5
#: A best comb whose own fundamental peak is below this fraction of the spectrum's
#: strongest peak is not a grid's comb (blur left only one line frequency).
_WEAK_COMB_PEAK = 0.25
#: 1-mm line spacings (px) at which blur can leave only the lines' own frequency
#: (about 55 to 400 dpi).
_MIN_BLURRED_MINOR_PX, _MAX_BLURRED_MINOR_PX = 2.2, 16.0
#: Smallest oscillation of the mean darkness profile (0-1 scale) that counts as a grid.
_MIN_AMPLITUDE = 0.001


@dataclass(frozen=True)
class GridPitch:
    """Grid pitch along one axis.

    Attributes
    ----------
    px_per_mm : float
        Pixels per millimetre (NaN if no grid).
    strength : float
        Peak-to-median ratio of the spectrum at the grid frequency (0 if no grid).
    has_minor : bool
        True if 1-mm lines were seen (else only 5-mm lines or the choice was by page size).
    """

    px_per_mm: float
    strength: float
    has_minor: bool


NO_GRID = GridPitch(float("nan"), 0.0, False)


def _dtft_mag(profile: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """|DTFT| of `profile` at `freqs` (cycles per pixel)."""
    x = np.arange(profile.size, dtype=np.float64)
    return np.abs(np.exp(-2j * np.pi * np.outer(freqs, x)) @ profile)


def measure_pitch(profile: np.ndarray) -> GridPitch:
    """Measure the grid pitch from a 1-D ink profile.

    Parameters
    ----------
    profile : numpy.ndarray
        Mean ink darkness per column (for x) or per row (for y) of the deskewed page.

    Returns
    -------
    GridPitch
        :data:`NO_GRID` when no periodic grid is present.
    """
    p = np.asarray(profile, dtype=np.float64)
    n = p.size
    if n < 64:
        return NO_GRID
    # Remove slow trends (illumination, trace rows) with a moving average of ~ 1 major period max.
    win = max(3, int(n // 40) | 1)
    trend = np.convolve(np.pad(p, win, mode="edge"), np.ones(win) / win, mode="same")[win:-win]
    detrended = p - trend
    p = detrended * np.hanning(n)
    nfft = 1 << int(np.ceil(np.log2(n * 4)))
    spec = np.abs(np.fft.rfft(p, nfft))
    freqs = np.fft.rfftfreq(nfft)
    floor = float(np.median(spec[1:])) + 1e-12
    # Candidate fundamental periods: 5-mm spacing of MIN..MAX px/mm, and 1-mm spacing.
    best_score, best_f0 = 0.0, 0.0
    f_lo = 1.0 / (MAJOR_MM * MAX_PX_PER_MM)
    f_hi = 1.0 / (MINOR_MM * MIN_PX_PER_MM)
    cand = np.nonzero((freqs >= f_lo) & (freqs <= f_hi))[0]
    if cand.size == 0:
        return NO_GRID
    # Harmonic sum over the first 5 harmonics (peaks of a comb of period 1/f0).
    scores = np.zeros(cand.size)
    for k in range(1, 6):
        idx = np.minimum(cand * k, spec.size - 1)
        scores += np.where(cand * k < spec.size, spec[idx], 0.0)
    # Prefer the lowest frequency among near-best comb scores (the fundamental), if
    # its own peak is strong: a sub-harmonic of the best comb scores nearly as well
    # (its 2nd or 4th harmonic is the best comb's fundamental) when blur has weakened
    # the higher harmonics, as on 100-dpi scans, but it has no peak of its own.
    top = scores.max()
    best_peak = float(spec[cand[int(np.argmax(scores))]])
    strongest = cand[int(np.argmax(spec[cand]))]
    if best_peak < _WEAK_COMB_PEAK * float(spec[strongest]) \
            and _reads_as_minor_lines(1.0 / float(freqs[strongest]), n):
        # A blurred grid shows its 1-mm lines and hardly any harmonics or 5-mm lines:
        # the best comb's own peak is noise, and so are its "sub-harmonics".
        good = np.array([strongest])
    else:
        good = cand[(scores >= 0.6 * top) & (spec[cand] >= _MIN_FUNDAMENTAL_PEAK * best_peak)]
    # Local maxima in the single spectrum among 'good'.
    best_f0 = float(freqs[good[0]])
    for i in good:
        if spec[i] >= spec[max(i - 1, 0)] and spec[i] >= spec[min(i + 1, spec.size - 1)]:
            best_f0 = float(freqs[i])
            best_score = float(spec[i])
            break
    raised = _major_not_its_multiple(best_f0, float(freqs[strongest]), n,
                                     float(spec[strongest]) > best_score)
    minor_seen = raised != best_f0
    if minor_seen:
        best_f0, best_score = raised, float(spec[int(np.argmin(np.abs(freqs - raised)))])
    strength = best_score / floor
    if strength < _MIN_PEAK_RATIO:
        # Look at the strongest single peak instead (a pure 1-mm grid has weak harmonics).
        i = cand[int(np.argmax(spec[cand]))]
        best_f0, strength = float(freqs[i]), float(spec[i] / floor)
        if strength < _MIN_PEAK_RATIO:
            return NO_GRID
    period = 1.0 / best_f0
    amplitude = 2.0 * float(_dtft_mag(p, np.array([best_f0]))[0]) / (0.5 * n)
    if amplitude < _MIN_AMPLITUDE or not _periodic_throughout(detrended, best_f0):
        return NO_GRID
    # Is the fundamental the 1-mm or the 5-mm spacing?  The page size rules out one
    # reading in most cases; otherwise major lines every 5th minor line show as a
    # sub-harmonic at f0/5; without one, the more plausible page width wins.
    px_if_major = period / MAJOR_MM
    px_if_minor = period / MINOR_MM
    has_sub = False
    if px_if_minor > MAX_PX_PER_MM or n / px_if_minor < 60.0:
        px_per_mm = px_if_major
    elif n / px_if_major > 600.0 or px_if_major < MIN_PX_PER_MM:
        px_per_mm = px_if_minor
    elif period * 5 < n / 8 and _is_sharp_peak(p, best_f0 / 5.0, floor):
        px_per_mm, has_sub = px_if_minor, True
    else:
        px_per_mm = px_if_minor if 100.0 <= n / px_if_minor <= 450.0 else px_if_major
    # Refine on the 1-mm harmonic when it is visible, else on the 5-mm lines.
    minor_mag = _dtft_mag(p, np.array([1.0 / px_per_mm]))[0]
    harmonic_period = px_per_mm if (px_per_mm >= 2.2 and minor_mag > 4.0 * floor) \
        else MAJOR_MM * px_per_mm
    refined = _refine_period(p, harmonic_period)
    scale = refined / harmonic_period
    return GridPitch(px_per_mm * scale, strength, has_sub or minor_seen)


def _major_not_its_multiple(f0: float, f_strongest: float, n: int, stronger: bool) -> float:
    """The comb's fundamental, raised to the 5-mm lines' when it fell on a multiple of them.

    Grids have 1-mm and 5-mm lines only. A comb read at 10 mm (or 15, 20: a sub-harmonic
    that beats, trace rows or a photo's moiré made as strong as the 5-mm peak) while
    stronger 1-mm lines show at a tenth (fifteenth...) of its period is the 5-mm comb.
    """
    if not stronger or not _reads_as_minor_lines(1.0 / f_strongest, n):
        return f0
    ratio = f_strongest / f0
    k = int(round(ratio / MAJOR_MM))
    if k >= 2 and abs(ratio - MAJOR_MM * k) <= 0.05 * ratio:
        return f0 * k
    return f0


def _reads_as_minor_lines(period: float, n: int) -> bool:
    """True if lines `period` px apart can be a blurred page's 1-mm grid lines."""
    return _MIN_BLURRED_MINOR_PX <= period <= _MAX_BLURRED_MINOR_PX \
        and 100.0 <= n / period <= 450.0


def _is_sharp_peak(p: np.ndarray, f: float, floor: float) -> bool:
    """True if |DTFT| has a clear, narrow peak at `f` (not a slope of low-frequency content)."""
    mags = _dtft_mag(p, np.array([f * 0.85, f, f * 1.15]))
    return bool(mags[1] > 6.0 * floor and mags[1] > 2.0 * max(mags[0], mags[2]))


def _periodic_throughout(p: np.ndarray, f0: float) -> bool:
    """A grid is periodic over the whole page: check the peak in 3 of 4 quarters."""
    n = p.size
    q = n // 4
    if q < 4.0 / f0:
        return True  # too short to split; trust the global spectrum
    good = 0
    for k in range(4):
        seg = p[k * q:(k + 1) * q]
        seg = seg - seg.mean()
        spec = np.abs(np.fft.rfft(seg))
        floor = float(np.median(spec[1:])) + 1e-12
        peak = _dtft_mag(seg, np.array([f0]))[0]
        if peak > 3.0 * floor:
            good += 1
    return good >= 3


def _refine_period(p: np.ndarray, period: float) -> float:
    """Refine a line period to sub-pixel precision with a fine DTFT search.

    The highest harmonic of the 5-mm comb that is still clearly above the noise is
    used; its peak location divided by the harmonic number gives the period.
    """
    n = p.size
    f = 1.0 / period
    # Search +-1.5 DFT bins around f, then narrow.
    half = 1.5 / n
    for _ in range(4):
        freqs = np.linspace(f - half, f + half, 31)
        mag = _dtft_mag(p, freqs)
        i = int(np.argmax(mag))
        if 0 < i < freqs.size - 1:
            a, b, c = mag[i - 1], mag[i], mag[i + 1]
            d = a - 2 * b + c
            off = 0.5 * (a - c) / d if d != 0 else 0.0
        else:
            off = 0.0
        f = float(freqs[i] + off * (freqs[1] - freqs[0]))
        half /= 8.0
    return 1.0 / f


def measure_grid(ink: np.ndarray) -> tuple[GridPitch, GridPitch]:
    """Measure the grid pitch horizontally and vertically on a deskewed ink map.

    Parameters
    ----------
    ink : numpy.ndarray
        float darkness map of the rectified page (grid lines visible), e.g.
        :attr:`ecgbridge.digitizer.normalise.InkMaps.any_ink`.

    Returns
    -------
    tuple of GridPitch
        ``(x, y)`` pitches.
    """
    px = ink.mean(axis=0)
    py = ink.mean(axis=1)
    gx, gy = measure_pitch(px), measure_pitch(py)
    if gx.strength == 0 and gy.strength == 0:
        return gx, gy
    if gy.strength == 0:
        gy = _remeasure(py, gx.px_per_mm, gy.strength)
    elif gx.strength == 0:
        gx = _remeasure(px, gy.px_per_mm, gx.strength)
    elif max(gx.px_per_mm, gy.px_per_mm) > _SQUARE_TOLERANCE * min(gx.px_per_mm, gy.px_per_mm):
        # Cells are square: an axis with a clear comb tells the other; without one,
        # the finer reading is checked on the other axis.
        if max(gx.strength, gy.strength) >= _CLEAR_COMB:
            x_tells = gx.strength >= gy.strength
        else:
            x_tells = gx.px_per_mm > gy.px_per_mm
        if x_tells:
            gy = _remeasure(py, gx.px_per_mm, gy.strength)
        else:
            gx = _remeasure(px, gy.px_per_mm, gx.strength)
    elif max(gx.px_per_mm, gy.px_per_mm) > _SQUARE_WITH_MINOR * min(gx.px_per_mm,
                                                                     gy.px_per_mm):
        # An axis whose 1-mm lines were seen tells one whose reading rests on less.
        if gx.has_minor and not gy.has_minor:
            gy = _remeasure(py, gx.px_per_mm, gy.strength)
        elif gy.has_minor and not gx.has_minor:
            gx = _remeasure(px, gy.px_per_mm, gx.strength)
    if gx.strength == 0 or gy.strength == 0 or not np.isfinite(gx.px_per_mm + gy.px_per_mm):
        return NO_GRID, NO_GRID
    # An ECG page is at least ~12 cm on its long side; a finer "grid" is something else
    # periodic (heart beats, rows of traces).
    if max(px.size / gx.px_per_mm, py.size / gy.px_per_mm) < _MIN_PAGE_MM:
        return NO_GRID, NO_GRID
    return gx, gy


#: The other axis must show at least this peak-to-floor ratio near the expected pitch.
_REMEASURE_MIN_RATIO = 4.0
#: Smallest long side (mm) of an ECG page or crop (10 s at 25 mm/s is 250 mm of trace).
_MIN_PAGE_MM = 120.0
#: Peak-to-floor ratio of a comb clear enough to tell the other axis' pitch.
_CLEAR_COMB = 60.0
#: Grid cells are square; a larger x/y disagreement than this is a mis-read of one axis.
_SQUARE_TOLERANCE = 1.4
#: ... and this one when a single axis showed its 1-mm lines (a photo's perspective,
#: once taken out, leaves far less).
_SQUARE_WITH_MINOR = 1.15


def _remeasure(profile: np.ndarray, px_per_mm_guess: float, strength: float) -> GridPitch:
    """Re-measure one axis near the pitch read on the other axis (grid cells are square).

    Returns :data:`NO_GRID` when this axis shows no line comb near that pitch at all:
    then the other axis' "grid" was something else periodic (heart beats, text).
    """
    p = np.asarray(profile, dtype=np.float64)
    n = p.size
    win = max(3, int(n // 40) | 1)
    trend = np.convolve(np.pad(p, win, mode="edge"), np.ones(win) / win, mode="same")[win:-win]
    p = (p - trend) * np.hanning(n)
    spec = np.abs(np.fft.rfft(p, 1 << int(np.ceil(np.log2(n * 4)))))
    floor = float(np.median(spec[1:])) + 1e-12
    f_major = 1.0 / (MAJOR_MM * px_per_mm_guess)
    steps = np.linspace(0.9, 1.1, 9)
    near = np.concatenate([f_major * steps, 5 * f_major * steps])
    ratio = float(_dtft_mag(p, near[near < 0.5]).max()) / floor
    if ratio < _REMEASURE_MIN_RATIO:
        return NO_GRID
    strength = max(strength, ratio)
    period = _refine_period(p, MAJOR_MM * px_per_mm_guess)
    # Accept the re-measurement only if it stays close to the guess (photos: +-15 %).
    est = period / MAJOR_MM
    if not 0.85 <= est / px_per_mm_guess <= 1.15:
        est = px_per_mm_guess
    return GridPitch(est, strength, False)
