"""Connection state data: the protocol page's table, change-only setter, the Web SDK's JSON."""

from __future__ import annotations

import pytest

from dpkit.protocol.states import (
    TOTAL_STEPS,
    ConnectionState,
    ConnectionStateData,
    ConnectionStateName,
)

N = ConnectionStateName

# The table of docs/protocol.md section 5: name, step, percentage.
TABLE: list[tuple[ConnectionStateName, str, int, float]] = [
    (N.DISCONNECTED, "Disconnected", 0, 0.0),
    (N.SEARCHING_FOR_DIGITAL_PERSON, "SearchingForDigitalPerson", 1, 25.0),
    (N.DOWNLOADING_ASSETS, "DownloadingAssets", 2, 50.0),
    (N.CONNECTING_TO_DIGITAL_PERSON, "ConnectingToDigitalPerson", 3, 75.0),
    (N.CONNECTED, "Connected", 4, 100.0),
]


def test_five_states_in_order() -> None:
    """There are exactly five states, in the order a connect passes through them."""
    assert list(ConnectionStateName) == [row[0] for row in TABLE]
    assert TOTAL_STEPS == 5


@pytest.mark.parametrize(("name", "wire", "step", "percentage"), TABLE)
def test_state_data_matches_table(
    name: ConnectionStateName, wire: str, step: int, percentage: float
) -> None:
    """Each state's data has the table's step and percentage, and 5 total steps."""
    data = ConnectionStateData.of(name)
    assert data == ConnectionStateData(name, step, 5, percentage)
    assert name.value == wire
    assert name.step == step


@pytest.mark.parametrize(("name", "wire", "step", "percentage"), TABLE)
def test_to_json_uses_web_sdk_names(
    name: ConnectionStateName, wire: str, step: int, percentage: float
) -> None:
    """to_json gives the Web SDK's camelCase fields with the state's wire name."""
    assert ConnectionStateData.of(name).to_json() == {
        "name": wire,
        "currentStep": step,
        "totalSteps": 5,
        "percentageLoaded": percentage,
    }


def test_starts_disconnected() -> None:
    """A new ConnectionState is Disconnected at step 0."""
    state = ConnectionState()
    assert state.name is N.DISCONNECTED
    assert state.data == ConnectionStateData.of(N.DISCONNECTED)


@pytest.mark.parametrize("start", list(ConnectionStateName))
@pytest.mark.parametrize("target", list(ConnectionStateName))
def test_set_reports_only_changes(start: ConnectionStateName, target: ConnectionStateName) -> None:
    """set() returns the new data when the state changes and None when it stays."""
    state = ConnectionState()
    state.set(start)
    result = state.set(target)
    if start is target:
        assert result is None
    else:
        assert result == ConnectionStateData.of(target)
    assert state.data == ConnectionStateData.of(target)
    assert state.name is target


def test_set_history_fires_once_per_change() -> None:
    """Setting a sequence with repeats records each change once, in order."""
    state = ConnectionState()
    sequence = [
        N.SEARCHING_FOR_DIGITAL_PERSON,
        N.SEARCHING_FOR_DIGITAL_PERSON,
        N.DOWNLOADING_ASSETS,
        N.DOWNLOADING_ASSETS,
        N.CONNECTING_TO_DIGITAL_PERSON,
        N.CONNECTED,
        N.CONNECTED,
    ]
    history = [data for name in sequence if (data := state.set(name)) is not None]
    assert [data.name for data in history] == [
        N.SEARCHING_FOR_DIGITAL_PERSON,
        N.DOWNLOADING_ASSETS,
        N.CONNECTING_TO_DIGITAL_PERSON,
        N.CONNECTED,
    ]


@pytest.mark.parametrize("start", list(ConnectionStateName))
def test_reset(start: ConnectionStateName) -> None:
    """reset() goes back to Disconnected, reporting the change only if there was one."""
    state = ConnectionState()
    state.set(start)
    result = state.reset()
    expected = None if start is N.DISCONNECTED else ConnectionStateData.of(N.DISCONNECTED)
    assert result == expected
    assert state.name is N.DISCONNECTED
    assert state.reset() is None


def test_state_data_is_frozen() -> None:
    """ConnectionStateData cannot be changed after it is made."""
    data = ConnectionStateData.of(N.CONNECTED)
    with pytest.raises(AttributeError):
        data.current_step = 1  # type: ignore[misc]
