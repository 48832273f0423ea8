"""How many channels a recording has, and whether its two channels carry the same signal.

A mono call saved as stereo (the one signal copied to both channels) must not be
recognised per channel: every utterance would come back twice, as agent and as caller, and
be billed twice. The local engine tells by correlating the decoded channels
(:func:`callpipe.speech.diarize.channels_nearly_identical`); the Google adapter runs in
function bundles without numpy or an audio decoder, so this module does it with the
standard library, reading only the first :data:`PROBE_SECONDS` of audio whatever the
recording's length:

- WAV (PCM, float, mu-law, A-law): the samples are decoded and correlated, with the same
  threshold as the local engine.
- MP3: the frames' side information is compared, without decoding the audio. A signal
  copied to both channels is quantised the same way in each: in plain stereo both channels
  get the same side information granule after granule; in mid/side joint stereo the side
  channel (left minus right) is empty. Two real parties never look like that. This detects
  an exact copy, which is what saving mono as stereo produces; channels that are merely
  very alike (one a filtered or rescaled copy of the other) are not detected in MP3.
"""

from __future__ import annotations

import math
import operator
import sys
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

from callpipe.recordings.sniff import SNIFF_BYTES, mpeg_audio_frame, sniff_audio

# Channels this correlated are one signal twice (mono saved as stereo); real two-channel
# calls stay far below it even with echo from one line into the other.
IDENTICAL_CHANNELS_CORRELATION = 0.98
# Enough speech to judge by, and a bounded cost for a recording of any length.
PROBE_SECONDS = 30.0
# Correlating every 8 kHz sample is plenty; faster rates are subsampled to about that.
_PROBE_RATE = 8000
# Share of MP3 granules with sound whose side information must show a copy.
_MP3_COPY_SHARE = 0.95
_MP3_MIN_GRANULES = 10
# Enough of the file to get past a typical ID3 tag to the first MP3 frame or the WAV fmt chunk.
_HEAD_BYTES = 64 * 1024


def audio_channel_count(path: Path) -> int | None:
    """Channels declared by a WAV or MP3 header; None when the format or header is unknown."""
    head = _head(path)
    kind = sniff_audio(head[:SNIFF_BYTES])
    if kind == "wav":
        fmt = _wav_format(head)
        return fmt.channels if fmt is not None else None
    if kind == "mp3":
        start = _first_frame(head)
        return None if start is None else (1 if head[start + 3] >> 6 == 0b11 else 2)
    return None


def channels_identical(path: Path) -> bool | None:
    """Whether a two-channel WAV or MP3 carries the same signal on both channels; None when
    it cannot tell (another format, unreadable, or silence throughout the probe)."""
    head = _head(path)
    kind = sniff_audio(head[:SNIFF_BYTES])
    try:
        if kind == "wav":
            fmt = _wav_format(head)
            if fmt is None or fmt.data < 0:
                return None
            return _wav_identical(
                fmt, _read(path, fmt.data, int(PROBE_SECONDS * fmt.rate) * fmt.block)
            )
        if kind == "mp3":
            start = _first_frame(head)
            if start is None:
                return None
            return _mp3_identical(_read(path, start, int(PROBE_SECONDS * _MP3_MAX_BYTE_RATE)))
    except (OSError, ValueError, ArithmeticError, IndexError, MemoryError):
        # a header that lies (sizes, rates) in a file Speech may still decode: not knowing
        # leaves the decision to the declared channel count
        return None
    return None


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as source:
            return source.read(_HEAD_BYTES)
    except OSError:
        return b""


def _read(path: Path, offset: int, size: int) -> bytes:
    """At most ``size`` bytes from ``offset``, and never more than the file holds: the size
    comes from a header, and ``read`` allocates what it is asked for before reading."""
    with path.open("rb") as source:
        available = source.seek(0, 2) - offset
        source.seek(offset)
        return source.read(max(0, min(size, available)))


# --- WAV ---------------------------------------------------------------------------------


class _WavFormat:
    def __init__(self, tag: int, channels: int, rate: int, block: int, bits: int, data: int):
        self.tag, self.channels, self.rate = tag, channels, rate
        self.block, self.bits = block, bits
        self.data = data  # offset of the data chunk's body, or -1 if not in the bytes read


def _wav_format(data: bytes) -> _WavFormat | None:
    fmt: _WavFormat | None = None
    position = 12  # after "RIFF", the size and "WAVE"
    while position + 8 <= len(data):
        chunk = data[position : position + 4]
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        body = position + 8
        if chunk == b"fmt " and body + 16 <= len(data):
            tag = int.from_bytes(data[body : body + 2], "little")
            if tag == 0xFFFE and body + 26 <= len(data):  # WAVE_FORMAT_EXTENSIBLE
                tag = int.from_bytes(data[body + 24 : body + 26], "little")  # the sub-format
            fmt = _WavFormat(
                tag=tag,
                channels=int.from_bytes(data[body + 2 : body + 4], "little"),
                rate=int.from_bytes(data[body + 4 : body + 8], "little"),
                block=int.from_bytes(data[body + 12 : body + 14], "little"),
                bits=int.from_bytes(data[body + 14 : body + 16], "little"),
                data=-1,
            )
        elif chunk == b"data" and fmt is not None:
            fmt.data = body
            return fmt
        position = body + size + (size & 1)  # chunks are padded to even sizes
    return fmt


def _wav_identical(fmt: _WavFormat, body: bytes) -> bool | None:
    """``body``: the start of the data chunk."""
    if fmt.channels != 2 or fmt.rate <= 0 or fmt.block <= 0:
        return None
    body = body[: len(body) - len(body) % fmt.block]  # whole frames only
    decoded = _decode(fmt, fmt.block // 2, body)
    if decoded is None:
        return None
    step = max(fmt.rate // _PROBE_RATE, 1)
    return _same_signal(decoded[0 :: 2 * step], decoded[1 :: 2 * step])


def _decode(fmt: _WavFormat, width: int, body: bytes) -> Sequence[float] | None:
    """Interleaved samples of a WAV data chunk as numbers, or None for an unknown coding."""
    if fmt.tag == 1 and width == 1:  # 8-bit PCM is unsigned
        return [byte - 128 for byte in body]
    code = {(1, 2): "h", (1, 4): "i", (3, 4): "f", (3, 8): "d"}.get((fmt.tag, width))
    if code is not None:  # 16/32-bit PCM, 32/64-bit float
        samples = array(code)
        if samples.itemsize != width:
            return None
        samples.frombytes(body)
        if sys.byteorder == "big":
            samples.byteswap()
        return samples
    if fmt.tag == 1 and width == 3:
        return [
            int.from_bytes(body[i : i + 3], "little", signed=True)
            for i in range(0, len(body) - 2, 3)
        ]
    if fmt.tag in (6, 7) and width == 1:  # A-law, mu-law
        table = _ALAW if fmt.tag == 6 else _ULAW
        return [table[byte] for byte in body]
    return None


def _same_signal(left: Sequence[float], right: Sequence[float]) -> bool | None:
    """The local engine's test: correlation at or above IDENTICAL_CHANNELS_CORRELATION;
    None when both channels are silent (nothing to judge by)."""
    left_energy = float(sum(map(operator.mul, left, left)))
    right_energy = float(sum(map(operator.mul, right, right)))
    if left_energy == 0.0 and right_energy == 0.0:
        return None
    if left_energy == 0.0 or right_energy == 0.0:
        return False  # a dead line is still a channel
    product = float(sum(map(operator.mul, left, right)))
    return product / math.sqrt(left_energy * right_energy) >= IDENTICAL_CHANNELS_CORRELATION


def _ulaw(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = (((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)
    return (0x84 - magnitude) if byte & 0x80 else (magnitude - 0x84)


def _alaw(byte: int) -> int:
    byte ^= 0x55
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = (
        (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return magnitude if byte & 0x80 else -magnitude


_ULAW = [_ulaw(b) for b in range(256)]
_ALAW = [_alaw(b) for b in range(256)]


# --- MP3 ---------------------------------------------------------------------------------

# kbit/s by bitrate index, for MPEG-1 and for MPEG-2/2.5 (layer III); sample rates by version.
_MP3_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {0b11: (44100, 48000, 32000), 0b10: (22050, 24000, 16000), 0b00: (11025, 12000, 8000)}
# The most bytes a second of MP3 takes (320 kbit/s), to read PROBE_SECONDS of any MP3.
_MP3_MAX_BYTE_RATE = 320_000 // 8
_MODE_MONO = 0b11
_MODE_JOINT = 0b01
_MS_STEREO = 0b10  # mode extension bit of layer III joint stereo


def _first_frame(data: bytes) -> int | None:
    position = 0
    if data.startswith(b"ID3") and len(data) >= 10:
        size = 0
        for byte in data[6:10]:  # syncsafe integer: 7 bits a byte
            size = (size << 7) | (byte & 0x7F)
        position = 10 + size + (10 if data[5] & 0x10 else 0)  # footer flag
    for index in range(position, min(len(data), position + _HEAD_BYTES) - 4):
        if data[index] == 0xFF and sniff_audio(data[index : index + SNIFF_BYTES]) == "mp3":
            return index
    return None


def _mp3_identical(data: bytes) -> bool | None:
    """``data``: the file from its first frame."""
    copies = sounding = 0
    for copy in _mp3_granules(data):
        if copy is None:  # silence in both channels: no evidence either way
            continue
        sounding += 1
        copies += copy
    if sounding < _MP3_MIN_GRANULES:
        return None
    return copies / sounding >= _MP3_COPY_SHARE


def _mp3_granules(data: bytes) -> Iterator[bool | None]:
    """Per granule of a stereo MP3's first PROBE_SECONDS (``data`` starts with a frame):
    whether its side information shows one signal copied to both channels (None: both
    channels silent)."""
    position = 0
    seconds = 0.0
    while position + 4 <= len(data) and seconds < PROBE_SECONDS:
        header = data[position : position + 4]
        version, layer = (header[1] >> 3) & 0b11, (header[1] >> 1) & 0b11
        bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 0b11
        if not mpeg_audio_frame(header) or layer != 0b01:
            return  # not a layer III frame: a trailing tag, or garbage
        if bitrate_index == 0:
            return  # free format: no frame length in the header
        mode, extension = header[3] >> 6, (header[3] >> 4) & 0b11
        if mode == _MODE_MONO:
            return
        mpeg1 = version == 0b11
        rate = _MP3_RATES[version][rate_index]
        bitrate = _MP3_BITRATES[1 if mpeg1 else 2][bitrate_index] * 1000
        samples = 1152 if mpeg1 else 576
        size = samples // 8 * bitrate // rate + ((header[2] >> 1) & 1)
        side = position + 4 + (0 if header[1] & 1 else 2)  # a CRC follows when protected
        mid_side = mode == _MODE_JOINT and bool(extension & _MS_STEREO)
        for first, second in _side_info(data, side, mpeg1):
            if first[0] == 0 and second[0] == 0:
                yield None
            elif mid_side:
                yield second[0] == 0  # no bits for the side channel: left equals right
            else:
                yield first == second
        seconds += samples / rate
        position += size


def _side_info(data: bytes, start: int, mpeg1: bool) -> Iterator[tuple[tuple[int, ...], ...]]:
    """Per granule, each channel's side information fields (part2_3_length first)."""
    reader = _Bits(data, start)
    if mpeg1:
        reader.skip(9 + 3 + 4 * 2)  # main_data_begin, private bits, scfsi of both channels
        granules, compress_bits, preflag_bits = 2, 4, 1
    else:
        reader.skip(8 + 2)  # main_data_begin, private bits
        granules, compress_bits, preflag_bits = 1, 9, 0
    for _ in range(granules):
        channels = []
        for _ in range(2):
            channels.append(
                (
                    reader.read(12),  # part2_3_length: bits of scale factors and Huffman data
                    reader.read(9),  # big_values
                    reader.read(8),  # global_gain
                    reader.read(compress_bits),  # scalefac_compress
                    # window switching, block type or table selects, region counts,
                    # preflag, scalefac_scale, count1table_select: compared as one number
                    reader.read(1 + 22 + preflag_bits + 2),
                )
            )
        if reader.overrun:
            return
        yield tuple(channels)


class _Bits:
    def __init__(self, data: bytes, start: int) -> None:
        self._data = data
        self._position = start * 8
        self.overrun = False

    def skip(self, count: int) -> None:
        self._position += count

    def read(self, count: int) -> int:
        end = self._position + count
        if end > len(self._data) * 8:
            self.overrun = True
            return 0
        first, last = self._position // 8, (end + 7) // 8
        chunk = int.from_bytes(self._data[first:last], "big")
        self._position = end
        return (chunk >> (last * 8 - end)) & ((1 << count) - 1)
