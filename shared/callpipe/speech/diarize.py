"""Who said each word, without a diarization model.

- Stereo (CallRail records the agent on the left channel, the caller on the right): each
  word goes to the channel that is louder over the word's span. A "stereo" file whose two
  channels carry the same signal is really mono and takes the mono path.
- Mono: Silero VAD (shipped inside faster-whisper) finds the speech, which is cut into
  windows of at most a few seconds; each window gets MFCC statistics and its median pitch;
  k-means groups the windows into voices; each word goes to the voice whose windows
  overlap it most. A second voice is only accepted when it is clearly a different voice
  (pitch or spectrum far apart): a voicemail must not be split into two "speakers".
  Mono speakers are ``speaker_1``, ``speaker_2``… in order of first appearance, unless the
  content heuristic :func:`guess_agent` finds the agent's greeting.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callpipe.speech.channels import IDENTICAL_CHANNELS_CORRELATION
from callpipe.speech.local_features import FloatArray, VoiceFeatures, voice_features
from callpipe.transcripts import Diarization, TranscriptSegment

AGENT = "agent"
CALLER = "caller"
CHANNEL_SPEAKERS = (AGENT, CALLER)  # CallRail stereo: channel 0 = agent, 1 = caller
WORD_PAD_SECONDS = 0.05  # word timestamps are ~50 ms rough; a little context steadies them
SPLIT_PAUSE_SECONDS = 1.5  # a pause this long starts a new segment of the same speaker

VAD_MIN_SILENCE_MS = 150  # short: speaker changes on a phone call often pause only briefly
VAD_PAD_MS = 30
MAX_WINDOW_SECONDS = 3.0  # long enough for stable statistics, short enough to stay one voice
MIN_FIT_WINDOW_SECONDS = 0.5  # shorter windows are too noisy to place the clusters
PITCH_UNIT = 0.1  # 0.1 in log pitch (~10 %) counts as one standard unit of a feature...
PITCH_WEIGHT = 3.0  # ...weighted x3: pitch is the most reliable single cue between voices
# Two clusters are two voices only if their median pitch differs by >= 28 % (0.25 in log).
# On the demo calls and 9 calibration calls (espeak-ng voices), one voice split in two
# reached at most 0.14, male/female pairs at least 0.69. Same-gender pairs (0.05-0.16) are
# below it and are reported as one speaker: no spectral measure tried (cluster distance,
# log-det gain) separated them from one voice without also splitting monologues.
DISTINCT_LOG_PITCH_GAP = 0.25
MIN_SPEAKER_SHARE = 0.05  # of the speech time
KMEANS_RESTARTS = 8


@dataclass(frozen=True)
class TimedWord:
    text: str  # as the recogniser wrote it, with its leading space
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Attribution:
    speakers: list[str]  # one per word
    channels: list[int | None]  # one per word
    method: Diarization
    speaker_count: int


# --- stereo -------------------------------------------------------------------------------


def channels_nearly_identical(left: FloatArray, right: FloatArray) -> bool:
    a, b = left.astype(np.float64), right.astype(np.float64)
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if norm == 0.0:
        return bool(not a.any() and not b.any())  # both silent: nothing to tell apart
    return float((a * b).sum()) / norm >= IDENTICAL_CHANNELS_CORRELATION


def loudest_channel(
    words: Sequence[TimedWord], left: FloatArray, right: FloatArray, sample_rate: int
) -> list[int]:
    """Per word, 0 or 1: the channel with more energy over the word's (padded) span."""
    sums = [
        np.concatenate([[0.0], np.cumsum(channel.astype(np.float64) ** 2)])
        for channel in (left, right)
    ]
    last = len(left)
    chosen: list[int] = []
    for word in words:
        first = min(max(int((word.start - WORD_PAD_SECONDS) * sample_rate), 0), last)
        end = min(max(int((word.end + WORD_PAD_SECONDS) * sample_rate), first), last)
        energies = [float(s[end] - s[first]) for s in sums]
        if energies[0] == energies[1]:  # silence (or identical): keep the previous speaker
            chosen.append(chosen[-1] if chosen else 0)
        else:
            chosen.append(0 if energies[0] > energies[1] else 1)
    return chosen


# --- mono ---------------------------------------------------------------------------------


def speech_windows(audio: FloatArray, sample_rate: int) -> list[tuple[float, float]]:
    """Silero VAD speech regions, each cut into equal windows of at most MAX_WINDOW_SECONDS."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=VAD_MIN_SILENCE_MS, speech_pad_ms=VAD_PAD_MS)
    regions = get_speech_timestamps(audio, options, sampling_rate=sample_rate)
    return split_regions([(r["start"] / sample_rate, r["end"] / sample_rate) for r in regions])


def split_regions(
    regions: Sequence[tuple[float, float]], max_seconds: float = MAX_WINDOW_SECONDS
) -> list[tuple[float, float]]:
    windows: list[tuple[float, float]] = []
    for start, end in regions:
        pieces = max(int(np.ceil((end - start) / max_seconds)), 1)
        edges = np.linspace(start, end, pieces + 1)
        windows.extend((float(a), float(b)) for a, b in itertools.pairwise(edges))
    return windows


def kmeans(
    points: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    k: int,
    restarts: int = KMEANS_RESTARTS,
    seed: int = 0,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Weighted k-means, k-means++ starts, best of ``restarts``; seeded, so deterministic."""
    rng = np.random.default_rng(seed)
    best: tuple[float, npt.NDArray[np.int64], npt.NDArray[np.float64]] | None = None
    for _ in range(restarts):
        centroids = points[[int(rng.integers(len(points)))]]
        while len(centroids) < k:
            distance = ((points[:, None, :] - centroids[None]) ** 2).sum(-1).min(1) * weights
            total = distance.sum()
            pick = rng.choice(len(points), p=distance / total) if total > 0 else 0
            centroids = np.vstack([centroids, points[pick]])
        for _ in range(100):
            distance = ((points[:, None, :] - centroids[None]) ** 2).sum(-1)
            labels = distance.argmin(1)
            moved = np.array(
                [
                    np.average(points[labels == j], axis=0, weights=weights[labels == j])
                    if (labels == j).any()
                    else centroids[j]
                    for j in range(k)
                ]
            )
            if np.allclose(moved, centroids):
                break
            centroids = moved
        inertia = float((distance.min(1) * weights).sum())
        if best is None or inertia < best[0] - 1e-9:
            best = (inertia, labels, centroids)
    assert best is not None
    return best[1], best[2]


def distinct_voices(
    log_pitch_a: npt.NDArray[np.float64], log_pitch_b: npt.NDArray[np.float64]
) -> bool:
    """Whether two groups of windows are two voices: their median pitch differs enough."""
    if not len(log_pitch_a) or not len(log_pitch_b):
        return False
    return abs(float(np.median(log_pitch_a) - np.median(log_pitch_b))) >= DISTINCT_LOG_PITCH_GAP


def cluster_voices(
    features: VoiceFeatures, durations: npt.NDArray[np.float64], max_speakers: int
) -> npt.NDArray[np.int64]:
    """A voice index per window (-1 where the window could not be measured)."""
    labels = np.full(len(durations), -1, dtype=np.int64)
    valid = ~np.isnan(features.rows).any(axis=1)
    labels[valid] = 0
    if max_speakers < 2 or valid.sum() < 2:
        return labels
    rows = features.rows[valid]
    spread = rows.std(axis=0)
    scaled = (rows - rows.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    pitch = features.log_pitch[valid]
    known = ~np.isnan(pitch)
    centre = float(np.median(pitch[known])) if known.any() else 0.0
    pitch_column = np.where(known, pitch, centre) - centre  # unvoiced windows: neutral
    points = np.hstack([scaled, (PITCH_WEIGHT / PITCH_UNIT * pitch_column)[:, None]])
    weights = durations[valid]
    fit = weights >= MIN_FIT_WINDOW_SECONDS
    for k in range(2, max_speakers + 1):
        use = fit if fit.sum() >= 2 * k else np.ones_like(fit)
        if use.sum() < k:
            break
        _, centroids = kmeans(points[use], weights[use], k)
        trial = ((points[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        shares = np.array([weights[trial == j].sum() for j in range(k)]) / weights.sum()
        if shares.min() < MIN_SPEAKER_SHARE or not all(
            distinct_voices(pitch[(trial == i) & known], pitch[(trial == j) & known])
            for i in range(k)
            for j in range(i + 1, k)
        ):
            break
        labels[valid] = trial
    return labels


def words_to_windows(
    words: Sequence[TimedWord],
    windows: Sequence[tuple[float, float]],
    window_labels: npt.NDArray[np.int64],
) -> list[int]:
    """Per word, the voice whose windows overlap it most (else the nearest window's)."""
    known = [(s, e, int(v)) for (s, e), v in zip(windows, window_labels, strict=True) if v >= 0]
    if not known:
        return [0] * len(words)
    starts = np.array([s for s, _, _ in known])
    ends = np.array([e for _, e, _ in known])
    voices = np.array([v for _, _, v in known])
    result: list[int] = []
    for word in words:
        overlap = np.minimum(ends, word.end) - np.maximum(starts, word.start)
        if (overlap > 0).any():
            totals = np.bincount(voices[overlap > 0], weights=overlap[overlap > 0])
            result.append(int(totals.argmax()))
        else:
            middle = (word.start + word.end) / 2
            gap = np.maximum(starts - middle, middle - ends)
            result.append(int(voices[gap.argmin()]))
    return result


def names_by_appearance(voices: Sequence[int]) -> list[str]:
    """speaker_1, speaker_2… numbered in the order the voices first speak."""
    order: dict[int, str] = {}
    for voice in voices:
        order.setdefault(voice, f"speaker_{len(order) + 1}")
    return [order[v] for v in voices]


# --- which mono voice is the agent --------------------------------------------------------

# Phrases an agent answering a business line says and a caller does not. Matched on the
# recogniser's text, so they must survive its typical slips (it often garbles the business
# name, rarely these words).
_AGENT_OPENERS = re.compile(
    r"\b(thanks?( you)? for calling|how (can|may) (i|we) (help|assist)|"
    r"what can (i|we) do for you|\w+ speaking)\b"
)
OPENING_WORDS = 40  # only a speaker's first words count: later text is the conversation


def guess_agent(words: Sequence[TimedWord], speakers: Sequence[str]) -> str | None:
    """The speaker who opens like an agent answering a business line, if exactly one does.

    Reliable when it answers (a greeting such as "thank you for calling …, how can I help"
    is hardly ever said by the caller) but it often does not: a bare "Demo Kitchens, this
    is Megan" has no such phrase. Outbound calls, where the agent speaks second, are
    fine as long as the agent still uses one of the phrases.
    """
    opening: dict[str, list[str]] = {}
    for word, speaker in zip(words, speakers, strict=True):
        opening.setdefault(speaker, [])
        if len(opening[speaker]) < OPENING_WORDS:
            opening[speaker].append(word.text.strip().lower())
    hits = [s for s, tokens in opening.items() if _AGENT_OPENERS.search(" ".join(tokens))]
    return hits[0] if len(hits) == 1 else None


# --- putting it together ------------------------------------------------------------------


def diarize(
    words: Sequence[TimedWord],
    left: FloatArray,
    right: FloatArray,
    sample_rate: int,
    *,
    enabled: bool = True,
    max_speakers: int = 2,
) -> Attribution:
    if not enabled or not words:
        speakers = ["speaker_1"] * len(words)
        return Attribution(speakers, [None] * len(words), "none", 1 if words else 0)
    if not channels_nearly_identical(left, right):
        channels = loudest_channel(words, left, right, sample_rate)
        speakers = [CHANNEL_SPEAKERS[c] for c in channels]
        return Attribution(speakers, list(channels), "channel", len(set(speakers)))
    if max_speakers < 2:
        return Attribution(["speaker_1"] * len(words), [None] * len(words), "none", 1)
    windows = speech_windows(left, sample_rate)
    features = voice_features(left, sample_rate, windows)
    durations = np.array([end - start for start, end in windows], dtype=np.float64)
    voices = words_to_windows(words, windows, cluster_voices(features, durations, max_speakers))
    speakers = names_by_appearance(voices)
    if len(set(speakers)) == 2:
        agent = guess_agent(words, speakers)
        if agent is not None:
            speakers = [AGENT if s == agent else CALLER for s in speakers]
    return Attribution(speakers, [None] * len(words), "clustering", len(set(speakers)))


def build_segments(
    words: Sequence[TimedWord],
    speakers: Sequence[str],
    channels: Sequence[int | None],
    split_pause: float = SPLIT_PAUSE_SECONDS,
) -> list[TranscriptSegment]:
    """Consecutive words of one speaker, split where they pause for ``split_pause`` or more;
    confidence = mean word probability."""
    segments: list[TranscriptSegment] = []
    run: list[int] = []

    def close() -> None:
        if not run:
            return
        text = "".join(words[i].text for i in run).strip()
        if text:
            probabilities = [min(max(words[i].probability, 0.0), 1.0) for i in run]
            segments.append(
                TranscriptSegment(
                    speaker=speakers[run[0]],
                    start=max(words[run[0]].start, 0.0),
                    end=max(words[run[-1]].end, words[run[0]].start, 0.0),
                    text=text,
                    confidence=round(sum(probabilities) / len(probabilities), 4),
                    channel=channels[run[0]],
                )
            )
        run.clear()

    for index, word in enumerate(words):
        if run and (
            speakers[index] != speakers[run[-1]] or word.start - words[run[-1]].end >= split_pause
        ):
            close()
        run.append(index)
    close()
    return segments
