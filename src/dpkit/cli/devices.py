"""``dpkit devices``: the microphones, cameras and speakers this machine can capture from."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dpkit.cli.parsers import command_parser
from dpkit.media.devices_list import DeviceKind, DeviceList, list_devices

HELP = "list the microphones, cameras and speakers dpkit can use on this machine"
DESCRIPTION = """\
List the devices the capture backends see: microphones and speakers through PortAudio, cameras
through V4L2 (/dev/video*) on Linux. The default of each kind is marked with '*'.

  dpkit devices
  dpkit devices --json

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
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    devices = list_devices()
    if args.json:
        print(json.dumps(as_json(devices), indent=2))
        return 0
    console = Console()
    for kind, title in SECTIONS:
        found = devices.of_kind(kind)
        if not found:
            console.print(f"[bold]{title}[/bold]: none")
            continue
        table = Table(title=title, title_justify="left")
        for column in ("", "name", "id", "backend"):
            table.add_column(column, overflow="fold")
        for device in found:
            table.add_row("*" if device.default else "", device.name, device.id, device.backend)
        console.print(table)
    for problem in devices.problems:
        console.print(f"[yellow]problem[/yellow]: {escape(problem)}")
    return 0


def as_json(devices: DeviceList) -> dict[str, list[Any]]:
    """The device list as ``{"microphones": [...], "cameras": [...], ..., "problems": [...]}``."""
    result: dict[str, list[Any]] = {
        title: [asdict(device) for device in devices.of_kind(kind)] for kind, title in SECTIONS
    }
    result["problems"] = list(devices.problems)
    return result
