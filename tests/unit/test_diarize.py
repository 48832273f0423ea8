"""Diarization logic on synthetic signals and word lists (no model, no audio files).

Synthetic "voices" are harmonic series with a given pitch and formant peaks, so the real
feature code (MFCC, autocorrelation pitch) and the real clustering run on them.
"""

from __future__ import annotations

import numpy as np
import pytest

from callpipe.speech import diarize as dz
from callpipe.speech.diarize import TimedWord
from callpipe.speech.local_eval import align, best_mapping_accuracy, normalize
from callpipe.speech.local_features import pitch, voice_features

SR = 16_000


def voice(seconds: float, f0: float, formants: tuple[float, ...], seed: int) -> np.ndarray:
    """A vowel-like sound: harmonics of ``f0`` shaped by formant peaks, slight vibrato."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f) / SR
    out = np.zeros_like(t)
    for h in range(1, int(3400 / f0)):
        gain = sum(np.exp(-(((h * f0 - fm) / 150.0) ** 2)) for fm in formants) + 0.05
        out += gain * np.sin(h * phase) / h**0.5
    out += 0.01 * rng.standard_normal(len(t))
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


LOW = (110.0, (500.0, 1500.0, 2500.0))  # a low voice
HIGH = (230.0, (800.0, 1200.0, 2900.0))  # a high voice


def word(text: str, start: float, end: float, p: float = 0.9) -> TimedWord:
    return TimedWord(f" {text}", start, end, p)


# --- stereo -------------------------------------------------------------------------------


def test_each_word_goes_to_the_louder_channel_even_with_crosstalk() -> None:
    agent = np.concatenate([voice(1.0, *LOW, seed=1), silence(1.0)])
    caller = np.concatenate([silence(1.0), voice(1.0, *HIGH, seed=2)])
    left, right = agent + 0.1 * caller, caller + 0.1 * agent  # echo of each line in the other
    words = [word("hello", 0.1, 0.5), word("there", 0.5, 0.9), word("hi", 1.2, 1.8)]

    assert dz.loudest_channel(words, left, right, SR) == [0, 0, 1]
    result = dz.diarize(words, left, right, SR)
    assert result.method == "channel"
    assert result.speakers == ["agent", "agent", "caller"]
    assert result.channels == [0, 0, 1]
    assert result.speaker_count == 2


def test_a_word_in_silence_keeps_the_previous_speaker() -> None:
    left = np.concatenate([silence(0.5), voice(0.5, *LOW, seed=1), silence(1.0)])
    right = np.concatenate([voice(0.5, *HIGH, seed=2), silence(1.5)])
    words = [word("a", 0.0, 0.4), word("b", 0.6, 0.9), word("c", 1.5, 1.8)]
    assert dz.loudest_channel(words, left, right, SR) == [1, 0, 0]


def test_identical_or_scaled_channels_are_mono() -> None:
    signal = voice(1.0, *LOW, seed=3)
    rng = np.random.default_rng(0)
    assert dz.channels_nearly_identical(signal, signal)
    assert dz.channels_nearly_identical(signal, 0.5 * signal)  # same signal, other gain
    noisy = signal + 0.001 * rng.standard_normal(len(signal)).astype(np.float32)
    assert dz.channels_nearly_identical(signal, noisy)
    assert dz.channels_nearly_identical(silence(1.0), silence(1.0))
    other = voice(1.0, *HIGH, seed=4)
    assert not dz.channels_nearly_identical(signal, other)
    assert not dz.channels_nearly_identical(signal, silence(1.0))  # a dead line is a channel


def test_mono_saved_as_stereo_takes_the_clustering_path(monkeypatch: pytest.MonkeyPatch) -> None:
    audio = np.concatenate([voice(2.0, *LOW, seed=5), silence(0.5), voice(2.0, *LOW, seed=6)])
    monkeypatch.setattr(dz, "speech_windows", lambda a, sr: [(0.0, 2.0), (2.5, 4.5)])
    result = dz.diarize([word("one", 0.2, 1.0), word("two", 3.0, 4.0)], audio, audio.copy(), SR)
    assert result.method == "clustering"
    assert result.channels == [None, None]
    assert result.speakers == ["speaker_1", "speaker_1"]  # one voice stays one speaker


# --- mono: features and clustering --------------------------------------------------------


def test_pitch_of_a_synthetic_voice() -> None:
    for f0 in (100.0, 210.0):
        estimate = np.nanmedian(pitch(voice(1.0, f0, (700.0, 1800.0), seed=7), SR))
        assert estimate == pytest.approx(f0, rel=0.05)
    assert np.isnan(pitch(silence(0.5), SR)).all()


def test_kmeans_is_deterministic_and_finds_two_blobs() -> None:
    rng = np.random.default_rng(1)
    points = np.vstack([rng.normal(0, 1, (20, 3)), rng.normal(6, 1, (15, 3))])
    weights = np.ones(len(points))
    labels, centroids = dz.kmeans(points, weights, 2)
    again, _ = dz.kmeans(points, weights, 2)
    assert (labels == again).all()
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1
    assert labels[0] != labels[20]
    assert sorted(np.round(centroids.mean(axis=1))) == [0.0, 6.0]


def _alternating(
    pattern: list[tuple[float, tuple[float, ...]]],
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    pieces, windows, cursor = [], [], 0.0
    for index, (f0, formants) in enumerate(pattern):
        pieces += [voice(2.0, f0, formants, seed=10 + index), silence(0.4)]
        windows.append((cursor, cursor + 2.0))
        cursor += 2.4
    return np.concatenate(pieces), windows


def test_two_synthetic_voices_cluster_apart() -> None:
    audio, windows = _alternating([LOW, HIGH, LOW, HIGH, HIGH, LOW])
    features = voice_features(audio, SR, windows)
    labels = dz.cluster_voices(features, np.full(len(windows), 2.0), max_speakers=2)
    assert list(labels) in ([0, 1, 0, 1, 1, 0], [1, 0, 1, 0, 0, 1])


def test_one_synthetic_voice_stays_one_speaker() -> None:
    audio, windows = _alternating([LOW] * 6)
    features = voice_features(audio, SR, windows)
    labels = dz.cluster_voices(features, np.full(len(windows), 2.0), max_speakers=2)
    assert set(labels) == {0}


def test_max_speakers_one_never_splits() -> None:
    audio, windows = _alternating([LOW, HIGH, LOW, HIGH])
    features = voice_features(audio, SR, windows)
    assert set(dz.cluster_voices(features, np.full(4, 2.0), max_speakers=1)) == {0}


def test_distinct_voices_by_pitch_gap() -> None:
    low, high = np.log([100.0, 105.0, 98.0]), np.log([200.0, 190.0, 210.0])
    assert dz.distinct_voices(low, high)
    assert not dz.distinct_voices(low, low + 0.05)
    assert not dz.distinct_voices(low, np.array([]))  # unvoiced: no evidence of a second voice


def test_regions_are_cut_into_equal_windows() -> None:
    windows = dz.split_regions([(0.0, 7.0), (8.0, 9.0)], max_seconds=3.0)
    assert [(round(a, 3), round(b, 3)) for a, b in windows] == [
        (0.0, 2.333),
        (2.333, 4.667),
        (4.667, 7.0),
        (8.0, 9.0),
    ]


def test_words_take_the_voice_that_overlaps_them_most_or_the_nearest() -> None:
    windows = [(0.0, 1.0), (1.0, 2.0), (3.0, 4.0), (5.0, 6.0)]
    labels = np.array([0, 1, 1, -1])  # the last window could not be measured
    words = [word("a", 0.1, 0.5), word("b", 0.8, 1.5), word("c", 2.4, 2.6), word("d", 5.2, 5.5)]
    assert dz.words_to_windows(words, windows, labels) == [0, 1, 1, 1]
    assert dz.words_to_windows(words, windows, np.array([-1, -1, -1, -1])) == [0, 0, 0, 0]


def test_speakers_are_numbered_by_first_appearance() -> None:
    assert dz.names_by_appearance([1, 1, 0, 1, 0]) == [
        "speaker_1",
        "speaker_1",
        "speaker_2",
        "speaker_1",
        "speaker_2",
    ]


def test_mono_two_voices_with_an_agent_greeting_get_roles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    audio, windows = _alternating([HIGH, LOW, HIGH, LOW])
    monkeypatch.setattr(dz, "speech_windows", lambda a, sr: windows)
    words = [
        word("Thanks", 0.1, 0.4),
        word("for", 0.4, 0.6),
        word("calling", 0.6, 1.2),
        word("hi", 2.5, 3.0),
        word("sure", 5.0, 6.0),
        word("bye", 7.5, 8.0),
    ]
    result = dz.diarize(words, audio, audio, SR)
    assert result.method == "clustering"
    assert result.speakers == ["agent", "agent", "agent", "caller", "agent", "caller"]
    assert result.speaker_count == 2


# --- agent heuristic ----------------------------------------------------------------------


def _words(*turns: tuple[str, str]) -> tuple[list[TimedWord], list[str]]:
    words, speakers = [], []
    for speaker, text in turns:
        for token in text.split():
            words.append(word(token, 0.0, 0.1))
            speakers.append(speaker)
    return words, speakers


@pytest.mark.parametrize(
    ("turns", "agent"),
    [
        ((("s1", "Thank you for calling Demo Kitchens."), ("s2", "Hi, I need a quote.")), "s1"),
        ((("s1", "Hello?"), ("s2", "Hi, this is Megan. How can I help you?")), "s2"),
        ((("s1", "Demo Kitchens, Tony speaking."), ("s2", "Hi Tony.")), "s1"),
        ((("s1", "Demo Kitchens, this is Megan."), ("s2", "Hi, this is Robert.")), None),
        ((("s1", "Thanks for calling."), ("s2", "Thanks for calling back!")), None),
    ],
)
def test_guess_agent(turns: tuple[tuple[str, str], ...], agent: str | None) -> None:
    words, speakers = _words(*turns)
    assert dz.guess_agent(words, speakers) == agent


def test_guess_agent_only_reads_the_opening() -> None:
    late = " ".join(["word"] * dz.OPENING_WORDS) + " thank you for calling"
    words, speakers = _words(("s1", late), ("s2", "hello there"))
    assert dz.guess_agent(words, speakers) is None


# --- segments -----------------------------------------------------------------------------


def test_segments_split_on_speaker_change_and_long_pause() -> None:
    words = [
        word("Hello", 0.0, 0.4, 0.9),
        word("there.", 0.5, 0.9, 0.7),
        word("Hi.", 1.2, 1.5, 0.8),
        word("Later", 4.0, 4.5, 1.0),
    ]
    speakers = ["agent", "agent", "caller", "caller"]
    segments = dz.build_segments(words, speakers, [0, 0, 1, 1])
    assert [(s.speaker, s.text, s.start, s.end, s.channel) for s in segments] == [
        ("agent", "Hello there.", 0.0, 0.9, 0),
        ("caller", "Hi.", 1.2, 1.5, 1),
        ("caller", "Later", 4.0, 4.5, 1),  # 2.5 s pause: a new segment
    ]
    assert segments[0].confidence == pytest.approx(0.8)
    assert dz.build_segments([], [], []) == []


def test_disabled_diarization_is_one_unlabelled_speaker() -> None:
    audio = voice(1.0, *LOW, seed=1)
    result = dz.diarize([word("a", 0.0, 0.5)], audio, silence(1.0), SR, enabled=False)
    assert (result.method, result.speakers, result.speaker_count) == ("none", ["speaker_1"], 1)
    empty = dz.diarize([], audio, audio, SR)
    assert empty.speaker_count == 0 and empty.speakers == []


# --- the benchmark's scoring ----------------------------------------------------------------


def test_normalize_spells_numbers_as_spoken() -> None:
    said = normalize("Between $40,000 and 50 thousand, at 626-555-0143!")
    assert " ".join(said) == (
        "between forty thousand dollars and fifty thousand at "
        "six two six five five five zero one four three"
    )
    said = normalize("It's 1428 Elm St., I'm on the 2nd floor")
    assert " ".join(said) == "it is fourteen twenty eight elm st i am on the second floor"


def test_alignment_counts_edits() -> None:
    result = align(list("abcd"), list("axcde"))
    assert (result.substitutions, result.deletions, result.insertions) == (1, 0, 1)
    assert result.wer == pytest.approx(0.5)
    assert result.pairs == [(0, 0), (1, 1), (2, 2), (3, 3), (None, 4)]
    assert align([], []).wer == 0.0
    assert align(["a", "b"], []).wer == 1.0


def test_speaker_accuracy_uses_the_best_renaming() -> None:
    pairs = [("agent", "speaker_2")] * 8 + [("caller", "speaker_1")] * 9 + [("caller", "x")]
    accuracy, mapping = best_mapping_accuracy(pairs)
    assert accuracy == pytest.approx(17 / 18)
    assert mapping["speaker_2"] == "agent" and mapping["speaker_1"] == "caller"
