"""``Scene``: the Python counterpart of the Web SDK's ``Scene``.

    async with Scene(api_key=key, requested_media_devices={}, required_media_devices={}) as scene:
        scene.connection_state.on_connection_state_updated.add_listener(print)
        session_id = await scene.connect()
        ...
    # leaving the block disconnects

``connect()`` runs the five connection states, retries ``noScene`` per :class:`RetryOptions`,
and raises a :class:`~dpkit.errors.ConnectionError_` whose ``name`` is the seed's error name.
The conversation surface (``on_state_event``, ``on_recognize_results``, ``on_user_text``,
``scene.conversation``) and the semantics of requests, disconnects and device events follow the
Web SDK 15.8.1; docs/protocol.md ("The Python SDK and the Web SDK") lists where Python differs.

The user's devices are the machine's real microphone and camera (:class:`SystemDevices`),
opened only with the user's consent, as in a browser; pass ``devices=SyntheticDevices()`` for a
tone and a test pattern. A Scene left connected when its event loop closes (a forgotten
``disconnect()``, a crash inside ``asyncio.run``) releases everything then, with one
``ResourceWarning`` naming it, as aiohttp does for an unclosed ``ClientSession``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from ssl import SSLContext
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import av
from aiortc.mediastreams import MediaStreamTrack

from dpkit.apikey import decode_api_key
from dpkit.client.auth import SOCKET_SCHEMES, SessionToken, fetch_token
from dpkit.client.connection import Connection, new_http_session
from dpkit.client.consent import (
    ConsentedDevices,
    ConsentGate,
    FileConsentStore,
    default_prompt,
    origin_of,
)
from dpkit.client.conversation import (
    Conversation,
    RecognizeResult,
    parse_recognize_results,
)
from dpkit.client.devices import (
    DeviceError,
    DeviceProvider,
    UserMedia,
    acquire_user_media,
    no_user_media,
)
from dpkit.client.events import Event
from dpkit.client.frames import (
    AUDIO_BUFFER,
    VIDEO_BUFFER,
    FrameCounts,
    FramePump,
    FrameStream,
)
from dpkit.client.history import ConnectionAttempt, ConnectionResult
from dpkit.client.options import DEFAULT_REQUESTED, DEFAULT_REQUIRED, MediaDevices, RetryOptions
from dpkit.client.persistence import FileSessionStore, SessionStore, StoredSession
from dpkit.client.playback import PersonaPlayback, has_output_device, known_output_device
from dpkit.client.reach import check_url, same_server
from dpkit.errors import (
    ConfigurationError,
    ConnectionError_,
    InvalidStateError,
    NoSession,
    NoSessionToResume,
    NoUserMedia,
    RequestFailed,
    SceneResponseError,
    ServerConnectionFailed,
    SessionTimeout,
)
from dpkit.media.capture import SystemDevices
from dpkit.protocol.client import CONNECTION_LOST
from dpkit.protocol.messages import (
    DpkitEvent,
    Frame,
    KeepAlive,
    SceneEvent,
    SceneRequest,
    SceneResponse,
    UserCamera,
    UserText,
    VideoStarted,
)
from dpkit.protocol.states import ConnectionState, ConnectionStateData, ConnectionStateName
from dpkit.rtc import loopback_for, validate_addresses
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.client")

Devices = MediaDevices | Mapping[str, bool]

ABANDONED_RELEASE_S = 5.0
"""How long a scene left connected at loop close may take to release its session (bounded)."""


@dataclass(frozen=True)
class TokenServer:
    """A session socket URL and the token that opens it (the Web SDK's ``tokenServer``)."""

    uri: str
    token: str


class ConnectionStateView:
    """The scene's connection state: current data, listeners, and ``async for`` over changes."""

    def __init__(self) -> None:
        self._state = ConnectionState()
        self.on_connection_state_updated: Event[[ConnectionStateData]] = Event(
            "on_connection_state_updated"
        )
        self._queues: list[asyncio.Queue[ConnectionStateData]] = []

    @property
    def data(self) -> ConnectionStateData:
        return self._state.data

    @property
    def name(self) -> ConnectionStateName:
        return self._state.name

    def _changed(self, data: ConnectionStateData) -> None:
        self.on_connection_state_updated.call(data)
        for queue in self._queues:
            queue.put_nowait(data)

    def _reset(self) -> None:
        changed = self._state.reset()
        if changed is not None:
            self._changed(changed)

    async def changes(self) -> AsyncIterator[ConnectionStateData]:
        """Every change from now on, in order, for as long as the caller iterates."""
        queue: asyncio.Queue[ConnectionStateData] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(queue)

    def __aiter__(self) -> AsyncIterator[ConnectionStateData]:
        return self.changes()


class Scene:
    """A connection to a Digital Person.

    ``async with Scene(...) as scene:`` then ``await scene.connect()``: entering does not
    connect (``connect()`` takes the retry and timeout options, and its errors are the ones to
    handle); leaving disconnects, whatever happened in the block.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        requested_media_devices: Devices | None = None,
        required_media_devices: Devices | None = None,
        devices: DeviceProvider | None = None,
        ice_addresses: tuple[str, ...] | list[str] | None = None,
        video_bounds: tuple[int, int] = (640, 480),
        session_store: SessionStore | None = None,
        persona_muted: bool = False,
        consent: ConsentGate | None = None,
        play_audio: bool | None = None,
        output_device: str | int | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        #: How an https token endpoint and a wss:// socket are verified, e.g. a context that
        #: trusts a private CA (None: the system's CAs, or SSL_CERT_FILE's at process start).
        self._ssl = ssl
        #: Play the persona's voice on this machine's speakers (``output_device``, or the
        #: default); None: when the machine has an output device.
        self.play_audio = play_audio
        self._output_device = output_device
        self.playback: PersonaPlayback | None = None
        #: Decides which real devices this app may use (default: remembered in the user's state
        #: directory, asked on the terminal when there is one). Synthetic devices need none.
        #: Without a terminal, and with nothing remembered, a real device is declined.
        self.consent = (
            consent if consent is not None else ConsentGate(FileConsentStore(), default_prompt())
        )
        self._origin = ""
        self._persona_muted = persona_muted
        self._video_started_sent = False
        #: Where a persistent session's server and id are kept between connects.
        self.session_store: SessionStore = (
            session_store if session_store is not None else FileSessionStore()
        )
        self._supports_persistence = False
        self._resumed = False
        self._requests: dict[str, asyncio.Future[SceneResponse]] = {}
        # The timer that unmutes the microphone after the persona's speech (microphoneMuteDelay).
        self._unmute: asyncio.Task[None] | None = None
        self._request_count = 0
        self._api_key = api_key
        self.requested_media_devices = (
            DEFAULT_REQUESTED
            if requested_media_devices is None
            else MediaDevices.of(requested_media_devices)
        )
        self.required_media_devices = (
            DEFAULT_REQUIRED
            if required_media_devices is None
            else MediaDevices.of(required_media_devices)
        )
        #: Where the user's microphone and camera come from: this machine's, unless told.
        self._devices: DeviceProvider = devices if devices is not None else SystemDevices()
        try:
            self._ice_addresses = (
                validate_addresses(ice_addresses) if ice_addresses is not None else None
            )
        except ValueError as exc:
            raise ConfigurationError(f"ice_addresses: {exc}") from None
        self._video_bounds = video_bounds
        self.connection_state = ConnectionStateView()
        #: The session ended without the app asking: ``(scene, session_id, reason)`` (the server
        #: ended it, the connection was lost ...). ``disconnect()`` does not fire it, as in the
        #: Web SDK.
        self.on_disconnected_event: Event[[Scene, str, str]] = Event("on_disconnected_event")
        #: Frames of other categories (``scene``, ``dpkit``) as they arrive.
        self.on_message: Event[[Frame]] = Event("on_message")
        #: Each ``state`` frame's body: ``(scene, state)`` (the Web SDK's ``onStateEvent``).
        self.on_state_event: Event[[Scene, dict[str, Any]]] = Event("on_state_event")
        #: Speech recognition results: ``(scene, status, error_message, results)``, as the Web
        #: SDK's ``onRecognizeResultsEvent``; ``results`` are :class:`RecognizeResult` objects.
        self.on_recognize_results: Event[[Scene, int, str, tuple[RecognizeResult, ...]]] = Event(
            "on_recognize_results"
        )
        #: A ``userText`` frame from the server: ``(scene, text)`` (``onUserTextEvent``).
        self.on_user_text: Event[[Scene, str]] = Event("on_user_text")
        #: The conversation state (idle / dpSpeaking / userSpeaking / dpProcessing) and its
        #: ``on_conversation_state_updated`` event.
        self.conversation = Conversation()
        #: The microphone / camera is active or not: ``(active)``, as in the Web SDK. Fired at
        #: connect, when the app turns a device on or off, and when the microphone is muted for
        #: the persona's speech (``microphoneMuteDelay``) and unmuted after it.
        self.on_microphone_active: Event[[bool]] = Event("on_microphone_active")
        self.on_camera_active: Event[[bool]] = Event("on_camera_active")
        #: How the last connect went: its attempts, their errors and timing (the Web SDK's
        #: ``connectionResult``); None until a connect has made an attempt.
        self.connection_result: ConnectionResult | None = None
        #: The server will end an idle session soon: ``(scene, seconds_left)``. Interact, or
        #: call :meth:`keep_alive`, to keep it.
        self.on_idle_warning: Event[[Scene, float]] = Event("on_idle_warning")
        self._connection: Connection | None = None
        # The attempt under way during connect (is_connected() is true once its socket opens).
        self._attempt: Connection | None = None
        # Set while disconnect() ends the session, whose end is then not reported as an event.
        self._hanging_up = False
        self._connecting = False
        self._media = UserMedia()
        self._tasks = TaskOwner("scene")
        self.session_id: str | None = None
        #: The persona's video and audio over this scene's life: frames received, and frames a
        #: slow reader's stream dropped (see :meth:`video_frames`).
        self.video_counts = FrameCounts()
        self.audio_counts = FrameCounts()
        # The connected session's frame pumps, and the tasks that run them and guard the loop.
        self._video: FramePump[av.VideoFrame] | None = None
        self._audio: FramePump[av.AudioFrame] | None = None
        self._session_tasks: TaskOwner | None = None
        self._session_over: asyncio.Event | None = None
        self._warned = False

    def __repr__(self) -> str:
        state = self.connection_state.name.value if hasattr(self, "connection_state") else "?"
        session = getattr(self, "session_id", None)
        return f"<Scene {state} session_id={session!r}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        # Only reached connected if the loop closed without cancelling its tasks (not through
        # asyncio.run): the guard could not release the session, and there is no loop left.
        if getattr(self, "_connection", None) is not None and not getattr(self, "_warned", True):
            self._warned = True
            _warn(
                f"Unclosed {self!r}: disconnect() was never awaited", ResourceWarning, source=self
            )

    # --- the Web SDK's surface --------------------------------------------------------------

    def is_persona_muted(self) -> bool:
        return self._persona_muted

    async def set_persona_muted(self, muted: bool) -> None:
        """Mute or unmute the persona (the seed's ``video.muted``).

        As the browser does, the server hears ``videoStarted`` once the persona plays unmuted:
        at connect, or at the first unmute, so a muted start does not lose the greeting.
        """
        self._persona_muted = muted
        if not muted:
            await self._send_video_started()

    async def _send_video_started(self) -> None:
        if self._video_started_sent or self._persona_muted or self._connection is None:
            return
        self._video_started_sent = True
        await self._connection.send(VideoStarted())

    def is_microphone_active(self) -> bool:
        """Whether the user's microphone is on and sending in this session.

        False while it is muted for the persona's speech (``microphoneMuteDelay``), as in the
        Web SDK, whose microphone track is disabled then.
        """
        peer = self._connection.peer if self._connection is not None else None
        return peer is not None and peer.microphone.source is not None and not peer.microphone.muted

    def is_camera_active(self) -> bool:
        """Whether the user's camera is on in this session."""
        peer = self._connection.peer if self._connection is not None else None
        return peer is not None and peer.camera.source is not None

    async def set_media_device_active(
        self, *, microphone: bool | None = None, camera: bool | None = None
    ) -> None:
        """Turn the microphone and/or camera on or off during the session (no new offer).

        Turning a device on opens it through the scene's device provider (which asks for
        consent where it does); a device that cannot be opened raises ``NoUserMedia`` with the
        reason, and the other device's change still stands. A camera change is reported to the
        server with ``userCamera``.
        """
        connection = self._connection
        if connection is None or connection.peer is None:
            raise InvalidStateError("cannot change media devices: scene is not connected")
        peer = connection.peer
        failure: NoUserMedia | None = None
        for kind, wanted, slot, event, active in (
            (
                "audio",
                microphone,
                peer.microphone,
                self.on_microphone_active,
                self.is_microphone_active,
            ),
            ("video", camera, peer.camera, self.on_camera_active, self.is_camera_active),
        ):
            # Whether the device is open, not whether it is muted for the persona's speech.
            if wanted is None or wanted == (slot.source is not None):
                continue
            if wanted:
                devices = MediaDevices(microphone=kind == "audio", camera=kind == "video")
                try:
                    media = await self._consented_devices().open(devices)
                except DeviceError as exc:
                    failure = no_user_media(exc)
                    continue
                peer.switch(kind, media.microphone if kind == "audio" else media.camera)
            else:
                peer.switch(kind, None)
            event.call(active())
            if kind == "video":
                await connection.send(UserCamera(active=bool(wanted)))
        if failure is not None:
            raise failure

    def supports_session_persistence(self) -> bool:
        """Whether this session can be resumed (the API key allows it: ``resumeRequested``)."""
        return self._supports_persistence

    def is_resumed_session(self) -> bool:
        """Whether the last connect resumed an earlier session rather than starting one."""
        return self._resumed

    def is_connected(self) -> bool:
        """Whether the session socket is open: from early in ``connect()`` (the socket opens
        before SearchingForDigitalPerson) until the session ends, as the Web SDK's."""
        connection = self._connection if self._connection is not None else self._attempt
        return connection is not None and connection.socket_open

    @property
    def video_track(self) -> MediaStreamTrack | None:
        """The persona's incoming video track (an aiortc track), once connected."""
        return self._connection.peer.video if self._connection and self._connection.peer else None

    @property
    def audio_track(self) -> MediaStreamTrack | None:
        """The persona's incoming audio track (an aiortc track), once connected."""
        return self._connection.peer.audio if self._connection and self._connection.peer else None

    def video_frames(self, *, buffer: int = VIDEO_BUFFER) -> FrameStream[av.VideoFrame]:
        """Decoded persona video frames (``av.VideoFrame``) from now until the session ends.

        ``async for frame in scene.video_frames():``. Each call is a stream of its own. It keeps
        at most ``buffer`` frames for a slow reader, dropping the oldest (``stream.dropped``,
        and :attr:`video_counts` for the scene), so memory stays flat and the next frame read
        is one of the newest.
        """
        return self._pump(self._video, "video").subscribe(buffer)

    def audio_frames(self, *, buffer: int = AUDIO_BUFFER) -> FrameStream[av.AudioFrame]:
        """Decoded persona audio frames (``av.AudioFrame``, 20 ms each) until the session ends.

        As :meth:`video_frames`; ``buffer`` frames (200 ms by default) are kept for a slow
        reader, and the oldest dropped beyond that (:attr:`audio_counts`).
        """
        return self._pump(self._audio, "audio").subscribe(buffer)

    @property
    def dropped_video_frames(self) -> int:
        """Persona video frames that streams dropped because their readers fell behind."""
        return self.video_counts.dropped

    @property
    def dropped_audio_frames(self) -> int:
        """Persona audio frames that streams dropped because their readers fell behind."""
        return self.audio_counts.dropped

    def _pump(self, pump: FramePump[Any] | None, kind: str) -> FramePump[Any]:
        if pump is None or self._connection is None:
            raise InvalidStateError(f"no persona {kind}: scene is not connected")
        return pump

    async def connect(
        self,
        server_uri: str | None = None,
        access_token: str | None = None,
        *,
        token_server: TokenServer | None = None,
        retry_options: RetryOptions | None = None,
        user_text: str | None = None,
        connect_timeout: float | None = None,
    ) -> str:
        """Connect to a Digital Person; return the session id."""
        if self._connecting:
            raise InvalidStateError("cannot connect: scene is connecting")
        if self._connection is not None:
            raise InvalidStateError("cannot connect: scene is connected")
        if token_server is not None:
            server_uri, access_token = token_server.uri, token_server.token
        if (server_uri is None) != (access_token is None):
            raise ConfigurationError("pass both server_uri and access_token, or neither")
        if server_uri is not None:
            check_url("the server URL", server_uri, SOCKET_SCHEMES)
        if server_uri is None and self._api_key is None:
            raise ServerConnectionFailed(
                "Please authenticate via an API key or with a server_uri and access_token"
            )
        self._connecting = True
        self.connection_result = None
        try:
            async with asyncio.timeout(connect_timeout):
                return await self._connect(server_uri, access_token, retry_options, user_text)
        except TimeoutError:
            self._media.stop()
            state = self.connection_state.name.value
            raise SessionTimeout(
                f"connect did not finish within {connect_timeout} s (stuck in {state})"
            ) from None
        finally:
            self._connecting = False

    async def _connect(
        self,
        server_uri: str | None,
        access_token: str | None,
        retry_options: RetryOptions | None,
        user_text: str | None,
    ) -> str:
        self._origin = origin_of(server_uri or _auth_server(self._api_key))
        # Whether there is a speaker to play the persona on is not needed to reach Connected:
        # known in this process already, or found out in a worker thread meanwhile.
        speaker = self.play_audio
        probe: asyncio.Task[bool] | None = None
        if speaker is None:
            speaker = known_output_device(self._output_device)
            if speaker is None:
                probe = self._tasks.spawn(
                    asyncio.to_thread(has_output_device, self._output_device), "output-probe"
                )
        self._media = await acquire_user_media(
            self.requested_media_devices, self.required_media_devices, self._consented_devices()
        )
        try:
            resuming = False
            http: aiohttp.ClientSession | None = None
            if server_uri is not None and access_token is not None:
                token = SessionToken(server_uri, access_token)
            else:
                assert self._api_key is not None
                stored = self.session_store.load(self._api_key)
                token, http = await self._fetch_token(stored)
                if stored is not None:
                    # As the Web SDK does: the node that holds the session, at the same host.
                    token = SessionToken(_server_route(token.url, stored.server), token.jwt)
                    resuming = True
            try:
                session_id = await self._attempts(
                    token, retry_options or RetryOptions(), user_text, http
                )
            except NoSessionToResume:
                self._forget_session()
                raise
            self._remember_session(resumed=resuming)
        except BaseException:
            self._media.stop()
            raise
        self.session_id = session_id
        logger.info("session %s: connected", session_id)
        self._start_session_media()
        # As the Web SDK once the persona's tracks arrive (before videoStarted lets the persona
        # speak, and so mute the microphone): tell the app what is active.
        self.on_microphone_active.call(self.is_microphone_active())
        self.on_camera_active.call(self.is_camera_active())
        self._video_started_sent = False
        await self._send_video_started()
        if self.play_audio is None:
            self.play_audio = speaker if probe is None else await probe
        if self.play_audio:
            self.playback = PersonaPlayback(
                self.audio_frames(), self.is_persona_muted, self._output_device
            )
            self._tasks.spawn(self.playback.run(), "playback")
        return session_id

    async def _fetch_token(
        self, stored: StoredSession | None
    ) -> tuple[SessionToken, aiohttp.ClientSession | None]:
        """The session token, and the HTTP session that asked for it if the socket is at the
        same server (its kept-alive connection then carries the socket: one handshake less)."""
        assert self._api_key is not None
        http = new_http_session()
        try:
            token = await fetch_token(
                self._api_key,
                session_id=stored.session_id if stored else None,
                ssl=self._ssl,
                http=http,
            )
        except BaseException:
            await http.close()
            raise
        if not same_server(_auth_server(self._api_key), token.url):
            await http.close()
            return token, None
        return token, http

    async def _attempts(
        self,
        token: SessionToken,
        retry: RetryOptions,
        user_text: str | None,
        http: aiohttp.ClientSession | None = None,
    ) -> str:
        """The Web SDK's retry rule: only ``noScene`` is retried; ``max_retries`` counts all.

        :attr:`connection_result` is updated after every attempt, as the Web SDK's. The first
        attempt's connection takes ``http`` (and closes it); a retry opens its own.
        """
        errors: list[ConnectionError_] = []
        attempts: list[ConnectionAttempt] = []
        began = time.monotonic()
        while True:
            connection = self._new_connection(token, user_text, http)
            http = None
            started = time.monotonic()
            self._attempt = connection
            try:
                session_id = await connection.connect()
            except ConnectionError_ as error:
                errors.append(error)
                attempts.append(
                    ConnectionAttempt(started - began, time.monotonic() - started, error)
                )
                self.connection_result = ConnectionResult(
                    "failed", None, tuple(errors), tuple(attempts)
                )
                if not error.retryable or len(errors) >= retry.max_retries:
                    raise
                logger.debug(
                    "attempt %d: %s; retrying in %d ms", len(errors), error, retry.delay_ms
                )
                await asyncio.sleep(retry.delay_ms / 1000)
                continue
            finally:
                self._attempt = None
            attempts.append(ConnectionAttempt(started - began, time.monotonic() - started, None))
            self.connection_result = ConnectionResult(
                "success", session_id, tuple(errors), tuple(attempts)
            )
            self._connection = connection
            return session_id

    def _new_connection(
        self, token: SessionToken, user_text: str | None, http: aiohttp.ClientSession | None = None
    ) -> Connection:
        host = urlsplit(token.url).hostname or ""
        addresses = self._ice_addresses if self._ice_addresses is not None else loopback_for(host)
        return Connection(
            url=token.url,
            access_token=token.jwt,
            state=self.connection_state._state,
            media=self._media,
            ice_addresses=addresses,
            video_bounds=self._video_bounds,
            user_text=user_text,
            on_state=self.connection_state._changed,
            on_ended=self._on_session_ended,
            on_frame=self._on_frame,
            ssl=self._ssl,
            http=http,
        )

    def _start_session_media(self) -> None:
        """Start reading the persona's tracks for this session, and the loop-close guard."""
        connection = self._connection
        peer = connection.peer if connection is not None else None
        if peer is None:
            return  # the session ended already
        self._session_over = asyncio.Event()
        self._session_tasks = TaskOwner("session")
        # Connected means both persona tracks arrived (the client machine waits for them).
        if peer.video is not None:
            self._video = FramePump(peer.video, av.VideoFrame, VIDEO_BUFFER, self.video_counts)
            self._session_tasks.spawn(self._video.run(), "video")
        if peer.audio is not None:
            self._audio = FramePump(peer.audio, av.AudioFrame, AUDIO_BUFFER, self.audio_counts)
            self._session_tasks.spawn(self._audio.run(), "audio")
        self._session_tasks.spawn(self._guard(self._session_over), "guard")

    async def _end_session_media(self) -> None:
        """Stop the frame pumps (every stream ends) and the guard. Idempotent."""
        over, self._session_over = self._session_over, None
        if over is not None:
            over.set()
        tasks, self._session_tasks = self._session_tasks, None
        if tasks is not None:
            await tasks.close()
        for pump in (self._video, self._audio):
            if pump is not None:
                pump.end()

    async def _guard(self, over: asyncio.Event) -> None:
        """Release the session if the loop is closing (asyncio.run cancels every task) first."""
        try:
            await over.wait()
        except asyncio.CancelledError:
            if not over.is_set():
                await self._abandoned()
            raise

    async def _abandoned(self) -> None:
        """The loop is closing with this scene connected: warn once and release everything.

        The socket is closed without a ``close`` frame, so the server sees the connection lost
        (a persistent session stays resumable), as when a browser tab is killed.
        """
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"Unclosed {self!r}: it was still connected when its event loop closed; use "
                "'async with Scene(...)' or 'await scene.disconnect()'",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )
        connection, self._connection = self._connection, None
        try:
            async with asyncio.timeout(ABANDONED_RELEASE_S):
                await self._end_session_media()
                if connection is not None:
                    await connection.abandon()
                self._media.stop()
                await self._tasks.close()
        except TimeoutError:
            logger.warning(
                "session %s: not released within %g s of the loop closing",
                self.session_id,
                ABANDONED_RELEASE_S,
            )

    def _consented_devices(self) -> DeviceProvider:
        """The device provider, behind the consent gate when its devices are real."""
        if getattr(self._devices, "needs_consent", False):
            return ConsentedDevices(self._devices, self.consent, self._origin)
        return self._devices

    def _remember_session(self, *, resumed: bool) -> None:
        accepted = self._connection.accepted if self._connection is not None else None
        self._resumed = resumed
        self._supports_persistence = bool(accepted and accepted.resume_requested)
        if self._supports_persistence and accepted is not None and self._api_key is not None:
            server = accepted.server or ""
            self.session_store.save(self._api_key, StoredSession(server, accepted.session_id))

    def _forget_session(self) -> None:
        if self._api_key is not None:
            self.session_store.clear(self._api_key)

    async def send_request(
        self, name: str, body: dict[str, Any] | None = None, *, request_timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send a ``scene`` request (``conversationSend`` ...) and return its response's body.

        As the Web SDK's ``sendRequest``: a response with a non-zero status raises
        :class:`~dpkit.errors.SceneResponseError` (``request_name``, ``status``,
        ``response_body``), and a request without a session raises ``noSession``
        (:class:`~dpkit.errors.NoSession`). No answer within ``request_timeout`` seconds, or
        the session ending first, raises :class:`~dpkit.errors.RequestFailed`.
        """
        connection = self._connection
        if connection is None:
            raise NoSession(f"No session available: cannot send {name} (scene is not connected)")
        accepted = connection.accepted
        self._request_count += 1
        scene_id = accepted.scene_id if accepted and accepted.scene_id else "scene"
        transaction = f"{scene_id}_{self._request_count}"
        answered: asyncio.Future[SceneResponse] = asyncio.get_running_loop().create_future()
        self._requests[transaction] = answered
        try:
            await connection.send_scene_request(SceneRequest(name, transaction, body or {}))
            async with asyncio.timeout(request_timeout):
                response = await answered
        except TimeoutError:
            raise RequestFailed(f"no answer to {name} within {request_timeout:g} s") from None
        finally:
            self._requests.pop(transaction, None)
        if response.status != 0:
            raise SceneResponseError(name, response.status, response.body)
        return response.body

    def _mute_while_persona_speaks(self, frame: SceneEvent) -> None:
        """``microphoneMuteDelay``: mute the microphone while a persona speaks, and unmute it
        that many milliseconds after it stops (docs/protocol.md, section 7), as the Web SDK's
        ``controlMicrophoneMute``: each persona's ``speechState`` in turn, an unmute timer that
        a later ``speaking`` cancels and a later non-speaking state does not restart."""
        connection = self._connection
        established = connection.established if connection is not None else None
        if connection is None or connection.peer is None or established is None:
            return
        delay_ms = established.settings.microphone_mute_delay_ms
        personas = frame.body.get("persona")
        if delay_ms < 0 or not isinstance(personas, dict):
            return
        microphone = connection.peer.microphone
        for persona in personas.values():
            speech_state = persona.get("speechState") if isinstance(persona, dict) else None
            if not speech_state:
                continue
            if speech_state == "speaking":
                if not microphone.muted:
                    logger.debug("the persona is speaking: microphone muted")
                    self._set_microphone_muted(True)
                if self._unmute is not None:
                    self._unmute.cancel()
                    self._unmute = None
            elif microphone.muted and self._unmute is None:
                self._unmute = self._tasks.spawn(self._unmute_after(delay_ms), "unmute")

    def _set_microphone_muted(self, muted: bool) -> None:
        """Mute or unmute for the persona's speech; an open microphone reports the change."""
        connection = self._connection
        if connection is None or connection.peer is None:
            return
        microphone = connection.peer.microphone
        microphone.muted = muted
        if microphone.source is not None:
            # The Web SDK's setter notifies only with a live microphone track.
            self.on_microphone_active.call(not muted)

    async def _unmute_after(self, delay_ms: int) -> None:
        await asyncio.sleep(delay_ms / 1000)
        self._unmute = None
        logger.debug("the persona is no longer speaking: microphone unmuted")
        self._set_microphone_muted(False)

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, SceneEvent):
            self._on_scene_event(frame)
        elif isinstance(frame, UserText):
            self.on_user_text.call(self, frame.user_text)
        if isinstance(frame, SceneResponse):
            waiting = self._requests.get(frame.transaction)
            if waiting is not None and not waiting.done():
                waiting.set_result(frame)
        if isinstance(frame, DpkitEvent) and frame.name == "idleWarning":
            closes_in_ms = frame.body.get("closesInMs")
            if isinstance(closes_in_ms, int | float):
                self.on_idle_warning.call(self, closes_in_ms / 1000)
        self.on_message.call(frame)

    def _on_scene_event(self, frame: SceneEvent) -> None:
        """The Web SDK's ``onSceneMessage``, for the events the scene itself handles."""
        if frame.name == "state":
            self.on_state_event.call(self, frame.body)
            self.conversation.process_state_message(frame.body)
            self._mute_while_persona_speaks(frame)
        elif frame.name == "recognizeResults":
            results = parse_recognize_results(frame.body)
            self.conversation.process_recognize_results(results)
            self.on_recognize_results.call(
                self, results.status, results.error_message, results.results
            )

    async def keep_alive(self) -> None:
        """Tell the server the user is still there (``keepAlive``): restarts its idle timer.

        Does nothing when the scene is not connected, as the Web SDK's.
        """
        if self._connection is None:
            return
        await self._connection.send(KeepAlive())

    def _on_session_ended(self, session_id: str, reason: str) -> None:
        """The server (or the network) ended a connected session; or disconnect() did."""
        connection = self._connection
        self._connection = None
        unmute, self._unmute = self._unmute, None
        if unmute is not None:
            unmute.cancel()
        logger.info("session %s: disconnected (%s)", session_id, reason)
        if reason != CONNECTION_LOST:
            # The server ended it: nothing to resume. A cut socket keeps it resumable.
            self._forget_session()
        for waiting in self._requests.values():
            if not waiting.done():
                waiting.set_exception(RequestFailed(f"the session ended ({reason})"))
        if connection is not None:
            # Called from the connection's own reader: let another task close it.
            self._tasks.spawn(self._release(connection), "release")
        if self._hanging_up:
            return  # the app ended it: the Web SDK reports no disconnect then
        self.conversation.reset()
        self.on_disconnected_event.call(self, session_id, reason)

    async def _release(self, connection: Connection) -> None:
        await self._end_session_media()
        await connection.close()
        self._media.stop()

    async def disconnect(self) -> None:
        """End the session (``close {reason: "normal"}``); the state returns to Disconnected.

        Every stream from :meth:`video_frames` and :meth:`audio_frames` ends.
        """
        connection, self._connection = self._connection, None
        await self._end_session_media()
        if connection is not None:
            self._hanging_up = True
            try:
                await connection.disconnect()
            finally:
                self._hanging_up = False
            self._forget_session()
        self._media.stop()
        unmute, self._unmute = self._unmute, None
        if unmute is not None:
            unmute.cancel()  # the session is over: nothing to unmute
        # Let a release the server's ending started finish its cleanup rather than cut it short.
        await self._tasks.join()
        self._tasks = TaskOwner("scene")
        self.connection_state._reset()
        self.conversation.reset()

    async def close(self) -> None:
        """Disconnect if connected and release everything. Idempotent."""
        await self.disconnect()

    async def __aenter__(self) -> Scene:
        """The scene itself, not yet connected: call :meth:`connect` in the block."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _auth_server(api_key: str | None) -> str:
    """The token endpoint an API key names (its origin is the one consent is kept for)."""
    try:
        return decode_api_key(api_key).auth_server if api_key else ""
    except ConfigurationError:
        return ""


def _server_route(url: str, server: str) -> str:
    """``ws://host/session`` becomes ``ws://host/server/<server>`` (the resume route)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/server/{server}", parts.query, ""))
