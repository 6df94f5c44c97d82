"""The multiplex group of a 12-lead ECG waveform: sampling within the IOD's limits,
quantisation, channel definitions.

* One multiplex group ("RHYTHM") holding every lead the ECG shows, int16 samples (``SS``,
  16 bits allocated and stored) interleaved by sample.
* Channel sensitivity is the smallest of :data:`STANDARD_SENSITIVITIES_UV` (1, 2.5, 5,
  10 µV per unit) at which the largest amplitude fits in -32767..32767; the round-trip
  error is therefore at most half the sensitivity (0.5 µV for any ECG within ±32.767 mV).
  Larger amplitudes raise :class:`~ecgbridge.errors.EncodingError`.
* Samples the page does not show (NaN) are written as :data:`PADDING_VALUE` (-32768),
  declared in WaveformPaddingValue; real samples never take that value.
* The 12-lead IOD allows 200-1000 Hz and at most 16384 samples per group. Other rates are
  resampled (documented adjustment): above 1000 Hz to 1000 Hz, below 200 Hz to 500 Hz;
  a recording too long for 16384 samples is resampled to the highest of 1000/500/250/200 Hz
  that fits, else EncodingError.
"""

from __future__ import annotations

import struct
from fractions import Fraction

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ecgbridge import codes
from ecgbridge.ecg import Calibration
from ecgbridge.errors import EncodingError

#: Sampling-rate range of the 12-lead ECG IOD in Hz.
MIN_SAMPLING_FREQUENCY = 200.0
MAX_SAMPLING_FREQUENCY = 1000.0
#: Rate used when a recording sampled below the IOD's minimum is upsampled.
UPSAMPLE_TARGET_FREQUENCY = 500.0
#: Rates tried, highest first, when a recording is too long for one group.
STANDARD_FREQUENCIES = (1000.0, 500.0, 250.0, 200.0)
#: Limits of the 12-lead ECG IOD (not checked by dciodvfy).
MAX_CHANNELS = 13
MAX_SAMPLES_PER_GROUP = 16384
#: Value written for samples the page does not show; real samples are clipped to ±32767.
PADDING_VALUE = -32768
MAX_SAMPLE_VALUE = 32767
#: Channel sensitivities (µV per unit) tried in order.
STANDARD_SENSITIVITIES_UV = (1.0, 2.5, 5.0, 10.0)
#: Label of the one multiplex group written.
MULTIPLEX_GROUP_LABEL = "RHYTHM"
#: Maximum length of a LO value (ChannelDerivationDescription).
LO_MAX = 64


def check_waveform_limits(n_channels: int, n_samples: int, fs: float) -> None:
    """Raise EncodingError unless one multiplex group fits the 12-lead ECG IOD.

    Parameters
    ----------
    n_channels : int
        Channels in the group (1-13).
    n_samples : int
        Samples per channel (1-16384).
    fs : float
        Sampling frequency in Hz (200-1000).
    """
    if not 1 <= n_channels <= MAX_CHANNELS:
        raise EncodingError(
            f"a 12-lead ECG waveform holds 1 to {MAX_CHANNELS} channels, got {n_channels}"
        )
    if not 1 <= n_samples <= MAX_SAMPLES_PER_GROUP:
        raise EncodingError(
            f"a 12-lead ECG waveform group holds 1 to {MAX_SAMPLES_PER_GROUP} samples per "
            f"channel, got {n_samples}"
        )
    if not MIN_SAMPLING_FREQUENCY <= fs <= MAX_SAMPLING_FREQUENCY:
        raise EncodingError(
            f"a 12-lead ECG waveform is sampled at {MIN_SAMPLING_FREQUENCY:g} to "
            f"{MAX_SAMPLING_FREQUENCY:g} Hz, got {fs:g} Hz"
        )


def conform_sampling(
    signals: np.ndarray, fs: float, *, allow_resample: bool = True
) -> tuple[np.ndarray, float]:
    """Return `signals` and rate adjusted to the IOD's 200-1000 Hz and 16384 samples.

    Parameters
    ----------
    signals : numpy.ndarray
        ``(channels, n)`` in mV, NaN where not shown.
    fs : float
        Sampling rate in Hz.
    allow_resample : bool
        When False, raise instead of resampling.

    Returns
    -------
    tuple
        ``(signals, fs)``, unchanged when already allowed.

    Raises
    ------
    EncodingError
        When resampling is needed but not allowed, or the recording is longer than
        16384 samples at 200 Hz (81.92 s).
    """
    n = signals.shape[1]
    target = fs
    if fs > MAX_SAMPLING_FREQUENCY:
        target = MAX_SAMPLING_FREQUENCY
    elif fs < MIN_SAMPLING_FREQUENCY:
        target = UPSAMPLE_TARGET_FREQUENCY
    if round(n * target / fs) > MAX_SAMPLES_PER_GROUP:
        fitting = [f for f in STANDARD_FREQUENCIES
                   if f <= target and round(n * f / fs) <= MAX_SAMPLES_PER_GROUP]
        if not fitting:
            raise EncodingError(
                f"a {n / fs:.1f} s recording does not fit one 12-lead ECG waveform group "
                f"({MAX_SAMPLES_PER_GROUP} samples at {MIN_SAMPLING_FREQUENCY:g} Hz at most)"
            )
        target = fitting[0]
    if target == fs:
        return signals, fs
    if not allow_resample:
        raise EncodingError(
            f"{fs:g} Hz x {n} samples is outside the 12-lead ECG waveform limits "
            f"({MIN_SAMPLING_FREQUENCY:g}-{MAX_SAMPLING_FREQUENCY:g} Hz, "
            f"{MAX_SAMPLES_PER_GROUP} samples) and resampling is disabled"
        )
    return resample_signals(signals, fs, target)


def resample_signals(signals: np.ndarray, fs: float, target: float) -> tuple[np.ndarray, float]:
    """Resample every row from `fs` to (about) `target` Hz, keeping NaN spans NaN.

    Gaps are bridged by linear interpolation before the polyphase filter and masked
    again afterwards, so a gap does not ring into the samples around it.

    Returns
    -------
    tuple
        ``(signals, fs_out)``; ``fs_out`` is `target` unless ``target / fs`` needs a
        denominator above 1000.
    """
    from scipy.signal import resample_poly

    ratio = Fraction(target / fs).limit_denominator(1000)
    fs_out = fs * ratio.numerator / ratio.denominator
    n_in = signals.shape[1]
    n_out = max(1, int(round(n_in * fs_out / fs)))
    out = np.full((signals.shape[0], n_out), np.nan)
    src_index = np.clip(np.round(np.arange(n_out) * fs / fs_out).astype(int), 0, n_in - 1)
    idx = np.arange(n_in)
    for row in range(signals.shape[0]):
        finite = np.isfinite(signals[row])
        if not finite.any():
            continue
        filled = np.interp(idx, idx[finite], signals[row][finite])
        res = resample_poly(filled, ratio.numerator, ratio.denominator, padtype="line")[:n_out]
        out[row, : res.size] = res
        out[row, ~finite[src_index]] = np.nan
    return out, float(fs_out)


def choose_sensitivity(signals: np.ndarray) -> float:
    """Return the smallest standard sensitivity (µV/unit) at which `signals` (mV) fit int16.

    Raises
    ------
    EncodingError
        If even 10 µV per unit cannot hold the largest amplitude (±327.67 mV).
    """
    finite = signals[np.isfinite(signals)]
    peak_uv = float(np.abs(finite).max()) * 1000.0 if finite.size else 0.0
    for sensitivity in STANDARD_SENSITIVITIES_UV:
        if round(peak_uv / sensitivity) <= MAX_SAMPLE_VALUE:
            return sensitivity
    limit_mv = MAX_SAMPLE_VALUE * STANDARD_SENSITIVITIES_UV[-1] / 1000.0
    raise EncodingError(
        f"a lead reaches {peak_uv / 1000.0:.1f} mV; a DICOM waveform holds at most "
        f"±{limit_mv:.2f} mV (int16 at {STANDARD_SENSITIVITIES_UV[-1]:g} µV per unit)"
    )


def quantize(signals: np.ndarray, sensitivity_uv: float) -> np.ndarray:
    """Return int16 ``(channels, n)`` samples; NaN becomes :data:`PADDING_VALUE`."""
    scaled = np.round(signals * 1000.0 / sensitivity_uv)
    finite = np.isfinite(scaled)
    raw = np.full(signals.shape, PADDING_VALUE, dtype=np.int16)
    raw[finite] = np.clip(scaled[finite], -MAX_SAMPLE_VALUE, MAX_SAMPLE_VALUE).astype(np.int16)
    return raw


def derivation_description(calibration: Calibration) -> str:
    """Return the ChannelDerivationDescription (LO, at most 64 characters)."""
    method = codes.DIGITIZED_METHODS.get(calibration.method)
    if method is not None:
        text = f"Digitized from ECG image by ecgbridge ({method})"
    else:
        text = "Converted from a stored waveform by ecgbridge"
    return text[:LO_MAX]


def code_item(concept: codes.CodedConcept) -> Dataset:
    item = Dataset()
    item.CodeValue = concept.value
    item.CodingSchemeDesignator = concept.scheme
    item.CodeMeaning = concept.meaning
    return item


def multiplex_group(
    raw: np.ndarray, fs: float, leads: list[str], sensitivity: float, derivations: list[str]
) -> Dataset:
    group = Dataset()
    group.MultiplexGroupLabel = MULTIPLEX_GROUP_LABEL
    group.WaveformOriginality = "DERIVED"
    group.NumberOfWaveformChannels = raw.shape[0]
    group.NumberOfWaveformSamples = raw.shape[1]
    group.SamplingFrequency = ds_number(fs)
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.add_new(0x5400100A, "OW", struct.pack("<h", PADDING_VALUE))  # WaveformPaddingValue
    channels = []
    for lead, derivation in zip(leads, derivations, strict=True):
        ch = Dataset()
        ch.ChannelLabel = lead
        ch.ChannelSourceSequence = Sequence([code_item(codes.DICOM_LEAD_CODES[lead])])
        ch.ChannelSensitivity = ds_number(sensitivity)
        ch.ChannelSensitivityUnitsSequence = Sequence([code_item(codes.DICOM_UNIT_MICROVOLT)])
        ch.ChannelSensitivityCorrectionFactor = "1"
        ch.ChannelBaseline = "0"
        ch.ChannelSampleSkew = "0"
        ch.WaveformBitsStored = 16
        ch.ChannelDerivationDescription = derivation
        channels.append(ch)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformData = np.ascontiguousarray(raw.T).astype("<i2").tobytes()
    return group


def ds_number(x: float) -> str:
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 16 else f"{x:.10g}"
