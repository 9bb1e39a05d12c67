"""From the best hypothesis to the persona's intent: above the threshold it is the corpus's
match, below it (or with no match) the FALLBACK intent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dpkit.server.conversation import FALLBACK_INTENT, Corpus
from dpkit.server.recognition.engine import Alternative


@dataclass(frozen=True)
class Decision:
    """What the user meant: the intent, the transcript it was read from, and how sure."""

    intent: str
    transcript: str
    confidence: float


def decide(alternatives: Sequence[Alternative], corpus: Corpus, threshold: float) -> Decision:
    """The intent of the best alternative if its confidence reaches ``threshold``, else FALLBACK.

    ``alternatives`` come best first; an empty list (nothing was said) is FALLBACK with no text.
    """
    if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if not alternatives:
        return Decision(FALLBACK_INTENT, "", 0.0)
    best = alternatives[0]
    if best.confidence < threshold:
        return Decision(FALLBACK_INTENT, best.transcript, best.confidence)
    return Decision(corpus.answer(best.transcript).intent, best.transcript, best.confidence)


def corpus_phrases(corpus: Corpus) -> tuple[str, ...]:
    """Every pattern of every intent, in corpus order: what biases the recognizer."""
    return tuple(pattern for intent in corpus.intents for pattern in intent.patterns)
