"""The session socket: carries out what the server's session machine asks, over aiohttp and aiortc.

One :class:`SignallingSession` per socket. It reserves a Digital Person, drives
:class:`~dpkit.protocol.server.ServerSession` with the client's frames and its own happenings
(offer answered, transport up or failed, timeouts, an end asked for by the server), and carries
out the actions that come back. All protocol decisions live in the machine; this module only does
the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from dpkit.errors import ProtocolError
from dpkit.protocol.actions import (
    Action,
    AddRemoteCandidate,
    AnswerSceneRequest,
    ClientEvent,
    CloseSocket,
    OrchestrationEvent,
    ReleaseSession,
    SendFrame,
    StartSession,
)
from dpkit.protocol.limits import SessionLimits
from dpkit.protocol.messages import (
    Accepted,
    DpkitEvent,
    IceServer,
    KeepAlive,
    SceneEvent,
    SceneRequest,
    SceneResponse,
    SessionSettings,
    UserCamera,
    UserText,
    VideoStarted,
    serialize_frame,
)
from dpkit.protocol.server import (
    CONNECTION_LOST,
    FRAME_TOO_LARGE,
    HANDED_OVER,
    PROTOCOL_ERROR,
    ServerPhase,
    ServerSession,
)
from dpkit.server.assets import BUILTIN_BUNDLE, AssetError, AssetProgress, Bundle
from dpkit.server.cluster.handover import Handover, hand_over
from dpkit.server.conversation import Corpus
from dpkit.server.idle import IdleTimer
from dpkit.server.listening import REQUESTS as RECOGNITION_REQUESTS
from dpkit.server.listening import SessionListening
from dpkit.server.persona_media.voice import EspeakVoice, VoiceError
from dpkit.server.pool import DigitalPerson, Grant, QueuePosition, QueueRefused, RemoteGrant
from dpkit.server.rtc import PersonaPeer
from dpkit.server.scene_requests import RequestError, refusal
from dpkit.server.talk import PersonaTalk
from dpkit.tasks import TaskOwner

if TYPE_CHECKING:
    from dpkit.server.state import ServerState

logger = logging.getLogger("dpkit.server")

#: The connection state the journal shows for each phase of the server's machine.
_SHOWN_STATE = {
    ServerPhase.OPENED: "SearchingForDigitalPerson",
    ServerPhase.ESTABLISHED: "DownloadingAssets",
    ServerPhase.STARTING: "DownloadingAssets",
    ServerPhase.ACCEPTED: "ConnectingToDigitalPerson",
    ServerPhase.CONNECTED: "Connected",
    ServerPhase.CLOSED: "Disconnected",
}


def offered_devices(sdp: str) -> tuple[bool, bool]:
    """Whether the offer sends a microphone and a camera.

    Clients lay out their local tracks first and then always one more audio and one more video
    section (docs/protocol.md), so a second section of a kind means a device of that kind.
    """
    kinds = [line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m=")]
    return kinds.count("audio") > 1, kinds.count("video") > 1


#: Scene requests that count as the user interacting (they restart the idle timer).
INTERACTIONS = frozenset({"conversationSend", "startSpeaking", "startRecognize"})

#: How long a resuming socket waits for the server to notice its old socket is gone (seconds).
RESUME_GRACE_S = 2.0
#: The ending recorded for a socket whose persistent session was kept for its client.
DETACHED = "detached"

#: How long a transport that went down may wait for the client's close frame (seconds).
TRANSPORT_LOSS_GRACE_S = 2.0


@dataclass
class SessionInfo:
    """What the server knows about one session, for logs, tests and (later) the journal."""

    socket_id: str
    key_id: str
    opened_at: float
    session_id: str | None = None
    phase: str = ServerPhase.OPENED.value
    ending: str | None = None
    queue_wait_s: float = 0.0
    #: Offers this socket sent (a device change must not need another one).
    offers: int = 0
    connected_at: float | None = None
    #: Every ``userCamera {active}`` the client sent, in order.
    user_camera: list[bool] = field(default_factory=list)
    #: The id (``jti``) of the session token the socket opened with, not the token itself.
    token_id: str = ""
    events: list[str] = field(default_factory=list)
    #: Seconds from the offer frame's arrival to ``accepted`` sent (``perf_counter``), once sent.
    offer_to_accepted_s: float | None = None


class SignallingSession:
    """One session socket on the server."""

    def __init__(
        self,
        state: ServerState,
        ws: web.WebSocketResponse,
        key_id: str,
        client_kind: str = "other",
        *,
        persistence: bool = False,
        resume: str | None = None,
        client_address: str = "",
        user_agent: str = "",
        granted: DigitalPerson | None = None,
    ) -> None:
        self.client_address = client_address
        self._user_agent = user_agent
        #: The Digital Person another node's queue handed this (taken over) socket.
        self._granted = granted
        self._persistence = persistence
        self._resume = resume
        self._state = state
        self._ws = ws
        settings = state.settings
        self._machine = ServerSession(
            SessionLimits(
                max_frame_bytes=settings.max_frame_bytes,
                max_text_chars=settings.max_text_chars,
                client_log_max_bytes=settings.client_log_max_bytes,
            )
        )
        self._person: DigitalPerson | None = None
        self._peer: PersonaPeer | None = None
        #: Candidates that arrived before the offer was answered, added right after it.
        self._early_candidates: list[AddRemoteCandidate] = []
        self._answered = False
        self._closing_peer: asyncio.Task[None] | None = None
        self._camera_on: bool | None = None
        self._talk: PersonaTalk | None = None
        self._listening: SessionListening | None = None
        self._tasks = TaskOwner("session")
        #: Set once :meth:`run` has released everything.
        self.finished = asyncio.Event()
        self.info = SessionInfo(secrets.token_hex(8), key_id, time.time())
        self._journal = state.journal
        persona = state.settings.persona
        self._idle = IdleTimer(persona.idle_timeout_s, persona.idle_warning_s)
        self._shown: str | None = None
        # When the frame being handled arrived, and when the offer being answered did.
        self._frame_at = 0.0
        self._offer_at: float | None = None
        self._journal.opened(
            self.info.socket_id,
            key_id=key_id,
            client_kind=client_kind,
            node=state.settings.node_id,
            persona=state.settings.persona.name,
            at=self.info.opened_at,
        )
        self._journal_state()

    @property
    def session_id(self) -> str | None:
        return self._machine.session_id

    @property
    def ws(self) -> web.WebSocketResponse:
        return self._ws

    async def refuse(self, reason: str) -> None:
        """Turn the socket away before it starts: ``close {reason}``, recorded in the journal."""
        await self._execute(self._machine.end(reason))
        self.finished.set()

    async def run(self) -> None:
        """Serve the socket until the session ends, then release everything it held."""
        try:
            await self._serve()
        finally:
            await self._execute(self._machine.socket_closed())
            await self._tasks.close()
            if not self._ws.closed:
                await self._ws.close()
            # A task cancelled above may have been between its close frame and its release.
            await self._release(self._machine.ending or CONNECTION_LOST)
            self.finished.set()

    def _ended(self) -> bool:
        """Whether the session has ended (work that awaited meanwhile must stop)."""
        return self._machine.phase is ServerPhase.CLOSED

    async def end(self, reason: str) -> None:
        """End the session from the server's side (``close {reason}`` then close the socket)."""
        await self._execute(self._machine.end(reason))

    @property
    def handed_over(self) -> bool:
        """Whether another node of the cluster took this waiting socket over."""
        return self._machine.ending == HANDED_OVER

    async def _serve(self) -> None:
        settings = self._state.settings
        reader = self._tasks.spawn(self._read(), "reader")
        person: Grant | None
        if self._granted is not None:
            person, self._granted = self._granted, None
            person.holder = self
        elif self._resume is not None:
            person = await self._resumed_person(self._resume)
        else:
            person = await self._wait_for_person(reader)
            while isinstance(person, RemoteGrant):
                # Stop reading (a frame the client sends now is the other node's to read).
                reader.cancel()
                await asyncio.wait([reader])
                if self._ended():
                    self._state.pool.give_back(person)
                    return
                if await self._hand_over(person):
                    return
                reader = self._tasks.spawn(self._read(), "reader")
                person = await self._wait_for_person(reader)
        if person is None:
            await asyncio.wait([reader])
            return
        if self._ended():
            # The client ended the socket (close, or a limit) just as the person was granted:
            # the session has been released already, so the person goes straight back.
            self._state.pool.release(person)
            await asyncio.wait([reader])
            return
        self._person = person
        self._tasks.spawn(
            self._deadline(settings.offer_timeout_s, ServerPhase.ESTABLISHED, "offer"),
            "offer-timeout",
        )
        await self._execute(
            self._machine.persona_assigned(
                tuple(IceServer((url,)) for url in settings.ice_servers),
                SessionSettings(settings.microphone_mute_delay_ms, settings.log_to_server),
                resume_session_id=self._resume,
            )
        )
        await asyncio.wait([reader])

    async def _read(self) -> None:
        too_big = False
        async for message in self._ws:
            if message.type is WSMsgType.TEXT or message.type is WSMsgType.BINARY:
                self._frame_at = time.perf_counter()
                actions = self._machine.receive_text(message.data)
                await self._or_close(self._execute(actions), "handling a client frame")
            elif message.type is WSMsgType.ERROR:
                error = message.data
                too_big = getattr(error, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
            if self._machine.phase is ServerPhase.CLOSED:
                break
        if too_big:
            # Past aiohttp's own bound the socket is gone before a close frame can be sent.
            logger.warning(
                "socket %s: a frame far over %d bytes (max_frame_bytes); socket closed",
                self.info.socket_id,
                self._state.settings.max_frame_bytes,
            )
            await self._execute(self._machine.end(FRAME_TOO_LARGE))

    async def _or_close(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run ``work``; whatever goes wrong with it, close the session with a reason.

        The checks in the protocol core stop the input known to break the WebRTC stack; this is
        the last line for what they do not know yet: one WARNING line, a close the client can
        read, and the session's resources released, never a dead task and a traceback. A
        failure after the session ended is its consequence, not news: DEBUG only.
        """
        try:
            await work
        except Exception as exc:
            if self._ended():
                logger.debug(
                    "socket %s: %s moot, session ended: %r", self.info.socket_id, what, exc
                )
                return
            if isinstance(exc, ProtocolError):
                await self._notify_protocol_error(exc)
            else:
                logger.warning(
                    "socket %s: closing, %s failed: %s: %s",
                    self.info.socket_id,
                    what,
                    type(exc).__name__,
                    exc,
                )
                logger.debug("how %s failed", what, exc_info=exc)
            await self.end(PROTOCOL_ERROR)

    async def _resumed_person(self, session_id: str) -> DigitalPerson | None:
        """The Digital Person of the detached session to resume, or None (noSessionToResume)."""
        person = await self._state.detached.take(session_id, self.info.key_id, RESUME_GRACE_S)
        if person is None:
            logger.info("socket %s: no session %s to resume", self.info.socket_id, session_id)
            await self._execute(self._machine.end("noSessionToResume"))
            return None
        person.holder = self
        logger.info("session %s: resuming", session_id)
        return person

    async def _wait_for_person(self, reader: asyncio.Task[None]) -> Grant | None:
        """A Digital Person, after a wait in the queue if need be; None if there will be none."""
        pool = self._state.pool
        started = time.monotonic()
        acquire = self._tasks.spawn(self._queue_for_person(), "queue")
        await asyncio.wait([acquire, reader], return_when=asyncio.FIRST_COMPLETED)
        if not acquire.done():
            # The client left (or the session was ended) while it waited: leave no trace.
            acquire.cancel()
            await asyncio.wait([acquire])
            outcome = None if acquire.cancelled() else acquire.result()
            if outcome is not None and not isinstance(outcome, QueueRefused):
                pool.give_back(outcome)
            return None
        self.info.queue_wait_s = time.monotonic() - started
        self._journal.update(self.info.socket_id, queue_wait_s=self.info.queue_wait_s)
        outcome = acquire.result()
        if isinstance(outcome, QueueRefused):
            logger.info("socket %s: noScene: %s", self.info.socket_id, outcome)
            await self._execute(self._machine.end("noScene"))
            return None
        return outcome

    async def _hand_over(self, grant: RemoteGrant) -> bool:
        """Relay this socket to the node of ``grant``, which serves the session from now on
        (:mod:`dpkit.server.cluster.handover`); False if that node could not take it (the
        grant is declined, and the socket waits again)."""
        handover = Handover(
            self.info.key_id,
            self._persistence,
            self.client_address,
            self.info.token_id,
            self.info.queue_wait_s,
        )

        async def taken() -> None:
            logger.info("socket %s: handed over to node %s", self.info.socket_id, grant.node)
            await self._execute(self._machine.handed_over())

        if await hand_over(
            self._ws,
            grant,
            handover,
            self._state.signer,
            user_agent=self._user_agent,
            max_msg_size=4 * self._state.settings.max_frame_bytes,
            on_taken=taken,
        ):
            return True
        self._state.pool.give_back(grant)
        return False

    async def _queue_for_person(self) -> Grant | QueueRefused:
        try:
            return await self._state.pool.acquire(self, self._on_queue_position, self.info.key_id)
        except QueueRefused as refused:
            return refused

    def _on_queue_position(self, position: QueuePosition) -> None:
        self._tasks.spawn(self._tell_position(position, time.time()), "queue-position")

    async def _tell_position(self, position: QueuePosition, at: float) -> None:
        """Send the new position, then journal it. A change moves every waiter at once (a
        thousand, in a cluster): each sends, yields so that every other waiter's frame goes out
        too, and only then writes its journal row (SQLite, and the cluster's event feed)."""
        frame = DpkitEvent(
            "queue",
            {"position": position.position, "size": position.size, "etaMs": position.eta_ms},
        )
        await self._carry_out(SendFrame(frame))
        await asyncio.sleep(0)
        self._journal.event(
            self.info.socket_id, "queue", f"{position.position}/{position.size}", at
        )

    async def _deadline(self, seconds: float, phase: ServerPhase, what: str) -> None:
        """End with ``sessionTimeout`` if the session is still in ``phase`` after ``seconds``."""
        await asyncio.sleep(seconds)
        if self._machine.phase is phase:
            logger.info("socket %s: no %s within %.1f s", self.info.socket_id, what, seconds)
            await self.end("sessionTimeout")

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            await self._carry_out(action)
        self.info.phase = self._machine.phase.value
        self._journal_state()

    def _journal_state(self) -> None:
        """Record the connection state this socket is in, once per change."""
        shown = _SHOWN_STATE[self._machine.phase]
        if shown != self._shown:
            self._shown = shown
            self._journal.event(self.info.socket_id, "state", shown, time.time())

    async def _carry_out(self, action: Action) -> None:
        if isinstance(action, SendFrame):
            await self._send(action)
        elif isinstance(action, CloseSocket):
            await self._ws.close()
        elif isinstance(action, StartSession):
            self._offer_at = self._frame_at
            # Its own task: the reader goes on, so a client that leaves while the assets load
            # is seen at once and the load is cancelled with the session.
            self._tasks.spawn(self._or_close(self._start(action), "answering the offer"), "start")
        elif isinstance(action, AddRemoteCandidate):
            if not self._answered:
                self._early_candidates.append(action)
            elif self._peer is not None:
                await self._peer.add_candidate(action)
        elif isinstance(action, AnswerSceneRequest):
            await self._answer_scene_request(action)
        elif isinstance(action, ClientEvent):
            self._on_client_event(action)
        elif isinstance(action, OrchestrationEvent):
            await self._on_orchestration(action.event)
        elif isinstance(action, ReleaseSession):
            await self._release(action.reason)

    async def _send(self, action: SendFrame) -> None:
        if self._ws.closed:
            return
        try:
            await self._ws.send_str(serialize_frame(action.frame))
            if isinstance(action.frame, Accepted) and self._offer_at is not None:
                self._answered_offer(time.perf_counter() - self._offer_at)
        except ConnectionError:
            # The client went away mid-send; the reader sees the end and releases the session.
            logger.debug("socket %s: could not send %r", self.info.socket_id, action.frame)

    def _answered_offer(self, seconds: float) -> None:
        """The server's cost of an offer, from its frame's arrival to ``accepted`` sent."""
        self._offer_at = None
        self.info.offer_to_accepted_s = seconds
        logger.debug(
            "session %s: offer to accepted in %.1f ms", self.info.session_id, seconds * 1000
        )

    async def _start(self, action: StartSession) -> None:
        """Load the persona's assets and answer the offer; then watch the transport."""
        assert self._person is not None
        self.info.offers += 1
        settings = self._state.settings
        source = settings.persona.assets or str(BUILTIN_BUNDLE)
        try:
            bundle = await self._state.assets.fetch(source, self._on_asset_progress)
        except AssetError as exc:
            logger.warning("socket %s: assets failed: %s", self.info.socket_id, exc)
            await self._carry_out(SendFrame(DpkitEvent("assetsError", {"message": str(exc)})))
            await self.end("assetsFailed")
            return
        if self._ended():
            return  # ended while the assets loaded: its person is released already
        self._person.bundle = bundle
        try:
            self._talk = self._new_talk(self._person.bundle)
        except (ValueError, KeyError, OSError, VoiceError) as exc:
            logger.warning("socket %s: persona not usable: %s", self.info.socket_id, exc)
            message = f"the persona's corpus or voice is not usable: {exc}"
            await self._carry_out(SendFrame(DpkitEvent("assetsError", {"message": message})))
            await self.end("assetsFailed")
            return
        peer = PersonaPeer(
            self._person,
            settings.effective_ice_addresses,
            settings.ice_servers,
            speaker=self._talk.speaker,
        )
        self._peer = peer
        answer_sdp = await peer.answer(action.offer.sdp)
        if self._ended():
            return  # ended while the offer was answered: run() closes the peer connection
        # A resumed session keeps its id (the machine took it from established).
        session_id = self._machine.session_id or self._new_session_id()
        self.info.session_id = session_id
        microphone, camera = offered_devices(action.offer.sdp)
        self._camera_on = camera
        accepted = Accepted(
            session_id=session_id,
            resume_requested=self._persistence,
            server=settings.node_id,
            scene_id=f"{settings.node_id}-{self._person.index}",
            control_url=settings.persona.control_url or None,
        )
        self._state.sessions[session_id] = self
        self._talk.session_id = session_id
        await self._execute(self._machine.session_started(accepted, answer_sdp))
        # Only what the answer needs comes before ``accepted``: the client can do nothing until
        # it has the answer, so the rest waits until it is on its way (and costs the client no
        # time while the machine is busy, e.g. with a browser connecting on the same CPUs).
        # The user's audio cannot arrive before the transport is up, which needs the answer.
        if self._ended():
            return  # ended as accepted went out: its listener would never be closed
        self._listen(peer, self._person.bundle)
        # Trickled candidates (a browser's) are added now; aiortc does not need them to answer,
        # and the server answers the client's checks on the answer's candidates meanwhile.
        await self._add_early_candidates(peer)
        self._journal.update(
            self.info.socket_id, session_id=session_id, microphone=microphone, camera=camera
        )
        self._tasks.spawn(self._watch_transport(peer), "transport")

    async def _add_early_candidates(self, peer: PersonaPeer) -> None:
        """Add the candidates that came before the offer was answered; later ones go straight
        in (candidates arriving while these are added join the queue first, so none is lost)."""
        while self._early_candidates and not self._ended():
            await peer.add_candidate(self._early_candidates.pop(0))
        self._answered = True

    def _new_talk(self, bundle: Bundle | None) -> PersonaTalk:
        """The persona's conversation for this session, from its bundle's corpus and voice."""
        assert bundle is not None
        assert self._person is not None
        persona = self._state.settings.persona
        voice_settings = bundle.json("voice.json")
        voice = EspeakVoice(
            str(voice_settings.get("voice", "en-us")),
            int(voice_settings.get("rate_wpm", 165)),
            int(voice_settings.get("pitch", 50)),
            max_duration_s=self._state.settings.max_utterance_s,
        )
        return PersonaTalk(
            Corpus.from_json(bundle.json("corpus.json")),
            voice,
            fps=persona.video_fps,
            scene_id=f"{self._state.settings.node_id}-{self._person.index}",
            send=lambda frame: self._carry_out(SendFrame(frame)),
            on_activity=self._idle.touch,
        )

    def _listen(self, peer: PersonaPeer, bundle: Bundle | None) -> None:
        """Speech recognition for this session, on the user's microphone frames."""
        persona = self._state.settings.persona
        if self._talk is None or bundle is None or self._listening is not None:
            return
        self._listening = SessionListening(
            persona,
            Corpus.from_json(bundle.json("corpus.json")),
            self._talk.speaker,
            send=lambda frame: self._carry_out(SendFrame(frame)),
            converse=self._converse,
            touch=self._idle.touch,
            label=self.info.socket_id,
        )
        self._listening.open()
        peer.on_user_audio = self._listening.listener.feed

    async def _converse(self, text: str) -> None:
        """The user's words (recognized speech), handled exactly as ``conversationSend {text}``."""
        if self._ended():
            return
        request = SceneRequest("conversationSend", "", {"text": text})
        if self._state.settings.persona.control_url:
            try:
                await self._question_orchestration(request)
            except RequestError as exc:
                logger.info("session %s: heard words not asked: %s", self.session_id, exc)
        elif self._talk is not None:
            await self._talk.handle(request)  # its response is for no request of the client's

    async def _on_asset_progress(self, progress: AssetProgress) -> None:
        frame = DpkitEvent(
            "assets",
            {
                "files": progress.files_done,
                "totalFiles": progress.files_total,
                "bytes": progress.bytes_done,
                "totalBytes": progress.bytes_total,
                "fromCache": progress.from_cache,
            },
        )
        # Sent in line, so progress never arrives after ``accepted``.
        await self._carry_out(SendFrame(frame))

    def _new_session_id(self) -> str:
        return f"{self._state.settings.node_id}-{secrets.token_hex(8)}"

    async def _watch_transport(self, peer: PersonaPeer) -> None:
        settings = self._state.settings
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                connected = await peer.wait_transport()
        except TimeoutError:
            logger.info(
                "session %s: transport not up within %.1f s",
                self.session_id,
                settings.connect_timeout_s,
            )
            await self.end("sessionTimeout")
            return
        if not connected:
            await self._execute(self._machine.transport_failed())
            return
        await self._execute(self._machine.transport_connected())
        self.info.connected_at = time.monotonic()
        self._tasks.spawn(self._idle.run(self._warn_idle, self._expire_idle), "idle")
        persona = self._state.settings.persona
        if persona.greet_at_start and self._talk is not None:
            self._talk.start_greeting(persona.greet_wait_s)
        answered = self.info.offer_to_accepted_s
        logger.info(
            "session %s: connected (%s, from %s; offer answered in %s ms)",
            self.session_id,
            self._person_label(),
            self.client_address or "?",
            "?" if answered is None else f"{answered * 1000:.1f}",
        )
        await peer.wait_closed_or_failed()
        # The Web SDK closes its peer connection just before it sends close {normal}: give that
        # frame a moment to arrive before calling the lost transport a failure.
        await asyncio.sleep(TRANSPORT_LOSS_GRACE_S)
        if self._machine.phase is ServerPhase.CONNECTED:
            await self._execute(self._machine.transport_failed())

    @property
    def user_audio_dbfs(self) -> float | None:
        """The user's microphone level as the server hears it (None: no audio yet)."""
        return self._peer.user_audio_dbfs if self._peer is not None else None

    @property
    def received_frames(self) -> dict[str, int]:
        """How many audio and video frames of the user's media the server has decoded."""
        return dict(self._peer.received_frames) if self._peer is not None else {}

    def _person_label(self) -> str:
        person = self._person
        return f"{person.persona.name} #{person.index}" if person is not None else "no persona"

    async def _answer_scene_request(self, action: AnswerSceneRequest) -> None:
        request = action.request
        if request.name in INTERACTIONS:
            self._idle.touch()
        if request.name == "conversationSend" and self._state.settings.persona.control_url:
            await self._ask_orchestration(request)
            return
        if request.name in RECOGNITION_REQUESTS and self._listening is not None:
            await self._carry_out(SendFrame(self._listening.answer(request)))
            return
        if self._talk is not None:
            answered = await self._talk.handle(request)
            if answered is not None:
                await self._carry_out(SendFrame(answered))
                return
        # Server rule: answer every request, or the browser waits for it forever. What reaches
        # here is refused by name (docs/protocol.md, "Scene requests").
        error = refusal(request.name)
        logger.info("session %s: refused %s", self.session_id, error[:300])
        response = SceneResponse(request.name, request.transaction, 1, {"error": error})
        await self._carry_out(SendFrame(response))

    async def _warn_idle(self, closes_in_s: float) -> None:
        logger.info("session %s: idle, closing in %.0f s", self.session_id, closes_in_s)
        frame = DpkitEvent("idleWarning", {"closesInMs": round(closes_in_s * 1000)})
        await self._carry_out(SendFrame(frame))

    async def _expire_idle(self) -> None:
        logger.info("session %s: idle for %.0f s", self.session_id, self._idle.timeout_s)
        await self.end("sessionTimeout")

    async def _ask_orchestration(self, request: SceneRequest) -> None:
        """Hand the user's words to the orchestration server (through the client's relay)."""
        try:
            await self._question_orchestration(request)
        except RequestError as exc:
            refused = SceneResponse(request.name, request.transaction, 1, {"error": str(exc)})
            await self._carry_out(SendFrame(refused))
            return
        await self._carry_out(SendFrame(SceneResponse(request.name, request.transaction, 0, {})))

    async def _question_orchestration(self, request: SceneRequest) -> None:
        """``conversationRequest`` with the words of ``request`` (typed or recognized).

        Raises :class:`RequestError` for variables the session cannot take.
        """
        body = request.body
        variables = body.get("variables") or {}
        if self._talk is not None:
            # The session's conversation variables, with the request's own on top.
            variables = self._talk.request_variables(body, request.name)
        question = SceneEvent(
            "conversationRequest",
            {
                "personaId": body.get("personaId", 1),
                "input": {"text": str(body.get("text", ""))},
                "variables": variables,
                "optionalArgs": body.get("optionalArgs") or {},
            },
        )
        await self._carry_out(SendFrame(question))

    async def _on_orchestration(self, event: SceneEvent) -> None:
        if event.name == "endConversation":
            logger.info("session %s: the orchestration server ended it", self.session_id)
            await self.end("conversationEnded")
            return
        output = event.body.get("output")
        text = output.get("text", "") if isinstance(output, dict) else ""
        question = event.body.get("input")
        result = SceneEvent(
            "conversationResult",
            {
                "status": 0,
                "personaId": "1",
                "input": question if isinstance(question, dict) else {"text": ""},
                # Server rule: context and meta must be objects, or the browser drops this.
                "output": {"text": str(text), "context": {}},
                "provider": {"kind": "orchestration", "meta": {}},
            },
        )
        self._idle.touch()
        await self._carry_out(SendFrame(result))

    def _on_client_event(self, action: ClientEvent) -> None:
        event = action.event
        self.info.events.append(type(event).NAME)
        if isinstance(event, KeepAlive | UserText):
            self._idle.touch()
        if isinstance(event, VideoStarted) and self._talk is not None:
            self._talk.video_started()
        if isinstance(event, UserCamera):
            self.info.user_camera.append(event.active)
            if event.active != self._camera_on:
                # A change, not the report of how it started, goes in the timeline.
                self._camera_on = event.active
                self._journal.update(self.info.socket_id, camera=event.active)
                self._journal.event(
                    self.info.socket_id, "camera", "on" if event.active else "off", time.time()
                )

    async def _notify_protocol_error(self, error: ProtocolError) -> None:
        logger.warning("session %s: %s", self.session_id, error.message)
        await self._carry_out(SendFrame(DpkitEvent("protocolError", {"message": error.message})))

    def _detachable(self, reason: str) -> bool:
        """A persistent, connected session whose client vanished is kept for it to come back."""
        return (
            reason == CONNECTION_LOST
            and self._persistence
            and self.info.connected_at is not None
            and self.session_id is not None
            and self._person is not None
            and not self._state.closing
        )

    async def _release(self, reason: str) -> None:
        """Free the Digital Person and record the ending once; close the peer connection."""
        if self.info.ending is None:
            self.info.ending = reason
            if self.session_id is not None and self._state.sessions.get(self.session_id) is self:
                del self._state.sessions[self.session_id]
            if self._detachable(reason):
                assert self._person is not None
                assert self.session_id is not None
                self._state.detached.detach(self.session_id, self.info.key_id, self._person)
                self._person = None
                reason = self.info.ending = DETACHED
            if self._person is not None:
                connected_at = self.info.connected_at
                length = None if connected_at is None else time.monotonic() - connected_at
                self._state.pool.release(self._person, session_s=length)
                self._person = None
            self._state.ended.append(self.info)
            self._journal_state()
            self._journal.ended(self.info.socket_id, reason, time.time())
            if self.session_id is not None:
                logger.info("session %s: ended (%s)", self.session_id, reason)
        if self._listening is not None:
            await self._listening.close()
        if self._talk is not None:
            await self._talk.close()
        if self._peer is not None and self._closing_peer is None:
            # Closed in a task of its own: the caller may be a task that run() is about to
            # cancel (the idle timer, the transport watcher), and a peer connection cancelled
            # half-way through closing leaks its sockets. run() awaits it in the end.
            self._closing_peer = asyncio.get_running_loop().create_task(self._peer.close())
        if self._closing_peer is not None:
            await asyncio.shield(self._closing_peer)
