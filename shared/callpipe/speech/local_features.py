"""Voice features per stretch of audio, for telling the voices of a mono call apart.

Numpy only (no scipy, no librosa): the local engine should not pull in a second signal
stack for ~100 lines of well-known maths. Two cues per window:

- MFCC statistics (mean and spread of c1..c12): the shape of the voice's spectrum.
- the median pitch: on the demo calls it separates every male/female pair by far more than
  it varies within one voice, and helps split same-gender pairs that MFCCs alone confuse.

Phone audio carries nothing above 3.4 kHz, so the mel filters stop at 4 kHz: bands above
would only add noise from the resampler.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float64]

FRAME_SECONDS = 0.025
PITCH_FRAME_SECONDS = 0.040  # long enough for two periods of a 60 Hz voice
HOP_SECONDS = 0.010
N_FFT = 512
N_MELS = 26
N_CEPSTRA = 13  # c0 (loudness) is dropped: a voice should not cluster by its level
LOW_HZ = 100.0
HIGH_HZ = 4000.0
PITCH_MIN_HZ = 60.0
PITCH_MAX_HZ = 400.0
VOICED_MIN_CORRELATION = 0.5
# Frames more than 30 dB below the window's loudest are pauses or line noise: left out, so
# every window is not pulled towards the same "silence" point.
LOUD_RANGE_NATURAL_LOG = 30.0 * np.log(10) / 10
PITCH_LOUD_RANGE_NATURAL_LOG = 40.0 * np.log(10) / 10  # quieter frames give octave errors
MIN_FRAMES = 3
FRAMES_PER_BLOCK = 2048  # ~20 s of audio per FFT batch: bounded memory on hour-long calls


@dataclass(frozen=True)
class VoiceFeatures:
    """Per window: ``rows`` = [mean c1..c12, std c1..c12] (NaN when the window is too short
    to measure) and ``log_pitch``, the log of its median pitch (NaN when too little of it is
    voiced)."""

    rows: Matrix  # (windows, 24)
    log_pitch: npt.NDArray[np.float64]  # (windows,)


def _hz_to_mel(hz: Matrix) -> Matrix:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: Matrix) -> Matrix:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int) -> Matrix:
    """Triangular filters, shape (N_MELS, N_FFT // 2 + 1)."""
    high = min(HIGH_HZ, sample_rate / 2)
    edges = np.linspace(_hz_to_mel(np.array(LOW_HZ)), _hz_to_mel(np.array(high)), N_MELS + 2)
    bins = np.floor((N_FFT + 1) * _mel_to_hz(edges) / sample_rate).astype(int)
    bank = np.zeros((N_MELS, N_FFT // 2 + 1))
    for m in range(1, N_MELS + 1):
        left, centre, right = bins[m - 1], bins[m], bins[m + 1]
        for k in range(left, centre):
            bank[m - 1, k] = (k - left) / max(centre - left, 1)
        for k in range(centre, right):
            bank[m - 1, k] = (right - k) / max(right - centre, 1)
    return bank


def _dct_matrix() -> Matrix:
    """Orthonormal DCT-II, shape (N_CEPSTRA, N_MELS)."""
    n = np.arange(N_MELS)
    k = np.arange(N_CEPSTRA)[:, None]
    matrix = np.cos(np.pi * k * (2 * n + 1) / (2 * N_MELS)) * np.sqrt(2.0 / N_MELS)
    matrix[0] /= np.sqrt(2.0)
    return np.asarray(matrix, dtype=np.float64)


def _frame_blocks(signal: Matrix, frame: int, hop: int) -> Iterator[Matrix]:
    """The signal's frames (frame samples every hop), a block of rows at a time: a whole
    call framed at once would take gigabytes once FFT'd."""
    count = 1 + (len(signal) - frame) // hop
    offsets = np.arange(frame)[None, :]
    for first in range(0, count, FRAMES_PER_BLOCK):
        starts = hop * np.arange(first, min(first + FRAMES_PER_BLOCK, count))[:, None]
        yield np.asarray(signal[offsets + starts], dtype=np.float64)


def mfcc(audio: FloatArray, sample_rate: int) -> tuple[Matrix, Matrix]:
    """MFCCs (frames, N_CEPSTRA) and each frame's natural-log energy (frames,)."""
    frame = int(FRAME_SECONDS * sample_rate)
    if len(audio) < frame:
        return np.zeros((0, N_CEPSTRA)), np.zeros(0)
    signal = np.append(audio[0], audio[1:] - 0.97 * audio[:-1]).astype(np.float64)
    window, bank, dct = np.hamming(frame), mel_filterbank(sample_rate).T, _dct_matrix().T
    cepstra, energies = [], []
    for frames in _frame_blocks(signal, frame, int(HOP_SECONDS * sample_rate)):
        power = np.abs(np.fft.rfft(frames * window, N_FFT)) ** 2 / N_FFT
        energies.append(np.log(power.sum(axis=1) + 1e-10))
        cepstra.append(np.log(power @ bank + 1e-10) @ dct)
    return np.vstack(cepstra), np.concatenate(energies)


def pitch(audio: FloatArray, sample_rate: int) -> Matrix:
    """Pitch in Hz per 10 ms frame by normalised autocorrelation; NaN where unvoiced.

    The phone band removes the fundamental below 300 Hz, but its harmonics keep the
    period, which is what autocorrelation measures.
    """
    frame = int(PITCH_FRAME_SECONDS * sample_rate)
    if len(audio) < frame:
        return np.zeros(0)
    size = 1 << int(np.ceil(np.log2(2 * frame)))
    low, high = int(sample_rate / PITCH_MAX_HZ), int(sample_rate / PITCH_MIN_HZ)
    # Divide by the overlap length so that long lags are not penalised for overlapping less.
    overlap = frame / (frame - np.arange(low, high))
    hz, peak, loud = [], [], []
    for frames in _frame_blocks(audio.astype(np.float64), frame, int(HOP_SECONDS * sample_rate)):
        frames = frames - frames.mean(axis=1, keepdims=True)
        correlation = np.fft.irfft(np.abs(np.fft.rfft(frames, size)) ** 2, size)
        energy = correlation[:, 0] + 1e-12
        normalised = correlation[:, low:high] / energy[:, None] * overlap[None, :]
        hz.append(sample_rate / (low + normalised.argmax(axis=1)))
        peak.append(normalised.max(axis=1))
        loud.append(np.log(energy))
    level = np.concatenate(loud)
    voiced = (np.concatenate(peak) > VOICED_MIN_CORRELATION) & (
        level > level.max() - PITCH_LOUD_RANGE_NATURAL_LOG
    )
    return np.where(voiced, np.concatenate(hz), np.nan)


def voice_features(
    audio: FloatArray, sample_rate: int, windows: list[tuple[float, float]]
) -> VoiceFeatures:
    ceps, energy = mfcc(audio, sample_rate)
    pitches = pitch(audio, sample_rate)
    width = N_CEPSTRA - 1
    rows = np.full((len(windows), 2 * width), np.nan)
    log_pitch = np.full(len(windows), np.nan)
    for index, (start, end) in enumerate(windows):
        first, last = max(int(start / HOP_SECONDS), 0), int(end / HOP_SECONDS)
        chunk, loud = ceps[first:last, 1:], energy[first:last]
        if len(chunk) >= MIN_FRAMES:
            keep = loud >= loud.max() - LOUD_RANGE_NATURAL_LOG
            chunk = chunk[keep] if keep.sum() >= MIN_FRAMES else chunk
            rows[index] = np.concatenate([chunk.mean(axis=0), chunk.std(axis=0)])
        voiced = pitches[first:last]
        voiced = voiced[~np.isnan(voiced)]
        if len(voiced) >= 5:
            log_pitch[index] = float(np.log(np.median(voiced)))
    return VoiceFeatures(rows=rows, log_pitch=log_pitch)
