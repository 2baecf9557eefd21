"""Bound actions (``POST .../salesInvoices({id})/Microsoft.NAV.post``, bc-api.md §5.5).

Routing has checked that the entity set has the action; what each action does is
`bcbridge.emulator.lifecycle.ACTIONS`.
"""

from __future__ import annotations

from bcbridge.emulator import lifecycle
from bcbridge.emulator.calls import Call, Result
from bcbridge.emulator.errors import not_emulated
from bcbridge.emulator.handlers.places import Address
from bcbridge.emulator.records import Records


def run_action(records: Records, call: Call, at: Address) -> Result:
    assert at.key is not None and at.action is not None, at
    place = at.place
    row = records.get(place, at.key)
    handler = lifecycle.ACTIONS.get((place.name, at.action))
    if handler is None:
        raise not_emulated(f"The bound action '{at.action}' on '{place.name}' is not emulated.")
    handler(records, place, row)
    return Result(204)
