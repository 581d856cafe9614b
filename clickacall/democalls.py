"""Made-up calls for the demo business of ``clickacall up``, so that on a first run the
dashboard's call log and analytics have something to show.

:func:`seed` writes a few days of calls (answered and ended, missed, declined, a visitor who
left while it rang) spread over the given links and the members who answer them, through the
store's own interface, as the call lifecycle and the relays' summaries would leave them: the
call with its times, outcome and answering member, the declines, and for answered calls one
quality record per party (packets, bytes, loss, jitter and MOS per direction, the media
streams), folded into the call's figures by the store.

They are marked as demo calls where a person looks: the relay node is :data:`DEMO_NODE`
("demo": no relay carried them) and the end reason ends in :data:`DEMO_MARK`. They carry no
visitor reference, key or address (the prefix is from the documentation range 192.0.2.0/24).
The random numbers come from ``random.Random(seed)``, so a test gets the same calls each time.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from control import calls as machine
from control.accounts import new_call_ref
from control.models import Call, CallStatus, Link, Media, Role, Staff
from control.quality import DAY, AllocationQuality, Flow
from control.store import Conflict, Store

DEMO_NODE = "demo"  # the relay node named on demo calls: none carried them
DEMO_MARK = " (demo call)"  # appended to every demo call's end reason
DEFAULT_DAYS = 14
REGION = "eu"
BROWSERS = (("Chrome", "Windows"), ("Safari", "iOS"), ("Chrome", "Android"), ("Firefox", "Linux"))
# kilobits per second one direction carries, by media
RATES = {Media.VOICE: 40, Media.VIDEO: 900}
PACKETS_PER_SECOND = {Media.VOICE: 50, Media.VIDEO: 140}


@dataclass(frozen=True, slots=True)
class Team:
    """Who answers which link: the demo calls on a link are answered by its members."""

    link: Link
    members: list[Staff]


def _flow(rng: random.Random, media: Media, seconds: float, poor: bool) -> Flow:
    packets = int(seconds * PACKETS_PER_SECOND[media])
    loss = rng.uniform(2.0, 6.0) if poor else rng.uniform(0.0, 0.6)
    return Flow(
        packets=packets,
        bytes=int(seconds * RATES[media] * 1000 / 8),
        lost=int(packets * loss / 100),
        jitter_ms=round(rng.uniform(25.0, 60.0) if poor else rng.uniform(2.0, 12.0), 1),
        mos=round(rng.uniform(2.6, 3.4) if poor else rng.uniform(3.9, 4.4), 2),
    )


def _streams(media: Media, to_peer: Flow) -> list[dict[str, object]]:
    kinds = ["audio", "video"] if media is Media.VIDEO else ["audio"]
    return [
        {
            "direction": "to_peer",
            "ssrc": 1000 + i,
            "kind": kind,
            "clock_rate": 48000 if kind == "audio" else 90000,
            "packets": to_peer.packets // len(kinds),
            "bytes": to_peer.bytes // len(kinds),
            "lost": to_peer.lost // len(kinds),
            "jitter_ms": to_peer.jitter_ms,
        }
        for i, kind in enumerate(kinds)
    ]


def _outcome(rng: random.Random) -> CallStatus:
    return rng.choices(
        [CallStatus.ENDED, CallStatus.MISSED, CallStatus.REJECTED, CallStatus.ABANDONED],
        weights=[66, 18, 10, 6],
    )[0]


def _plan(rng: random.Random, teams: list[Team], start: float, now: float) -> list[Call]:
    """The calls (not yet stored) of one day from ``start``, none after ``now``."""
    out: list[Call] = []
    weekday = int(start // DAY + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    count = rng.randint(4, 9) if weekday < 5 else rng.randint(1, 3)
    for _ in range(count):
        team = rng.choice(teams)
        created = start + rng.uniform(8 * 3600, 18 * 3600)  # business hours, UTC
        if created > now - 3600:  # today: only what is over by now
            continue
        media = rng.choice(team.link.media or [Media.VOICE])
        media = media if media in (Media.VIDEO, Media.VOICE) else Media.VOICE
        browser, os = rng.choice(BROWSERS)
        call = Call(
            id=uuid.uuid4().hex,
            tenant_id=team.link.tenant_id,
            link_id=team.link.id,
            created_at=created,
            relay_node=DEMO_NODE,
            relay_region=REGION,
            visitor_prefix="192.0.2.0/24",
            visitor_browser=browser,
            visitor_os=os,
            call_ref=new_call_ref(),
            media=media,
            visitor_check={"verdict": "ok", "transports": {"udp": "ok"}, "ms": 240},
            rung=[m.id for m in team.members],
        )
        status = _outcome(rng) if team.members else CallStatus.MISSED
        if status is CallStatus.ENDED:
            answered = created + rng.uniform(4, 25)
            seconds = min(45 * 60.0, rng.lognormvariate(5.6, 0.8))  # ~4.5 min, a few long
            reason = rng.choice([machine.HUNG_UP_BY_VISITOR, machine.HUNG_UP_BY_STAFF])
            call.answered_at, call.ended_at = answered, answered + seconds
            call.answered_by = rng.choice(team.members).id
        elif status is CallStatus.MISSED:
            call.ended_at, reason = created + team.link.ring_timeout, machine.NO_ANSWER
        elif status is CallStatus.REJECTED:
            call.ended_at, reason = created + rng.uniform(3, 15), machine.ALL_DECLINED
        else:
            call.ended_at, reason = created + rng.uniform(5, 30), machine.VISITOR_LEFT
        call.status, call.end_reason = status, reason + DEMO_MARK
        out.append(call)
    return out


async def _store_call(store: Store, rng: random.Random, team: Team, call: Call) -> None:
    for _ in range(3):  # a call reference clash (40 bits) draws again
        try:
            await store.create_call(call)
            break
        except Conflict:
            call.call_ref = new_call_ref()
    if call.status is CallStatus.REJECTED:
        assert call.ended_at is not None
        for member in team.members:
            await store.decline_call(call.tenant_id, call.id, member.id, call.ended_at)
    if call.answered_at is None or call.ended_at is None or call.media is None:
        return
    seconds = call.ended_at - call.answered_at
    poor = rng.random() < 0.12  # now and then a bad line, so "quality below" finds some
    for role in (Role.VISITOR, Role.STAFF):
        to_peer = _flow(rng, call.media, seconds, poor)
        await store.save_quality(
            AllocationQuality(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=DEMO_NODE,
                allocation=f"demo-{role}",
                token_id=f"demo-{uuid.uuid4().hex}",
                role=role,
                seq=1,
                started_at=call.answered_at - 2,
                at=call.ended_at,
                final=True,
                to_peer=to_peer,
                to_client=_flow(rng, call.media, seconds, poor),
                streams=_streams(call.media, to_peer),
            )
        )
    await store.refresh_call_stats(call.tenant_id, call.id, call.ended_at)


async def seed(
    store: Store, teams: list[Team], now: float, days: int = DEFAULT_DAYS, seed: int | None = None
) -> int:
    """Write ``days`` days of demo calls, up to ``now``, on the teams' links; how many."""
    rng = random.Random(seed)
    first = (now // DAY - (days - 1)) * DAY
    n = 0
    for day in range(days):
        for call in _plan(rng, teams, first + day * DAY, now):
            team = next(t for t in teams if t.link.id == call.link_id)
            await _store_call(store, rng, team, call)
            n += 1
    return n
