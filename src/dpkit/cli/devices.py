"""``dpkit devices``: the microphones, cameras and speakers this machine can capture from."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from dpkit.cli.parsers import columns, command_parser, shown

if TYPE_CHECKING:
    from dpkit.media.devices_list import DeviceKind, DeviceList

HELP = "list the microphones, cameras and speakers dpkit can use on this machine"
DESCRIPTION = """\
List the devices the capture backends see: microphones and speakers through PortAudio, cameras
through V4L2 (/dev/video*) on Linux. The default of each kind is marked with '*'.

  dpkit devices
  dpkit devices --json

--json prints one document: {"microphones": [DEVICE, ...], "cameras": [...], "speakers": [...],
"problems": [TEXT, ...]}, each DEVICE {"kind", "name", "id", "backend", "default"}.

An ID is what the client takes to choose a device: a PortAudio index for a microphone, a path
for a camera. A backend that cannot list anything says why at the end (for example, "no
PortAudio: install libportaudio2").
"""

SECTIONS: tuple[tuple[DeviceKind, str], ...] = (
    ("microphone", "microphones"),
    ("camera", "cameras"),
    ("speaker", "speakers"),
)


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "devices", HELP, DESCRIPTION)
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of tables (see above)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dpkit.media.devices_list import list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps(as_json(devices), indent=2))
        return 0
    for kind, title in SECTIONS:
        found = devices.of_kind(kind)
        if not found:
            print(f"{title}: none")
            continue
        print(f"{title}:")
        rows = [("", "id", "backend", "name")]
        # The id first and whole: it is what the client takes to choose a device.
        rows += [
            ("*" if device.default else "", device.id, device.backend, device.name)
            for device in found
        ]
        for line in columns(rows):
            print(f"  {line}")
    for problem in devices.problems:
        print(f"problem: {shown(problem)}")
    return 0


def as_json(devices: DeviceList) -> dict[str, list[Any]]:
    """The device list as ``{"microphones": [...], "cameras": [...], ..., "problems": [...]}``."""
    result: dict[str, list[Any]] = {
        title: [asdict(device) for device in devices.of_kind(kind)] for kind, title in SECTIONS
    }
    result["problems"] = list(devices.problems)
    return result
