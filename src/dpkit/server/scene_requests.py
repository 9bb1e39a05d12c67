"""Every scene request the Web SDK 15.8.1 can send, and how dpkit answers each one.

:data:`WEB_SDK_REQUESTS` is the table (docs/protocol.md shows it): the requests dpkit carries
out, the ones it accepts and documents as having no effect on its persona, and the Web SDK's
internal requests for the Soul Machines platform's own tools, which dpkit refuses by name. A
request name that is not in the table is refused as ``unknownRequest``. No answer is ever "not
supported yet": each refusal names why, in ``{"error": "<name>: <why>"}`` with status 1.

The checks of the bodies live here too, without I/O: each raises :class:`RequestError` with a
message that names the request and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The only persona of a dpkit session (``personaId`` 1, as the Web SDK's default).
PERSONA_IDS = frozenset({"1", 1})

#: The Web SDK's internal requests (marked @internal in its types) that drive the Soul Machines
#: platform's Behaviour Layer, animation system and renderer: dpkit's persona has none of them.
PLATFORM_ONLY = frozenset(
    {
        "playAnimation",
        "getVariables",
        "setVariables",
        "getVariablesList",
        "getModelVariablesList",
        "getModelChildren",
        "getModelFilterSearchResult",
        "getModelVariableFilterSearchResult",
        "getConnectorEntries",
        "getModelHierarchy",
        "startBlProfiling",
        "stopBlProfiling",
        "createMonitorSet",
        "removeMonitorSet",
        "addVariableToMonitorSet",
        "removeVariableFromMonitorSet",
        "renderModel",
    }
)

#: Speech recognition, answered by the session's recognizer before the persona's requests.
RECOGNITION = frozenset({"startRecognize", "stopRecognize"})

#: Every request name the Web SDK 15.8.1 sends (its bundles and lib/, ``sendRequest('...')``),
#: with how dpkit answers it.
WEB_SDK_REQUESTS: dict[str, str] = {
    "conversationSend": "answered from the corpus (or relayed to the orchestration server); 0",
    "conversationSetVariables": "stores the session's conversation variables; 0, or 1 if invalid",
    "conversationGetVariables": "answers {variables}; 0",
    "startSpeaking": "speaks the text (speech markers fire as it is spoken); 0",
    "stopSpeaking": "stops speaking and forgets queued speech; 0",
    "getState": "answers the state body (scene, persona speechState, session); 0",
    "configure": "validates; applies audio levels and the statistics interval, ignores the rest"
    " (named in the answer); 0, or 1 if a field has the wrong type",
    "animateToNamedCamera": "validated, then a no-op (dpkit's persona has one fixed framing); 0",
    "updateContentAwareness": "validated and kept as the page's geometry; 0",
    "startRecognize": "switches speech recognition on (the recognizer's answer)",
    "stopRecognize": "switches speech recognition off (the recognizer's answer)",
    **dict.fromkeys(sorted(PLATFORM_ONLY), "refused: platformOnly (status 1)"),
}

#: Bounds on what the geometry and camera requests may carry.
MAX_CONTENT_ITEMS = 256
MAX_NAME_CHARS = 200


class RequestError(ValueError):
    """A request body dpkit will not use; the message names the request and the field."""


def refusal(name: str) -> str:
    """The error for a request nothing in the session carried out."""
    if name in PLATFORM_ONLY:
        return (
            f"platformOnly: {name!r} is an internal request of the Soul Machines platform (its "
            "Behaviour Layer, animation system or renderer), which dpkit's persona does not have"
        )
    if name in RECOGNITION:
        return f"noRecognizer: {name!r}: this server has no speech recognizer for the session"
    if name in WEB_SDK_REQUESTS:
        return f"notReady: {name!r} needs the persona, which has not started in this session yet"
    shown = name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "..."
    return (
        f"unknownRequest: {shown!r} is not a scene request of the Web SDK 15.8.1; "
        "docs/protocol.md lists the ones dpkit answers"
    )


def check_persona(name: str, body: Mapping[str, Any]) -> None:
    """A ``personaId`` that is present must be this session's persona (1)."""
    if "personaId" not in body:
        return
    persona = body["personaId"]
    # Only a string or a whole number can name it (a list cannot even be looked up).
    if (
        isinstance(persona, bool)
        or not isinstance(persona, str | int)
        or persona not in PERSONA_IDS
    ):
        raise RequestError(
            f"unknownPersona: {name}: personaId {str(body['personaId'])[:40]!r} is not a persona"
            " of this scene (the only one is 1)"
        )


@dataclass(frozen=True)
class Configuration:
    """What a ``configure`` request set, and what it said that dpkit does not apply."""

    squelch_level: float | None = None
    ambient_noise_level: float | None = None
    statistics_interval_s: float | None = None
    applied: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


#: ``configure`` fields that dpkit's persona has nothing to apply to: accepted, and named as
#: ignored in the answer.
_IGNORED_CONFIGURE = ("render", "preset", "persona")
MAX_STATISTICS_INTERVAL_S = 3600.0


def check_configure(body: Mapping[str, Any], current: Configuration) -> Configuration:
    """The configuration after ``configure {body}``, or :class:`RequestError`."""
    squelch, ambient = current.squelch_level, current.ambient_noise_level
    interval = current.statistics_interval_s
    applied: list[str] = []
    ignored: list[str] = []
    for key, value in body.items():
        if key == "audio":
            audio = _object("configure", "audio", value)
            for audio_key, level in audio.items():
                if audio_key == "squelchLevel":
                    squelch = _number("configure", "audio.squelchLevel", level)
                elif audio_key == "ambientNoiseLevel":
                    ambient = _number("configure", "audio.ambientNoiseLevel", level)
                else:
                    ignored.append(f"audio.{str(audio_key)[:40]}")
                    continue
                applied.append(f"audio.{audio_key}")
        elif key == "statistics":
            statistics = _object("configure", "statistics", value)
            for statistics_key, seconds in statistics.items():
                if statistics_key != "intervalSeconds":
                    ignored.append(f"statistics.{str(statistics_key)[:40]}")
                    continue
                interval = _number("configure", "statistics.intervalSeconds", seconds)
                if not 0 < interval <= MAX_STATISTICS_INTERVAL_S:
                    raise RequestError(
                        f"configure: statistics.intervalSeconds must be over 0 and at most "
                        f"{MAX_STATISTICS_INTERVAL_S:.0f}, got {interval}"
                    )
                applied.append("statistics.intervalSeconds")
        elif key in _IGNORED_CONFIGURE:
            if key == "preset":
                if not isinstance(value, str):
                    raise RequestError("configure: 'preset' must be a string")
            else:
                _object("configure", key, value)
            ignored.append(key)
        elif key == "personaId":
            continue
        else:
            ignored.append(str(key)[:40])
    return Configuration(squelch, ambient, interval, tuple(applied), tuple(ignored))


@dataclass(frozen=True)
class CameraMove:
    """An ``animateToNamedCamera`` request, checked."""

    camera_name: str
    time_s: float


def check_camera(body: Mapping[str, Any]) -> CameraMove:
    """The camera move ``body`` asks for, or :class:`RequestError`."""
    name = body.get("cameraName")
    if not isinstance(name, str) or not name.strip():
        raise RequestError("animateToNamedCamera: 'cameraName' must be a non-empty string")
    if len(name) > MAX_NAME_CHARS:
        raise RequestError(
            f"animateToNamedCamera: 'cameraName' is {len(name)} characters, over {MAX_NAME_CHARS}"
        )
    for key in ("time", "orbitDegX", "orbitDegY", "panDeg", "tiltDeg"):
        # The Web SDK sends undefined (left out of the JSON) for what the app did not give.
        if body.get(key) is not None:
            _number("animateToNamedCamera", key, body[key])
    time_s = body.get("time")
    return CameraMove(name, float(time_s) if isinstance(time_s, int | float) else 0.0)


@dataclass(frozen=True)
class PageGeometry:
    """An ``updateContentAwareness`` request, checked: the page, its video and its content."""

    view_width: float
    view_height: float
    video_frame: dict[str, Any]
    content: tuple[dict[str, Any], ...] = field(default=())


def check_content_awareness(body: Mapping[str, Any]) -> PageGeometry:
    """The geometry ``body`` reports, or :class:`RequestError`."""
    what = "updateContentAwareness"
    width = _number(what, "viewWidth", body.get("viewWidth"))
    height = _number(what, "viewHeight", body.get("viewHeight"))
    video = _box(what, "videoFrame", body.get("videoFrame"))
    content = body.get("content", [])
    if not isinstance(content, list):
        raise RequestError(f"{what}: 'content' must be a list")
    if len(content) > MAX_CONTENT_ITEMS:
        raise RequestError(
            f"{what}: 'content' has {len(content)} items, over the limit of {MAX_CONTENT_ITEMS}"
        )
    boxes = tuple(_box(what, f"content[{i}]", item) for i, item in enumerate(content))
    return PageGeometry(width, height, video, boxes)


def _box(what: str, where: str, value: object) -> dict[str, Any]:
    box = _object(what, where, value)
    checked: dict[str, Any] = {}
    for key in ("x1", "y1", "x2", "y2"):
        checked[key] = _number(what, f"{where}.{key}", box.get(key))
    for key in ("z1", "z2"):
        if box.get(key) is not None:
            checked[key] = _number(what, f"{where}.{key}", box[key])
    identifier = box.get("id")
    if identifier is not None:
        if not isinstance(identifier, str) or len(identifier) > MAX_NAME_CHARS:
            raise RequestError(f"{what}: {where}.id must be a string of at most {MAX_NAME_CHARS}")
        checked["id"] = identifier
    return checked


def _object(what: str, where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RequestError(f"{what}: '{where}' must be an object")
    return value


def _number(what: str, where: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            number = math.inf
        if math.isfinite(number):
            return number
    raise RequestError(f"{what}: '{where}' must be a finite number")
