"""What ``import dpkit`` offers: every exception the API raises, and nothing of the server's."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import pkgutil
import sys
from types import ModuleType

import dpkit
import dpkit.client
import dpkit.media
from tests.support import UNIT

#: Modules whose exceptions reach a client API user: the error tree, the client, its media, and
#: the helpers they raise from.
CLIENT_MODULES = ["dpkit.errors", "dpkit.apikey", "dpkit.extras", "dpkit.tasks", "dpkit.rtc"]


def client_modules() -> list[ModuleType]:
    names = list(CLIENT_MODULES)
    for package in (dpkit.client, dpkit.media):
        names += [
            info.name for info in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
        ]
    return [importlib.import_module(name) for name in names]


def test_every_exception_the_client_can_raise_is_exported_from_dpkit() -> None:
    """Each exception class defined in the error tree, the client or its media modules can be
    imported from dpkit itself, as the very same class, and is listed in __all__."""
    defined = {
        (module.__name__, name): value
        for module in client_modules()
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
    }
    assert ("dpkit.client.devices", "DeviceError") in defined  # the walk does find them
    missing = [
        f"{module}.{name}"
        for (module, name), value in defined.items()
        if getattr(dpkit, name, None) is not value or name not in dpkit.__all__
    ]
    assert missing == []


def test_every_name_in_all_resolves() -> None:
    """Everything __all__ promises can be got from dpkit (the lazy names included)."""
    assert [name for name in dpkit.__all__ if not hasattr(dpkit, name)] == []
    assert sorted(dir(dpkit)) == sorted(dpkit.__all__)


async def test_the_client_loads_neither_the_server_nor_numpy() -> None:
    """``from dpkit import Scene`` (and the client's media modules) import nothing of
    dpkit.server, and not numpy, which only the synthetic devices and level meters need."""
    script = (
        "import json, sys\n"
        "from dpkit import Scene, SystemDevices, MediaFileDevices\n"
        "import dpkit.client, dpkit.media.capture, dpkit.media.files, dpkit.media.devices_list\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('dpkit.server') "
        "or m == 'numpy')))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60 * UNIT):
        out, _ = await process.communicate()
    assert process.returncode == 0
    assert json.loads(out) == []


async def test_each_client_module_can_be_imported_first() -> None:
    """Whichever client or media module a program imports first, it loads (no import cycle
    between the Scene and the capture module it defaults to)."""
    names = [module.__name__ for module in client_modules()] + ["dpkit.client"]
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'dpkit' or m.startswith('dpkit.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *names,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60 * UNIT):
        out, err = await process.communicate()
    assert (process.returncode, out.decode().strip()) == (0, "ok"), err.decode()
