"""aiortc test tracks stamped like a real capture device's.

aiortc's ``AudioStreamTrack`` and ``VideoStreamTrack`` advance their timestamps by one frame per
frame produced. When the test machine starves the process (a loaded CI runner), they fall
behind and their RTP clock runs slow: the relay then infers 16 kHz for Opus, or finds a
camera's retransmissions (RTX) off the camera's timeline and calls them a screen share. A
microphone or camera does not do that: a frame is stamped when it is captured, and a
starved reader loses frames instead. These tracks do the same, so what the relay infers from
their timestamps is what it would infer from a browser's; the video is small, to keep the
encoder's share of the CPU low.
"""

from __future__ import annotations

import asyncio
import fractions
import time

from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import AudioFrame, VideoFrame

AUDIO_RATE = 8000
AUDIO_SAMPLES = 160  # 20 ms
VIDEO_CLOCK = 90000
VIDEO_STEP = 3000  # 30 frames/s


async def _next(start: float, last: int | None, rate: int, step: int) -> int:
    """The timestamp of the next frame after ``last`` (None: the first, at ``start``): one
    step on, or now (in whole steps) when the reader fell behind."""
    if last is None:
        return 0
    due = max(last + step, int((time.time() - start) * rate) // step * step)
    await asyncio.sleep(start + due / rate - time.time())
    return due


class RealTimeAudio(AudioStreamTrack):
    """Silence at 8 kHz mono, 20 ms frames, stamped by the wall clock."""

    def __init__(self) -> None:
        super().__init__()
        self._t0 = 0.0
        self._pts: int | None = None

    async def recv(self) -> AudioFrame:
        if self._pts is None:
            self._t0 = time.time()
        self._pts = await _next(self._t0, self._pts, AUDIO_RATE, AUDIO_SAMPLES)
        frame = AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        for p in frame.planes:
            p.update(bytes(p.buffer_size))
        frame.pts = self._pts
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


class RealTimeVideo(VideoStreamTrack):
    """A 160x120 picture at up to 30 frames/s, stamped by the wall clock."""

    def __init__(self) -> None:
        super().__init__()
        self._t0 = 0.0
        self._pts: int | None = None

    async def recv(self) -> VideoFrame:
        if self._pts is None:
            self._t0 = time.time()
        self._pts = await _next(self._t0, self._pts, VIDEO_CLOCK, VIDEO_STEP)
        frame = VideoFrame(width=160, height=120)
        for p in frame.planes:
            p.update(bytes(p.buffer_size))
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame
