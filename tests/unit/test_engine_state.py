"""The engine state machine: one table of allowed moves, the original API's four status values, and the
diagram the architecture doc draws of the table."""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path

import pytest

from router.engine_state import LEGACY_STATUS, TRANSITIONS, IllegalTransition, State, StateMachine
from tests.unit.fakes import no_illegal_transitions  # noqa: F401 (an autouse fixture)


@pytest.mark.parametrize("source, target", list(itertools.product(State, State)))
def test_every_transition_is_in_the_table_or_refused(source, target, caplog):
    async def scenario():
        machine = StateMachine("llamacpp")
        machine.state = source
        if target is source:
            assert machine.move(target, "no change") is False
        elif target in TRANSITIONS[source]:
            assert machine.move(target, "test") is True and machine.state is target
        else:
            with pytest.raises(IllegalTransition):
                machine.move(target, "test")
            assert machine.state is source
            caplog.clear()  # refused as it should be: not a finding for the no_illegal_transitions check
    asyncio.run(scenario())


def test_the_state_diagram_in_the_architecture_doc_is_the_transition_table():
    """docs/ARCHITECTURE.md draws the table as a Mermaid diagram: every arrow is an allowed move, and every
    allowed move is drawn."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md").read_text()
    diagram = doc.split("stateDiagram-v2", 1)[1].split("```", 1)[0]
    drawn = set(re.findall(r"^\s*([a-z]+) --> ([a-z]+)", diagram, re.M))
    allowed = {(source.value, target.value) for source, targets in TRANSITIONS.items() for target in targets}
    assert drawn == allowed, f"drawn, not allowed: {drawn - allowed}; allowed, not drawn: {allowed - drawn}"


def test_status_keeps_the_original_four_values():
    assert set(LEGACY_STATUS) == set(State)
    assert set(LEGACY_STATUS.values()) == {"idle", "loading", "loaded", "error"}
