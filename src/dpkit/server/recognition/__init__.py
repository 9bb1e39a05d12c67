"""Speech recognition on the server: the user's microphone heard, end-pointed and understood.

One pipeline, top to bottom: :mod:`.listener` takes the decoded microphone frames of one session,
resamples them to 16 kHz mono and hands them to a worker thread; there :mod:`.endpointing` decides
where an utterance starts and ends, a :class:`~.engine.Recognizer` (:mod:`.sphinx`, PocketSphinx,
by default) turns it into hypotheses, and :mod:`.intents` picks the persona's intent from the best
one. The session turns what comes out into ``recognizeResults`` frames and conversation turns.
"""

from dpkit.server.recognition.engine import (
    SAMPLE_RATE,
    Alternative,
    Recognizer,
    RecognizerError,
    new_recognizer,
)

__all__ = ["SAMPLE_RATE", "Alternative", "Recognizer", "RecognizerError", "new_recognizer"]
