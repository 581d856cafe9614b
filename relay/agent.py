"""The node agent: keeps this relay node registered with the control plane (``--control``).

Every ``--heartbeat-interval`` seconds it POSTs ``{control}/v1/nodes/heartbeat`` with
``Authorization: Bearer <node secret>`` and a body of::

    {node_id, region, urls, allocations, packet_rate, cpu, draining, revocations_since}

``urls`` are the TURN/STUN URLs clients should use (:func:`relay.config.advertised_urls`);
``allocations``, ``packet_rate`` (packets relayed per second, both directions) and
``draining`` come from the workers' metric boards; ``cpu`` is the share of this node's cores
its processes used since the previous heartbeat (0..1). The answer is ``{now, revoked}``:
the control plane's clock and the token ids revoked since ``revocations_since``, which the
agent hands to ``deliver`` (each id once). ``revocations_since`` is the previous answer's
``now`` less two intervals (0 at first), so nothing is missed across a restart or an
outage; ids seen twice are delivered once, and applying one twice would be harmless anyway.

Before the first heartbeat the agent enrols: it POSTs ``{control}/v1/nodes/enrol`` with the
node secret and ``{node_id}`` and gets a credential of the node's own, which it keeps in
``node-credential`` in the spool directory (mode 0600) and sends instead of the node secret
from then on, so nobody else holding the node secret can take the node id over. A kept
credential is used as is; one the control plane no longer knows (revoked by the operator,
or another control plane) is dropped and the node enrols again. An id enrolled with another
credential (409) is logged with what to do; a control plane without enrolment (404) is
spoken to with the node secret, as before.

With ``collect`` (the node's quality summaries, relay/summaries.py), it also sends
per-allocation summaries every ``--summary-interval`` seconds to
``{control}/v1/nodes/summaries`` (docs/relay-summaries.md): each round it numbers what the
workers produced, appends it to the disk spool (:mod:`relay.spool`, fsync'd once per round)
and sends what is pending, oldest first, in batches; the control plane's ``accepted`` says
what may leave the spool. An outage only delays them; a batch the control plane refuses as
malformed is split until the one bad summary is found and dropped (counted), so one bad
record cannot block the rest forever.

Exactly one agent runs per node: on the single worker's own event loop with ``--workers 1``,
else in a thread of the supervisor (:class:`AgentThread`), which hands revocations to the
workers through the revocation log (:mod:`relay.revocations`).

The control plane being down, slow or wrong never stops the relay: the agent logs one
warning when heartbeats start failing (and again only if the reason changes), one line when
they work again, and retries with a back-off that starts at an eighth of the interval and
never exceeds it. When it stops, it sends a last heartbeat saying the node is draining, so
the control plane stops choosing it at once instead of after its heartbeat timeout.

HTTP is httpx's async client: keep-alive, timeouts, TLS verification and proxy settings
done right, instead of hand-written HTTP/1.1 on asyncio streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx

from ext import _fastpath
from relay import procstat
from relay.config import ENV_NODE_SECRET, RelayConfig, advertised_urls, default_workers
from relay.logs import ContextAdapter
from relay.metrics import NODE_EVENTS, Board
from relay.revocations import REVOCATION_MEMORY, ExpiringSet, valid_token_id
from relay.spool import Spool, SpoolError, default_dir
from relay.summaries import wire

log = logging.getLogger("clickacall.relay.agent")

HEARTBEAT_PATH: Final = "/v1/nodes/heartbeat"
ENROL_PATH: Final = "/v1/nodes/enrol"
CREDENTIAL_NAME: Final = "node-credential"  # in the spool directory, mode 0600
SUMMARIES_PATH: Final = "/v1/nodes/summaries"
GOODBYE_TIMEOUT: Final = 1.0  # seconds the last "draining" heartbeat may take when stopping
LAST_SUMMARIES_TIMEOUT: Final = 0.5  # seconds the last summaries may take when stopping
BATCH: Final = 500  # summaries per request (control/schemas.py MAX_SUMMARIES)
BATCHES_PER_ROUND: Final = 20  # catching up after an outage: at most this many per round
_T = TypeVar("_T")
_PACKET_COUNTERS: Final = tuple(
    _fastpath.COUNTER_NAMES.index(n) for n in ("client_packets", "peer_packets")
)


def node_name(config: RelayConfig) -> str:
    """``--node-id``, else the host name made safe for the control plane (letters, digits,
    '.', '_', '-'; at most 64). Give ``--node-id`` when one host runs several nodes."""
    if config.node_id:
        return config.node_id
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("._-")[:64]
    return name or "relay"


# ---------------------------------------------------------------------------------------
# Load: what the workers' boards and /proc say.


@dataclass(slots=True)
class Load:
    allocations: int
    packet_rate: float
    cpu: float
    draining: bool


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (this process: os.times), None if gone."""
    if pid == os.getpid():
        t = os.times()
        return t.user + t.system
    return procstat.cpu_seconds(pid)


@dataclass
class BoardLoad:
    """The node's load from the workers' boards, and CPU from the processes in ``pids``.

    Rates are over the time since the previous :meth:`read`; the first read gives 0.
    """

    boards: Sequence[Board]
    pids: Callable[[], Sequence[int]] = lambda: [os.getpid()]
    draining: Callable[[], bool] = lambda: False
    cores: int = field(default_factory=default_workers)
    clock: Callable[[], float] = time.monotonic
    _last: float | None = None
    _packets: dict[int, int] = field(default_factory=dict)  # board index -> packets
    _cpu: dict[int, float] = field(default_factory=dict)  # pid -> cpu seconds

    def read(self) -> Load:
        now = self.clock()
        elapsed = None if self._last is None else max(now - self._last, 1e-3)
        self._last = now
        allocations, packets, draining = 0, 0, self.draining()
        for i, board in enumerate(self.boards):
            head, counters, _ = board.read()
            allocations += head["allocations"]
            draining = draining or bool(head["draining"])
            total = sum(counters[c] for c in _PACKET_COUNTERS)
            before = self._packets.get(i, total)
            packets += total - before if total >= before else total  # a board reset
            self._packets[i] = total
        used = 0.0
        cpu: dict[int, float] = {}
        for pid in set(self.pids()):
            seconds = process_cpu_seconds(pid)
            if seconds is None:
                continue
            cpu[pid] = seconds
            # a process new since the last read (a restarted worker) counts from its start
            used += seconds - self._cpu.get(pid, 0.0 if self._cpu else seconds)
        self._cpu = cpu
        if elapsed is None:
            return Load(allocations, 0.0, 0.0, draining)
        share = max(0.0, min(1.0, used / (elapsed * max(1, self.cores))))
        return Load(allocations, packets / elapsed, share, draining)


# ---------------------------------------------------------------------------------------
# The agent.


class HeartbeatFailed(Exception):
    """One heartbeat did not work. ``kind`` is what the warn-once logic compares."""

    def __init__(self, kind: str, detail: str, *, retry_soon: bool) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retry_soon = retry_soon  # back off from a short delay (outage), else the interval


class NodeAgent:
    """Heartbeats for one node. ``load`` reads the node's figures, ``deliver`` applies new
    revocations (called on the agent's loop; it must not block for long)."""

    def __init__(
        self,
        config: RelayConfig,
        load: Callable[[], Load],
        deliver: Callable[[list[str]], object],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        wall: Callable[[], float] = time.time,
        collect: Callable[[], list[dict[str, Any]]] | None = None,
        spool: Path | None = None,
    ) -> None:
        if config.control is None or config.node_secret is None:
            raise ValueError("the node agent needs --control and a node secret")
        self.url = config.control + HEARTBEAT_PATH
        self.node_id = node_name(config)
        self.region = config.region
        self.urls = advertised_urls(config)
        self.interval = config.heartbeat_interval
        self.load = load
        self.deliver = deliver
        self.wall = wall
        self._secret = config.node_secret
        self._transport = transport
        self.control_now: float | None = None  # the control plane's clock at the last answer
        self.beats = 0  # successful heartbeats
        self.failures = 0  # failed heartbeats in a row
        self.problem: str | None = None  # kind of the current failure, None when healthy
        self.seen = ExpiringSet()  # token ids already delivered
        self._malformed_seen = False
        self.log = ContextAdapter(log, node=self.node_id)
        # summaries: ``collect`` gives the workers' raw summaries (relay/server.py)
        self.collect = collect
        self.summaries_url = config.control + SUMMARIES_PATH
        self.summary_interval = config.summary_interval
        self.spool_dir = spool or (
            Path(config.spool) if config.spool else default_dir(self.node_id)
        )
        self.spool: Spool | None = None
        # enrolment: the node's own credential, kept beside the spool
        self.enrol_url = config.control + ENROL_PATH
        self.credential_path = self.spool_dir / CREDENTIAL_NAME
        self.credential: str | None = None
        self.legacy = False  # the control plane predates enrolment: the node secret it is
        self.summary_problem: str | None = None  # kind of the current failure
        self.summary_failures = 0
        self.sent = 0  # summaries the control plane acknowledged
        self.unkeyed = 0  # summaries without a token id (static credentials): not sent
        self.rejected = 0  # summaries the control plane refused as malformed: dropped
        self._synced = False  # learned the control plane's highest seq for this node
        self._spool_lock = threading.Lock()  # spool calls run in threads, one at a time

    # -- one heartbeat ------------------------------------------------------------------

    def body(self, *, draining: bool = False) -> dict[str, Any]:
        load = self.load()
        since = 0.0
        if self.control_now is not None:
            since = max(0.0, self.control_now - 2 * self.interval)
        return {
            "node_id": self.node_id,
            "region": self.region,
            "urls": self.urls,
            "allocations": load.allocations,
            "packet_rate": round(load.packet_rate, 3),
            "cpu": round(load.cpu, 4),
            "draining": draining or load.draining,
            "revocations_since": since,
        }

    def _client(self) -> httpx.AsyncClient:
        timeout = httpx.Timeout(min(max(self.interval, 1.0), 10.0))
        return httpx.AsyncClient(
            timeout=timeout,
            transport=self._transport,
            headers={
                "Authorization": f"Bearer {self._secret}",
                "User-Agent": "clickacall-relay",
            },
        )

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
        return await _request(client, self.url, json=body)

    async def beat(self, client: httpx.AsyncClient) -> None:
        """One heartbeat; applies the revocations it brings. Raises HeartbeatFailed."""
        await self.ensure_credential(client)
        body = self.body()
        try:
            response = await self._post(client, body)
        except HeartbeatFailed as exc:
            if exc.kind != "HTTP 401" or self.credential is None:
                raise
            self.log.warning(
                "the control plane does not know this node's credential (revoked?): enrolling again"
            )
            await asyncio.to_thread(_remove, self.credential_path)
            self._use(client, None)
            await self.ensure_credential(client)
            response = await self._post(client, body)
        now, revoked, malformed = _parse(response)
        if malformed:
            level = logging.DEBUG if self._malformed_seen else logging.WARNING
            self._malformed_seen = True
            self.log.log(level, "ignored %d malformed revoked token id(s)", malformed)
        fresh = [t for t in revoked if t not in self.seen]
        if fresh:
            self.deliver(fresh)  # only then are they "seen": a failed delivery is retried
            until = self.wall() + REVOCATION_MEMORY
            for token_id in fresh:
                self.seen.add(token_id, until)
            self.log.debug("delivered %d revocation(s)", len(fresh))
        self.seen.forget(self.wall())
        self.control_now = now

    # -- enrolment ----------------------------------------------------------------------

    def _use(self, client: httpx.AsyncClient, credential: str | None) -> None:
        self.credential = credential
        client.headers["Authorization"] = f"Bearer {credential or self._secret}"

    async def ensure_credential(self, client: httpx.AsyncClient) -> None:
        """The node's own credential in use: the kept one, else a new one from enrolling.
        Raises HeartbeatFailed when enrolling does not work (the id is someone else's)."""
        if self.credential is not None or self.legacy:
            return
        try:
            kept = await asyncio.to_thread(load_credential, self.credential_path)
        except OSError as exc:
            raise HeartbeatFailed(
                "credential", f"cannot read {self.credential_path}: {exc}", retry_soon=False
            ) from None
        if kept is None:
            kept = await self._enrol(client)
            if kept is None:
                return
        self._use(client, kept)

    async def _enrol(self, client: httpx.AsyncClient) -> str | None:
        """A new credential for this node id (kept on disk), None if the control plane does
        not enrol nodes."""
        response = await _request(
            client,
            self.enrol_url,
            passing={201, 404, 405, 409},
            json={"node_id": self.node_id},
            headers={"Authorization": f"Bearer {self._secret}"},
        )
        if response.status_code in (404, 405):
            self.legacy = True
            self.log.info("the control plane does not enrol nodes: using the node secret")
            return None
        if response.status_code == 409:
            raise HeartbeatFailed(
                "enrolled",
                f"node id {self.node_id} is enrolled with another credential: restore "
                f"{self.credential_path}, or have the operator revoke it "
                f"(DELETE /v1/nodes/{self.node_id}/credential) so this node enrols again",
                retry_soon=False,
            )
        try:
            credential = response.json()["credential"]
        except (ValueError, KeyError, TypeError):
            credential = None
        if not isinstance(credential, str) or not _CREDENTIAL.fullmatch(credential):
            raise HeartbeatFailed(
                "bad answer", "the enrolment answer has no credential", retry_soon=False
            )
        try:
            await asyncio.to_thread(save_credential, self.credential_path, credential)
        except OSError as exc:
            self.log.error(
                "enrolled, but cannot keep the credential in %s (%s): after a restart the "
                "operator must revoke it for this node to enrol again",
                self.credential_path,
                exc,
            )
        else:
            self.log.info(
                "enrolled with the control plane", extra={"credential": str(self.credential_path)}
            )
        return credential

    # -- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Heartbeat until ``stop`` is set (or the task is cancelled), then say goodbye."""
        if stop is None:
            stop = asyncio.Event()
        async with self._client() as client:
            self.log.info(
                "node agent started: heartbeats to %s every %gs",
                self.url,
                self.interval,
                extra={"region": self.region, "urls": " ".join(self.urls)},
            )
            loop = asyncio.get_running_loop()
            stopped = asyncio.ensure_future(stop.wait())
            attempt: asyncio.Future[float] | None = None
            summaries = None
            if self.collect is not None and await self._open_spool():
                summaries = asyncio.ensure_future(self._summary_loop(client, stop))
            try:
                delay = 0.0
                while True:
                    done, _ = await asyncio.wait({stopped}, timeout=delay)
                    if done:
                        break
                    started = loop.time()
                    attempt = asyncio.ensure_future(self._attempt(client))
                    # a heartbeat in flight must not hold up a stop (a hung control plane)
                    await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    if not attempt.done():
                        break
                    delay = max(0.0, attempt.result() - (loop.time() - started))
            finally:
                stopped.cancel()
                if attempt is not None and not attempt.done():
                    attempt.cancel()
                    await asyncio.wait({attempt})
                if summaries is not None:
                    summaries.cancel()
                    await asyncio.wait({summaries})
            if self.spool is not None:
                await self._last_summaries(client)
            await self.goodbye(client)

    async def _attempt(self, client: httpx.AsyncClient) -> float:
        """One heartbeat with its logging; returns the delay before the next."""
        try:
            await self.beat(client)
        except HeartbeatFailed as exc:
            return self._failed(exc)
        except Exception as exc:  # a bug here must not take the relay down
            self.log.debug("heartbeat raised", exc_info=True)
            return self._failed(
                HeartbeatFailed("internal error", f"{type(exc).__name__}: {exc}", retry_soon=False)
            )
        if self.beats == 0:
            self.log.info("registered with the control plane", extra={"control": self.url})
        elif self.problem is not None:
            self.log.info(
                "control plane reachable again after %d failed heartbeat(s)", self.failures
            )
        self.beats += 1
        self.failures = 0
        self.problem = None
        return self.interval

    def _failed(self, exc: HeartbeatFailed) -> float:
        self.failures += 1
        if exc.kind != self.problem:
            self.log.warning(
                "control plane heartbeat failed: %s; the relay keeps serving and retries",
                exc.detail,
                extra={"control": self.url, "failures": self.failures},
            )
        else:
            self.log.debug("heartbeat failed again: %s", exc.detail)
        self.problem = exc.kind
        if not exc.retry_soon:
            return self.interval
        first = max(0.2, self.interval / 8)
        delay = min(self.interval, first * 2.0 ** min(self.failures - 1, 16))
        return delay * random.uniform(0.9, 1.0)

    # -- summaries ----------------------------------------------------------------------

    async def _spooled(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a spool call in a thread (fsync must not stall a worker's event loop), one
        at a time even if a cancelled round's call is still finishing."""
        spool_lock = self._spool_lock

        def call() -> _T:
            with spool_lock:
                return fn(*args)

        return await asyncio.to_thread(call)

    async def _open_spool(self) -> bool:
        try:
            self.spool = await asyncio.to_thread(Spool, self.spool_dir)
        except SpoolError as exc:
            self.log.error(
                "%s; quality summaries are not sent (give --spool DIR)",
                exc,
                extra={"spool": str(self.spool_dir)},
            )
            return False
        pending = len(self.spool)
        self.log.info(
            "summaries to %s every %gs, spooled in %s",
            self.summaries_url,
            self.summary_interval,
            self.spool_dir,
            extra={
                "pending": pending,
                "next_seq": self.spool.next_seq,
                "corrupt": self.spool.corrupt,
            },
        )
        if self.spool.corrupt:
            self.log.warning(
                "skipped %d damaged record(s) in the summary spool", self.spool.corrupt
            )
        return True

    async def _summary_loop(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        """Every interval: spool what the workers produced, then send what is pending."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.summary_interval)
                return
            except TimeoutError:
                pass
            try:
                await self._collect()
                if self.credential is not None or self.legacy:  # enrolled (heartbeats do it)
                    await self._deliver(client)
            except Exception:  # a bug here must not take the relay down
                self.log.exception("summary round failed")

    async def _collect(self) -> int:
        """Number the workers' new summaries and make them durable; returns how many."""
        assert self.collect is not None and self.spool is not None
        out = []
        for raw in self.collect():
            summary = wire(raw)
            if summary is None:
                self.unkeyed += 1
            else:
                out.append(summary)
        spool = self.spool

        def add() -> None:
            for summary in out:
                spool.append(summary)
            before = dict(spool.dropped)
            try:
                spool.flush()
            finally:
                dropped = {k: v - before[k] for k, v in spool.dropped.items() if v > before[k]}
                if dropped:
                    self.log.warning(
                        "summary spool full (%d records, %d bytes): dropped %s",
                        len(spool),
                        spool.size,
                        ", ".join(f"{n} {k}" for k, n in dropped.items()),
                    )

        try:
            await self._spooled(add)
        except OSError as exc:  # a full or failing disk: the records stay queued in memory
            NODE_EVENTS["spool.write_failed"] += 1  # the log was cut back to whole records
            self._summaries_failed("spool", f"cannot write the summary spool: {exc}")
        return len(out)

    async def _deliver(self, client: httpx.AsyncClient) -> int:
        """Send pending summaries, oldest first, until none is left, the round's share is
        used up or a request fails; returns how many the control plane acknowledged."""
        assert self.spool is not None
        before = self.sent
        try:
            if not self._synced:  # an empty batch answers with our highest stored seq
                await self._send(client, [])
                self._synced = True
            for _ in range(BATCHES_PER_ROUND):
                batch = await self._spooled(self.spool.pending, BATCH)
                if not batch:
                    break
                progress = (self.sent, self.rejected)
                await self._send(client, batch)
                if (self.sent, self.rejected) == progress:
                    break  # nothing acknowledged (the control plane is behind): next round
        except HeartbeatFailed as exc:
            self._summaries_failed(exc.kind, exc.detail)
            return self.sent - before
        delivered = self.sent - before
        if self.summary_problem is not None and delivered:
            self.log.info(
                "summaries delivered again after %d failed attempt(s): %d sent, %d pending",
                self.summary_failures,
                delivered,
                len(self.spool),
            )
            self.summary_problem = None
            self.summary_failures = 0
        return delivered

    async def _send(self, client: httpx.AsyncClient, batch: list[tuple[int, bytes]]) -> None:
        """POST one batch and acknowledge what the answer covers. A batch refused as
        malformed (400/413/422) is split in two and each half sent; a single refused
        summary is dropped and counted. Raises HeartbeatFailed for anything else."""
        assert self.spool is not None
        body = b'{"node_id":%s,"summaries":[%s]}' % (
            json.dumps(self.node_id).encode(),
            b",".join(b for _, b in batch),
        )
        response = await _request(
            client,
            self.summaries_url,
            passing=(_REFUSED | {200}) if batch else {200},
            content=body,
            headers={"Content-Type": "application/json"},
        )
        status = response.status_code
        if status in _REFUSED:
            if len(batch) > 1:
                half = len(batch) // 2
                await self._send(client, batch[:half])
                await self._send(client, batch[half:])
                return
            seq = batch[0][0]
            await self._spooled(self.spool.reject, seq)
            self.rejected += 1
            self.log.warning(
                "the control plane refused summary %d (HTTP %d: %s); dropped it",
                seq,
                status,
                _error_message(response),
            )
            return
        try:
            accepted = response.json()["accepted"]
        except (ValueError, KeyError, TypeError):
            accepted = None
        if not isinstance(accepted, int) or isinstance(accepted, bool) or accepted < 0:
            raise HeartbeatFailed("bad answer", "the answer is not {accepted: N}", retry_soon=False)
        spool = self.spool
        renumbered = spool.renumbered
        self.sent += await self._spooled(spool.ack, accepted)
        if spool.renumbered != renumbered:
            self.log.warning(
                "the control plane has summary seqs up to %d for this node, beyond this "
                "spool's; continuing from %d (a lost spool, or two nodes with one --node-id?)",
                accepted,
                spool.next_seq - len(spool),
            )

    def _summaries_failed(self, kind: str, detail: str) -> None:
        self.summary_failures += 1
        pending = len(self.spool) if self.spool is not None else 0
        if kind != self.summary_problem:
            self.log.warning(
                "quality summaries not delivered: %s; %d kept in the spool for later",
                detail,
                pending,
                extra={"control": self.summaries_url},
            )
        else:
            self.log.debug("summaries not delivered again: %s", detail)
        self.summary_problem = kind

    async def _last_summaries(self, client: httpx.AsyncClient) -> None:
        """When stopping: spool the final summaries of what just ended, try once (briefly)
        to send them, and close the spool; what is left goes after the next start."""
        assert self.spool is not None
        try:
            await self._collect()
            if self.summary_problem is None and self._synced:
                await asyncio.wait_for(self._deliver(client), LAST_SUMMARIES_TIMEOUT)
        except Exception:
            self.log.debug("last summaries not delivered", exc_info=True)
        spool = self.spool
        self.log.info(
            "summaries: %d delivered, %d left in the spool",
            self.sent,
            len(spool),
            extra={"unkeyed": self.unkeyed, "rejected": self.rejected, **spool.stats()},
        )
        await self._spooled(spool.close)
        self.spool = None

    async def goodbye(self, client: httpx.AsyncClient) -> None:
        """A last heartbeat saying the node is draining (best effort, bounded)."""
        if self.beats == 0 and self.problem is not None:
            return  # never registered and the control plane is not answering: skip
        try:
            body = self.body(draining=True)
            await asyncio.wait_for(client.post(self.url, json=body), GOODBYE_TIMEOUT)
        except Exception:
            self.log.debug("goodbye heartbeat failed", exc_info=True)
            return
        self.log.info("told the control plane this node is stopping")


_REFUSED: Final = frozenset({400, 413, 422})  # the control plane refused a summary batch
_CREDENTIAL: Final = re.compile(r"cn_[A-Za-z0-9_-]{16,128}")


def load_credential(path: Path) -> str | None:
    """The kept node credential (None if there is none); a file others may read is made
    owner-only first."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if os.fstat(fd).st_mode & 0o077:
            log.warning("%s was readable by others: made it owner-only (0600)", path)
            os.fchmod(fd, 0o600)
        text = f.read(4096).decode("ascii", "replace").strip()
    if not _CREDENTIAL.fullmatch(text):
        log.warning("%s does not hold a node credential: enrolling again", path)
        return None
    return text


def save_credential(path: Path, credential: str) -> None:
    """Keep ``credential`` in ``path`` (mode 0600, its directory 0700), durably and whole."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, credential.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


async def _request(
    client: httpx.AsyncClient, url: str, *, passing: Collection[int] = (200,), **kw: Any
) -> httpx.Response:
    """POST to the control plane; HeartbeatFailed unless the answer's status is one of
    ``passing`` (timeouts, unreachable and 5xx are worth a quick retry, the rest are not)."""
    try:
        response = await client.post(url, **kw)
    except httpx.TimeoutException:
        raise HeartbeatFailed("timeout", "no answer in time", retry_soon=True) from None
    except httpx.HTTPError as exc:
        detail = str(exc) or type(exc).__name__
        raise HeartbeatFailed("unreachable", detail, retry_soon=True) from None
    status = response.status_code
    if status not in passing:
        detail = f"HTTP {status}: {_error_message(response)}"
        if status in (401, 403):
            detail += f" (is the node secret the control plane's {ENV_NODE_SECRET}?)"
        raise HeartbeatFailed(f"HTTP {status}", detail, retry_soon=status >= 500)
    return response


def _error_message(response: httpx.Response) -> str:
    """The control plane's ``{"error": {"message"}}``, else the start of the body."""
    try:
        message = response.json()["error"]["message"]
        if isinstance(message, str):
            return message[:200]
    except (ValueError, KeyError, TypeError):
        pass
    return response.text[:200].strip() or response.reason_phrase


def _parse(response: httpx.Response) -> tuple[float, list[str], int]:
    """``(now, revoked, malformed ids left out)`` from a heartbeat answer; HeartbeatFailed
    if it is not one."""
    try:
        data = response.json()
    except ValueError:
        raise HeartbeatFailed("bad answer", "the answer is not JSON", retry_soon=False) from None
    now = data.get("now") if isinstance(data, dict) else None
    revoked = data.get("revoked") if isinstance(data, dict) else None
    if (
        not isinstance(now, int | float)
        or isinstance(now, bool)
        or not math.isfinite(now)
        or not isinstance(revoked, list)
    ):
        raise HeartbeatFailed(
            "bad answer", "the answer is not {now, revoked: [...]}", retry_soon=False
        )
    ids = [t for t in revoked if valid_token_id(t)]
    return float(now), ids, len(revoked) - len(ids)


# ---------------------------------------------------------------------------------------
# Running the agent beside a synchronous supervisor.


class AgentThread:
    """Runs a :class:`NodeAgent` on its own event loop in a daemon thread."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="node-agent", daemon=True)

    def start(self) -> AgentThread:
        self._thread.start()
        self._started.wait(5)
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._amain())
        except Exception:  # pragma: no cover - run() catches what a heartbeat raises
            log.exception("node agent stopped unexpectedly; the relay keeps serving")

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        await self.agent.run(self._stop)

    def stop(self, timeout: float = GOODBYE_TIMEOUT + 2) -> None:
        """Ask the agent to say goodbye and stop; wait at most ``timeout`` seconds."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop has already finished
                pass
        self._thread.join(timeout)
