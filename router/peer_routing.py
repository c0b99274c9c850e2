"""Which side answers a request for a model: this router's engines or a peer (router/peers.py).

- `peer/model` always goes to that peer (503 at once while it is down).
- A model only peers list goes to the one that lists it; listed by several, to the one where it is resident with
  the fewest requests in flight and waiting (none resident: name one as `peer/model`).
- A model served here and listed by peers (spillover): where it is resident, the side with the fewest requests in
  flight and waiting, this router first on a tie; a peer set to `prefer: local` gets requests only while this
  side has spill_after of them or more. Resident nowhere: here (loaded on demand as usual).
- Anything else is this router's, exactly as without peers. A request a peer forwarded here is never forwarded
  again (HOP_HEADER): two routers that list each other cannot bounce it.
A peer's figures come from its /v1/status, at most a second old, and never count fewer requests than this router
has sent it and not yet seen answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.config import Config
from router.engine_state import State
from router.errors import InvalidRequest
from router.models import catalog_lookup, names_of
from router.peers import Peer, Peers

if TYPE_CHECKING:
    from router.engine_group import EngineGroup


@dataclass(frozen=True)
class Side:
    """One place that can answer: this router (`peer` None) or a peer, with the model's name there."""
    peer: Peer | None
    model: str
    resident: bool
    load: int  # requests in flight and waiting for it there


def choose(local: Side | None, remote: list[Side]) -> Side:
    """The side that answers, by the rules in the module's docstring."""
    if local is not None and local.resident:
        remote = [s for s in remote if not (s.peer.settings.prefer == "local"
                                            and local.load < s.peer.settings.spill_after)]
    sides = ([local] if local is not None else []) + remote
    resident = [s for s in sides if s.resident]
    if resident:
        return min(resident, key=lambda s: s.load)  # the first of equals: this router, then the peers in order
    if local is not None:
        return local
    if len(remote) == 1:
        return remote[0]
    names = ", ".join(f"{s.peer.name}/{s.model}" for s in remote)
    raise InvalidRequest(f"{remote[0].model!r} is listed by several peers and resident on none; name one: {names}",
                         param="model", code="model_ambiguous")


def local_side(engines: dict[str, "EngineGroup"], config: Config, requested: str, engine: str | None
               ) -> Side | None:
    """This router as a side for `requested`, when one of its engines serves or lists it."""
    groups = [g for name, g in engines.items() if engine in (None, name)]
    for group in groups:
        for instance in group.instances:
            if instance.state in (State.LOADED, State.LOADING) and any(
                    requested in names_of(spec, config) for spec in instance.known_specs()):
                return Side(None, requested, True, instance.in_flight + instance.waiting)
    found = catalog_lookup(config, requested)
    if found and found[1].engine in {g.name for g in groups}:
        return Side(None, requested, False, 0)
    return None


async def peer_for(peers: Peers, engines: dict[str, "EngineGroup"], config: Config, requested: str | None,
                   engine: str | None) -> tuple[Peer, str] | None:
    """The peer that answers a request for `requested` (and the model's name there), or None: this router."""
    if not requested or not peers.peers:
        return None
    if explicit := peers.explicit(requested):
        return explicit
    listed = [(p, m) for p, m in peers.listing(requested) if engine is None or p.models[m].engine in (None, engine)]
    if not listed:
        return None
    local = local_side(engines, config, requested, engine)
    up = [(p, m) for p, m in listed if not p.health.refuses]
    if not up:
        return None if local is not None else listed[0]  # a peer that is down refuses it at once
    remote = []
    for peer, model in up:
        if local is not None or len(up) > 1:  # a choice to make: its figures, at most a second old
            await peer.figures()
        remote.append(Side(peer, model, *peer.load_of(model)))
    chosen = choose(local, remote)
    return None if chosen.peer is None else (chosen.peer, chosen.model)
