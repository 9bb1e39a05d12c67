"""The session protocol with no I/O: frames, connection state and both sides' session machines.

Standard library only (a test enforces it): the same core drives dpkit's server and its client,
so the two cannot disagree about the protocol.
"""

from dpkit.protocol.client import ClientInput, ClientPhase, ClientSession
from dpkit.protocol.messages import Frame, parse_frame, serialize_frame
from dpkit.protocol.server import ServerInput, ServerPhase, ServerSession
from dpkit.protocol.states import ConnectionState, ConnectionStateData, ConnectionStateName

__all__ = [
    "ClientInput",
    "ClientPhase",
    "ClientSession",
    "ConnectionState",
    "ConnectionStateData",
    "ConnectionStateName",
    "Frame",
    "ServerInput",
    "ServerPhase",
    "ServerSession",
    "parse_frame",
    "serialize_frame",
]
