"""The clocks every part of mouthpiece counts on, defined once.

Audio is the master clock: the session clock counts 16 kHz mono samples (``AUDIO_RATE``); output video
frame ``p`` (25 fps, ``FPS``) covers session samples ``[640 p, 640 (p + 1))``; the mel spectrogram runs
at 80 frames per second and one model mel chunk is 16 mel frames (IPLAP_FACTS.md sections 3 and 8).
"""

from __future__ import annotations

FPS = 25  # output video frames per second (the authors' schedule is defined at 25 fps)
AUDIO_RATE = 16000  # the session clock: mono samples per second after resampling
SAMPLES_PER_FRAME = AUDIO_RATE // FPS  # 640 session samples per output frame
MEL_FPS = 80.0  # mel frames per second (hop 200 at 16 kHz)
MEL_CHUNK_LEN = 16  # mel frames per model chunk
