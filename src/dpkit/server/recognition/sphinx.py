"""PocketSphinx, the default engine: the wheel's en-US model, biased by the persona's corpus.

Two searches run over the same audio. The open language model hears anything (its text is the
transcript when nothing in the corpus fits, and its partial hypotheses are the interim results),
and a JSGF grammar of the corpus's phrases, each with optional lead-in and tail words ("what is
your name", "hello there"), recognizes the short commands the open model misses. The open model
decodes as the audio comes; the grammar decodes the whole utterance once it has ended, so its
cepstral mean is the utterance's own rather than a running estimate that has not settled by the
end of a one-word command (measured offline on eSpeak NG voices: intent accuracy 84.1 % → 88.6 %,
for about 15 ms of decoding after the end of a one-second utterance). The grammar search always
ends somewhere in its network; a path that did not reach one of the phrases ("who are" for
"hello") is a partial match and a weak one.

Confidence is not a probability PocketSphinx computes for such short utterances, so it is
assembled from the two searches: a complete grammar phrase scores 0.55 and up to 0.45 more for
each of its words the open model heard too, less when the open model heard a longer sentence made
of other words (the grammar forced it onto a phrase), and 0.4 for a phrase of three words or more
of which the open model heard none; an open transcript that holds a corpus phrase scores
0.6; anything else stays below 0.5, the default threshold.

What a session costs (measured, see :class:`SharedModels`): the open language model is read once
per process and shared by every session's open search, and the grammar decoder holds a
dictionary of the grammar's own words, not the whole of CMUdict. Each session keeps its own two
decoders (acoustic model state, searches, utterance), so sessions never see each other's audio.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from dpkit.server.recognition.engine import SAMPLE_RATE, Alternative, RecognizerError

logger = logging.getLogger("dpkit.server.recognition")

#: Words that may come before or after a corpus phrase in the grammar.
#: Empty by default: measured on eSpeak NG voices, fillers let the grammar absorb anything.
LEAD_WORDS: tuple[str, ...] = ()
TAIL_WORDS: tuple[str, ...] = ()

#: PocketSphinx's options for both searches (the wheel's en-US model, 16 kHz).
DECODER_OPTIONS: dict[str, object] = {"loglevel": "FATAL", "samprate": SAMPLE_RATE, "dither": True}

#: The most alternate pronunciations of one word looked up for the grammar's dictionary
#: (CMUdict has at most four: "word", "word(2)", ...).
MAX_PRONUNCIATIONS = 8

#: The level of the faint noise added to what the searches hear (dBFS RMS). Digital silence (a
#: muted track, a file's gaps, a synthetic voice) throws PocketSphinx's noise and cepstral-mean
#: estimates off: measured on eSpeak NG voices, exact grammar matches went from 32 to 56 of 66
#: clean phrases with it. Real microphones are far noisier, so it changes nothing for them.
COMFORT_NOISE_DBFS = -60.0

#: The most audio the grammar search keeps for one utterance (bytes of 16-bit PCM, 30 s); the
#: end-pointer cuts utterances far shorter (15 s).
MAX_GRAMMAR_BYTES = 30 * SAMPLE_RATE * 2

#: The most phrases (and words in one) taken into the grammar: the corpus is hostile input too.
MAX_PHRASES = 500
MAX_PHRASE_WORDS = 12

_WORD = re.compile(r"[a-z']+")


def phrase_words(text: str) -> tuple[str, ...]:
    """The words of ``text`` as the recognizer spells them: lower case letters and apostrophes."""
    return tuple(_WORD.findall(text.casefold()))


def contains(words: Sequence[str], phrase: Sequence[str]) -> bool:
    """Whether ``phrase`` occurs in ``words`` as whole consecutive words."""
    size = len(phrase)
    return size > 0 and any(
        tuple(words[index : index + size]) == tuple(phrase)
        for index in range(len(words) - size + 1)
    )


def _pocketsphinx() -> Any:
    try:
        import pocketsphinx  # type: ignore[import-untyped]  # the dpkit[server] extra
    except ImportError as exc:
        raise RecognizerError(
            "speech recognition needs dpkit's 'server' extra: pip install 'dpkit[server]'"
        ) from exc
    return pocketsphinx


class SharedModels:
    """What every session's recognizer shares, read once per process: the open language model.

    Shared on purpose: the en-US model is 32 MB in memory once read, and a session reading its
    own copy paid that and about 110 ms of loading (measured on the wheel's model). The model is
    read-only once loaded: each open search wraps it in an n-gram set of its own (its own word
    map), the weights are applied once at reading, and the trie's one mutable part, its history
    cache, is checked against the history on every score. :attr:`lock` is held around every call
    into a decoder that searches it, so no two threads are ever in the model at once. The
    bindings hold the GIL in every call anyway (pocketsphinx 5.1 has no ``nogil``), so the lock
    costs no parallelism; it keeps the sharing safe if that changes.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._language_model: Any = None

    def open_decoder(self, pocketsphinx: Any) -> Any:
        """A decoder of its own with the shared open language model as its active search.

        Blocking (it reads the model the first time): call it from a worker thread.
        """
        options = dict(DECODER_OPTIONS)
        with self.lock:
            if self._language_model is None:
                # Read exactly as a decoder reads its own: the same options (its weights) and
                # a log table of the same base.
                config = pocketsphinx.Config(**options)
                logmath = pocketsphinx.LogMath(config["logbase"], 0, True)
                self._language_model = pocketsphinx.NGramModel(config, logmath, config["lm"])
            decoder = pocketsphinx.Decoder(**options, lm=None)
            decoder.add_lm("open", self._language_model)
            decoder.activate_search("open")
            return decoder


#: The one :class:`SharedModels` of this process (read-only models; lives as long as it).
SHARED_MODELS = SharedModels()


class SphinxRecognizer:
    """PocketSphinx with the open en-US model and a grammar of ``phrases``."""

    def __init__(self, phrases: Sequence[str], *, shared: SharedModels = SHARED_MODELS) -> None:
        pocketsphinx = _pocketsphinx()
        self._shared = shared
        try:
            self._open: Any = shared.open_decoder(pocketsphinx)
            with shared.lock:
                self._phrases = self._known(phrases)
                lead = self._known(LEAD_WORDS)
                tail = self._known(TAIL_WORDS)
                pronunciations = self._pronunciations((*self._phrases, *lead, *tail))
            self._grammar: Any = None
            if self._phrases:
                # Its own small dictionary: the grammar's words only (CMUdict whole is about
                # 20 MB a decoder). The search only ever enters the grammar's words.
                self._grammar = pocketsphinx.Decoder(**DECODER_OPTIONS, lm=None, dict=None)
                for word, phones in pronunciations:
                    self._grammar.add_word(word, phones, False)
                self._grammar.add_jsgf_string("corpus", _jsgf(self._phrases, lead, tail))
                self._grammar.activate_search("corpus")
        except (RuntimeError, ValueError, OSError) as exc:
            raise RecognizerError(f"PocketSphinx could not load: {exc}") from exc
        self._decoders = [d for d in (self._open, self._grammar) if d is not None]
        self._utterance: list[bytes] = []
        self._utterance_bytes = 0
        self._noise = np.random.default_rng(0)
        self._noise_rms = 32768.0 * 10 ** (COMFORT_NOISE_DBFS / 20)
        self._running = False

    @property
    def phrases(self) -> tuple[tuple[str, ...], ...]:
        """The corpus phrases the grammar holds (those with every word in the dictionary)."""
        return self._phrases

    def _known(self, phrases: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        known: list[tuple[str, ...]] = []
        for phrase in list(phrases)[:MAX_PHRASES]:
            words = phrase_words(phrase)
            if not words or len(words) > MAX_PHRASE_WORDS or words in known:
                continue
            missing = [word for word in words if self._open.lookup_word(word) is None]
            if missing:
                logger.debug(
                    "phrase %r left out of the grammar: %s not in the dictionary",
                    phrase,
                    ", ".join(missing),
                )
                continue
            known.append(words)
        return tuple(known)

    def _pronunciations(self, phrases: Sequence[tuple[str, ...]]) -> tuple[tuple[str, str], ...]:
        """Every pronunciation CMUdict gives the words of ``phrases``, alternates included."""
        entries: list[tuple[str, str]] = []
        for word in dict.fromkeys(word for phrase in phrases for word in phrase):
            for index in range(1, MAX_PRONUNCIATIONS + 1):
                name = word if index == 1 else f"{word}({index})"
                phones = self._open.lookup_word(name)
                if phones is None:
                    break
                entries.append((name, phones))
        return tuple(entries)

    def start(self) -> None:
        if self._decoders:
            with self._shared.lock:
                self._open.start_utt()
        self._utterance = []
        self._utterance_bytes = 0
        self._running = True

    def feed(self, pcm: npt.NDArray[np.int16]) -> None:
        if not self._running or not len(pcm):
            return
        noisy = pcm.astype(np.float32) + self._noise.normal(0.0, self._noise_rms, len(pcm))
        data = np.clip(noisy, -32768, 32767).astype(np.int16).tobytes()
        if self._grammar is not None and self._utterance_bytes + len(data) <= MAX_GRAMMAR_BYTES:
            self._utterance.append(data)
            self._utterance_bytes += len(data)
        try:
            if self._decoders:
                with self._shared.lock:
                    self._open.process_raw(data)
        except RuntimeError as exc:
            raise RecognizerError(f"PocketSphinx failed decoding: {exc}") from exc

    def partial(self) -> str:
        if not self._running:
            return ""
        with self._shared.lock:
            hypothesis = self._open.hyp()
        return " ".join(phrase_words(hypothesis.hypstr)) if hypothesis is not None else ""

    def finish(self) -> tuple[Alternative, ...]:
        if not self._running:
            return ()
        self._running = False
        audio = b"".join(self._utterance)
        self._utterance = []
        self._utterance_bytes = 0
        if not self._decoders:
            return ()
        try:
            with self._shared.lock:
                self._open.end_utt()
                heard = self._open.hyp()
            if self._grammar is not None and audio:
                self._grammar.start_utt()
                self._grammar.process_raw(audio, full_utt=True)
                self._grammar.end_utt()
        except RuntimeError as exc:
            raise RecognizerError(f"PocketSphinx failed ending an utterance: {exc}") from exc
        open_words = phrase_words(heard.hypstr) if heard is not None else ()
        alternatives: dict[str, float] = {}
        if self._grammar is not None and audio:
            matched = self._grammar.hyp()
            grammar_words = phrase_words(matched.hypstr) if matched is not None else ()
            if grammar_words:
                alternatives[" ".join(grammar_words)] = self._grammar_confidence(
                    grammar_words, open_words
                )
        if open_words:
            transcript = " ".join(open_words)
            confidence = self._open_confidence(open_words)
            alternatives[transcript] = max(alternatives.get(transcript, 0.0), confidence)
        ranked = sorted(alternatives.items(), key=lambda item: item[1], reverse=True)
        return tuple(Alternative(text, round(score, 3)) for text, score in ranked)

    def _grammar_confidence(
        self, grammar_words: tuple[str, ...], open_words: tuple[str, ...]
    ) -> float:
        phrase = max(
            (p for p in self._phrases if contains(grammar_words, p)), key=len, default=None
        )
        heard = set(open_words)
        if phrase is None:
            overlap = sum(word in heard for word in grammar_words) / len(grammar_words)
            return 0.35 * overlap
        recall = sum(word in heard for word in phrase) / len(phrase)
        confidence = 0.55 + 0.45 * recall
        if len(open_words) > len(phrase) + 1:
            # The open model heard a longer sentence: the grammar forced it onto a phrase
            # unless most of what it heard is the phrase's.
            precision = sum(word in set(phrase) for word in open_words) / len(open_words)
            confidence -= 0.3 * (1.0 - precision)
        elif recall == 0 and len(phrase) >= 3:
            confidence = 0.4  # three words or more, and not one of them heard
        return confidence

    def _open_confidence(self, open_words: tuple[str, ...]) -> float:
        if any(contains(open_words, phrase) for phrase in self._phrases):
            return 0.6
        return 0.3

    def close(self) -> None:
        # Freeing the open decoder lets go of its hold on the shared model: under the lock.
        with self._shared.lock:
            self._decoders = []
            self._open = self._grammar = None
        self._utterance = []
        self._running = False


def _jsgf(
    phrases: Sequence[tuple[str, ...]],
    lead: Sequence[tuple[str, ...]],
    tail: Sequence[tuple[str, ...]],
) -> str:
    """The grammar: one of ``phrases``, with an optional word of ``lead`` and of ``tail``."""

    def rule(name: str, items: Sequence[tuple[str, ...]]) -> str:
        return f"<{name}> = {' | '.join(' '.join(words) for words in items)};\n"

    body = "[<lead>] <phrase>" if lead else "<phrase>"
    body += " [<tail>]" if tail else ""
    return (
        "#JSGF V1.0;\ngrammar corpus;\n"
        + (rule("lead", lead) if lead else "")
        + (rule("tail", tail) if tail else "")
        + rule("phrase", phrases)
        + f"public <utterance> = {body};\n"
    )
