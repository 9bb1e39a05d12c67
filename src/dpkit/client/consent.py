"""The user's consent to a server using their microphone and camera, remembered like a browser's.

A browser asks once per site and remembers the answer: a grant persists until the user resets
their permissions or revokes it, and a site refused too many times is blocked, so ``connect()``
fails at once without asking (docs: "Accessing the User's Camera and Microphone"). dpkit keeps the
same record per server origin and device in a :class:`ConsentStore`; the default,
:class:`FileConsentStore`, is ``permissions.json`` in the user's state directory, so a grant
outlives the process. :class:`ConsentGate` applies the rules and asks a :data:`PermissionPrompt`
only when a decision is still open. ``dpkit permissions`` lists, resets and revokes the records.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from dpkit.client.devices import DeviceError, DeviceFailure, DeviceProvider, UserMedia, probe
from dpkit.client.options import MediaDevices
from dpkit.client.persistence import default_state_dir
from dpkit.errors import ConfigurationError

PERMISSIONS_FILE = "permissions.json"
DEVICES = ("microphone", "camera")
DEFAULT_MAX_REFUSALS = 3


class Decision(enum.Enum):
    """What the user decided for one device of one origin."""

    GRANTED = "granted"
    DENIED = "denied"
    BLOCKED = "blocked"  # refused max_refusals times: never asked again until reset
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class Permission:
    """One origin's permission for one device; ``updated_at`` is a Unix time (0 if never set)."""

    origin: str
    device: str
    decision: Decision
    refusals: int = 0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        _check_device(self.device)
        if not self.origin:
            raise ConfigurationError("a permission needs an origin")
        if self.refusals < 0:
            raise ConfigurationError(f"refusals must not be negative: {self.refusals}")


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, so a path or trailing slash never splits a record."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        return url.strip()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme.lower()}://{host}{port}"


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise ConfigurationError(f"unknown device {device!r}: expected microphone or camera")


def _asked(devices: MediaDevices) -> list[str]:
    return [name for name in DEVICES if getattr(devices, name)]


def _devices(names: list[str]) -> MediaDevices:
    return MediaDevices(microphone="microphone" in names, camera="camera" in names)


class ConsentStore(Protocol):
    """Remembered decisions, one per (origin, device); absent means ``UNDECIDED``."""

    def get(self, origin: str, device: str) -> Permission: ...
    def set(self, permission: Permission) -> None: ...
    def list(self) -> list[Permission]: ...
    def reset(self, origin: str | None = None, device: str | None = None) -> int: ...
    def revoke(self, origin: str, device: str) -> None: ...  # blocks until reset


Records = dict[tuple[str, str], Permission]


class _RecordStore:
    """The store's rules over a load/save pair, so memory and file stores cannot disagree."""

    def _load(self) -> Records:
        raise NotImplementedError

    def _save(self, records: Records) -> None:
        raise NotImplementedError

    def get(self, origin: str, device: str) -> Permission:
        _check_device(device)
        origin = origin_of(origin)
        found = self._load().get((origin, device))
        return found or Permission(origin, device, Decision.UNDECIDED)

    def set(self, permission: Permission) -> None:
        permission = replace(permission, origin=origin_of(permission.origin))
        records = self._load()
        if permission.decision is Decision.UNDECIDED and permission.refusals == 0:
            records.pop((permission.origin, permission.device), None)
        else:
            records[(permission.origin, permission.device)] = permission
        self._save(records)

    def list(self) -> list[Permission]:
        return sorted(self._load().values(), key=lambda p: (p.origin, DEVICES.index(p.device)))

    def reset(self, origin: str | None = None, device: str | None = None) -> int:
        """Forget matching decisions (back to ``UNDECIDED``, no refusals); return how many."""
        if device is not None:
            _check_device(device)
        wanted = None if origin is None else origin_of(origin)
        records = self._load()
        matching = [
            key
            for key in records
            if (wanted is None or key[0] == wanted) and (device is None or key[1] == device)
        ]
        for key in matching:
            del records[key]
        if matching:
            self._save(records)
        return len(matching)

    def revoke(self, origin: str, device: str) -> None:
        """Withdraw access for good: ``BLOCKED``, so connect fails at once without asking.

        The seed: a user who explicitly revoked access is not prompted again; they must reset.
        """
        current = self.get(origin, device)
        if current.decision is Decision.BLOCKED:
            return
        self.set(replace(current, decision=Decision.BLOCKED, updated_at=time.time()))


class MemoryConsentStore(_RecordStore):
    """Decisions for the life of this object (tests, kiosks that must forget)."""

    def __init__(self) -> None:
        self._records: Records = {}

    def _load(self) -> Records:
        return dict(self._records)

    def _save(self, records: Records) -> None:
        self._records = dict(records)


class FileConsentStore(_RecordStore):
    """Decisions in one JSON file, ``permissions.json`` in the user's state directory.

    The file maps origin to device to ``{"decision", "refusals", "updatedAt"}``. An unreadable
    file reads as no decisions, as a browser with a damaged profile asks again.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_state_dir() / PERMISSIONS_FILE

    def _load(self) -> Records:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        records: Records = {}
        if not isinstance(data, dict):
            return records
        for origin, devices in data.items():
            if not isinstance(devices, dict):
                continue
            for device, entry in devices.items():
                permission = _parse(origin, device, entry)
                if permission is not None:
                    records[(permission.origin, permission.device)] = permission
        return records

    def _save(self, records: Records) -> None:
        data: dict[str, dict[str, dict[str, Any]]] = {}
        for permission in records.values():
            data.setdefault(permission.origin, {})[permission.device] = {
                "decision": permission.decision.value,
                "refusals": permission.refusals,
                "updatedAt": permission.updated_at,
            }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600 with a unique name, so the decisions are never readable
        # by others and two processes saving at once cannot write into each other's temp file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".permissions.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(data, file, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _parse(origin: object, device: object, entry: object) -> Permission | None:
    if not (isinstance(origin, str) and isinstance(device, str) and isinstance(entry, dict)):
        return None
    decision, refusals, updated_at = (
        entry.get("decision"),
        entry.get("refusals", 0),
        entry.get("updatedAt", 0.0),
    )
    if device not in DEVICES or not isinstance(refusals, int) or refusals < 0 or not origin:
        return None
    if not isinstance(updated_at, int | float):
        return None
    try:
        return Permission(origin, device, Decision(decision), refusals, float(updated_at))
    except ValueError:
        return None


#: Asks the user about the devices given for an origin; returns the subset they granted.
PermissionPrompt = Callable[[str, MediaDevices], Awaitable[MediaDevices]]


class ConsentGate:
    """Decides which requested devices an origin may use, asking the user only when it must."""

    def __init__(
        self,
        store: ConsentStore,
        prompt: PermissionPrompt | None,
        max_refusals: int = DEFAULT_MAX_REFUSALS,
    ) -> None:
        if max_refusals < 1:
            raise ConfigurationError(f"max_refusals must be at least 1: {max_refusals}")
        self.store = store
        self.prompt = prompt
        self.max_refusals = max_refusals

    async def request(self, origin: str, devices: MediaDevices) -> MediaDevices:
        """Return the subset of ``devices`` the user allows ``origin`` to use.

        Granted devices pass and blocked ones fail without a question; the rest are asked in
        one prompt. Without a prompt an open question is a decline that is neither counted
        nor remembered: nobody was asked, so nobody refused.
        """
        origin = origin_of(origin)
        granted: list[str] = []
        open_: list[Permission] = []
        for device in _asked(devices):
            current = self.store.get(origin, device)
            if current.decision is Decision.GRANTED:
                granted.append(device)
            elif current.decision is not Decision.BLOCKED:
                open_.append(current)
        if not open_ or self.prompt is None:
            return _devices(granted)
        answer = await self.prompt(origin, _devices([p.device for p in open_]))
        now = time.time()
        for current in open_:
            if getattr(answer, current.device):
                granted.append(current.device)
                # A grant ends the run of refusals, as a browser's embargo ends on an accept.
                self.store.set(
                    replace(current, decision=Decision.GRANTED, refusals=0, updated_at=now)
                )
            else:
                self.store.set(self._refused(current, now))
        return _devices(granted)

    def _refused(self, current: Permission, now: float) -> Permission:
        refusals = current.refusals + 1
        decision = Decision.BLOCKED if refusals >= self.max_refusals else Decision.DENIED
        return replace(current, decision=decision, refusals=refusals, updated_at=now)

    def blocked_error(self, origin: str, device: str) -> DeviceError:
        """The ``NOT_PERMITTED`` error for a blocked device, telling the user how to unblock it."""
        origin = origin_of(origin)
        current = self.store.get(origin, device)
        command = f"dpkit permissions reset --origin {shlex.quote(origin)}"
        if current.refusals >= self.max_refusals:
            why = f"blocked after {current.refusals} refusals"
        else:
            why = "blocked: access was revoked"
        return DeviceError(
            DeviceFailure.NOT_PERMITTED,
            f"{why} for {origin}: run '{command}'",
            advice=f"The {device} is {why} for {origin}, so nobody is asked any more: run "
            f"'{command} --device {device}', then connect again.",
        )

    def refused_error(self, origin: str, device: str) -> DeviceError:
        """The ``NOT_PERMITTED`` error for a device the user declined, or nobody could allow."""
        origin = origin_of(origin)
        current = self.store.get(origin, device)
        if current.decision is Decision.BLOCKED:
            return self.blocked_error(origin, device)
        if current.decision is Decision.UNDECIDED:
            return DeviceError(
                DeviceFailure.NOT_PERMITTED,
                f"{device} not allowed for {origin}: nobody could be asked (no terminal)",
                advice=f"Nobody was asked to allow the {device} for {origin}: run the program "
                "in a terminal to answer the prompt, pass Scene(consent=ConsentGate(store, "
                "prompt)) to ask another way, or pass devices=SyntheticDevices().",
            )
        return DeviceError(
            DeviceFailure.NOT_PERMITTED,
            f"{device} not allowed for {origin}",
            advice=f"The {device} was declined for {origin} ({current.refusals} of "
            f"{self.max_refusals} refusals before it is blocked): connect again and answer y "
            "to allow it.",
        )


def terminal_prompt(console_input: Callable[[str], str] = input) -> PermissionPrompt:
    """A prompt asking on the terminal, one ``[y/N]`` question per device; y or yes grants.

    ``console_input`` runs in a worker thread so the event loop keeps serving the connection
    while the user thinks. End of input (a closed stdin) answers no.
    """

    async def prompt(origin: str, devices: MediaDevices) -> MediaDevices:
        granted: list[str] = []
        for device in _asked(devices):
            question = f"Allow {origin} to use your {device}? [y/N] "
            try:
                answer = await asyncio.to_thread(console_input, question)
            except EOFError:
                answer = ""
            if answer.strip().lower() in ("y", "yes"):
                granted.append(device)
        return _devices(granted)

    return prompt


def default_prompt() -> PermissionPrompt | None:
    """:func:`terminal_prompt` when stdin is a terminal, else None.

    A script with no terminal cannot answer, and counting its silence as refusals would block
    the origin after three runs; None declines without remembering anything.
    """
    stdin = sys.stdin
    return terminal_prompt() if stdin is not None and stdin.isatty() else None


class ConsentedDevices:
    """A device provider that opens only what the user allowed this origin to use.

    One instance serves one connect (or one device change): a device the user refused during it
    is not asked about again by the browser's fallback order, as a browser would not re-prompt.
    """

    def __init__(self, provider: DeviceProvider, gate: ConsentGate, origin: str) -> None:
        self._provider = provider
        self._gate = gate
        self._origin = origin_of(origin)
        self._refused: set[str] = set()

    async def open(self, devices: MediaDevices) -> UserMedia:
        # As a browser does not ask about a camera the machine does not have: check first.
        await probe(self._provider, devices)
        asked = [device for device in _asked(devices) if device not in self._refused]
        refused = [device for device in _asked(devices) if device in self._refused]
        granted = await self._gate.request(self._origin, _devices(asked)) if asked else _devices([])
        refused += [device for device in asked if not getattr(granted, device)]
        if refused:
            self._refused.update(refused)
            raise self._gate.refused_error(self._origin, refused[0])
        return await self._provider.open(devices)
