"""The webhook delivery worker: an asyncio task of the control plane that sends what
:func:`control.webhooks.enqueue` queued in the store.

Each round it reads the deliveries due (oldest first), takes each with a lease
(:meth:`Store.claim_delivery`, so two processes never send one at once) and POSTs it, at most
``--webhook-concurrency`` at a time, each attempt bounded by ``--webhook-timeout`` all told:

- the endpoint's host is resolved at every attempt and each address checked against the deny
  list (:class:`control.webhooks.HookPolicy`); the request goes to the checked address (the
  name still in ``Host`` and in TLS's SNI and certificate check), so a name re-pointed at an
  internal address in between is refused, not called;
- headers ``Clickacall-Webhook-Id`` (the idempotency id), ``-Timestamp`` and ``-Signature``
  (docs/webhooks.md); no redirect is followed; at most :data:`BODY_PEEK` bytes of the answer
  are read; keep-alive is off (each attempt its own, freshly checked, connection);
- a 2xx is delivered; anything else (status, refused address, timeout, network error) is
  tried again with exponential backoff and jitter until the retry window from queueing has
  passed, then the delivery is failed. "Send again" puts it back with the same id. Each
  failure is recorded in English and as a code of :data:`~control.models.HOOK_ERRORS` with
  its params (:class:`~control.webhooks.Failure`), which the dashboard says in its language.

It wakes when a delivery is queued (a notification on :data:`~control.webhooks.HOOK_CHANNEL`,
from any process) and polls every :data:`POLL` seconds besides, so a restart, a lost
notification or a retry coming due is picked up. Metrics: deliveries by outcome, the queue's
depth, attempts in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client import Counter, Gauge
from starlette.applications import Starlette

from control import webhooks
from control.metrics import PREFIX, metrics_of
from control.models import Delivery, DeliveryState, Hook
from control.settings import ControlSettings
from control.store import Store
from control.webhooks import Failure, HookPolicy, Refused

log = logging.getLogger("clickacall.control.webhooks")

POLL = 2.0  # seconds between looks at the queue when nothing wakes the worker
BODY_PEEK = 1024  # bytes of a receiver's answer read (for the log), the rest is dropped
LEASE_MARGIN = 30.0  # a claimed delivery is due again this long after its attempt's timeout
USER_AGENT = "Clickacall-Webhooks/1"
OUTCOMES = ("delivered", "retry", "failed", "denied", "queue_full")


class HookMetrics:
    def __init__(self, app: Starlette) -> None:
        r = metrics_of(app).registry
        self.deliveries = Counter(
            f"{PREFIX}_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered; retry: failed, will try again;"
            " failed: failed and given up), attempts refused because the host resolved to a"
            " denied address (denied, also counted as retry or failed), and events not queued"
            " because the business had too many deliveries waiting (queue_full)",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self.deliveries.labels(outcome=outcome)
        self.queue = Gauge(
            f"{PREFIX}_webhook_queue_depth",
            "Webhook deliveries waiting to be made (every tenant), as of the worker's last look",
            registry=r,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_webhook_in_flight", "Webhook delivery attempts in progress", registry=r
        )


def hook_metrics(app: Starlette) -> HookMetrics:
    m = getattr(app.state, "hook_metrics", None)
    if not isinstance(m, HookMetrics):
        m = app.state.hook_metrics = HookMetrics(app)
    return m


def hook_policy(app: Starlette) -> HookPolicy:
    """The app's endpoint rules (from its settings; tests may swap the resolver)."""
    p = getattr(app.state, "hook_policy", None)
    if not isinstance(p, HookPolicy):
        s: ControlSettings = app.state.ctx.settings
        p = app.state.hook_policy = HookPolicy.of(s.hook_allow, s.hook_allow_http)
    return p


def count_queue_full(app: Starlette, store: Store) -> None:
    """Count deliveries recorded as failed because their tenant's queue was full, where
    they are written (like :func:`control.metrics.instrument_store`)."""
    add = store.add_deliveries
    m = hook_metrics(app)

    async def added(deliveries: list[Delivery]) -> None:
        await add(deliveries)
        full = sum(d.last_error_code == "queue_full" for d in deliveries)
        if full:
            m.deliveries.labels(outcome="queue_full").inc(full)

    store.add_deliveries = added  # type: ignore[method-assign]


def tls_context(ca: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca:
        ctx.load_verify_locations(cafile=ca)
    return ctx


def _target(url: str, address: str, port: int) -> str:
    """``url`` with its host replaced by the checked ``address``."""
    parts = urlsplit(url)
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return urlunsplit(parts._replace(netloc=f"{host}:{port}"))


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port}" if parts.port else host


class Worker:
    def __init__(self, app: Starlette) -> None:
        self.app = app
        s: ControlSettings = app.state.ctx.settings
        self.settings = s
        self.metrics = hook_metrics(app)
        self.slots = asyncio.Semaphore(max(s.hook_concurrency, 1))
        self.tasks: set[asyncio.Task[None]] = set()
        self.busy: set[str] = set()  # ids of the deliveries this worker is attempting now
        self.wake = asyncio.Event()
        self.client = httpx.AsyncClient(
            verify=tls_context(s.hook_ca),
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(s.hook_timeout),
            limits=httpx.Limits(
                max_connections=max(s.hook_concurrency, 1), max_keepalive_connections=0
            ),
        )

    def store(self) -> Store | None:
        store: Store | None = self.app.state.ctx.store
        return store

    def now(self) -> float:
        return float(self.app.state.clock())

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                try:
                    await self.round()
                except Exception as e:  # the database may be away for a while
                    log.warning("webhook round failed: %s", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), POLL)
                self.wake.clear()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.client.aclose()

    async def _listen(self) -> None:
        """Wake the loop on every notification; resubscribe after a failure."""
        while True:
            store = self.store()
            if store is None:
                await asyncio.sleep(POLL)
                continue
            try:
                async with await store.listen(webhooks.HOOK_CHANNEL) as sub:
                    async for _ in sub:
                        self.wake.set()
            except Exception as e:
                log.debug("webhook listener: %s", e)
            await asyncio.sleep(POLL)

    async def round(self) -> None:
        store = self.store()
        if store is None:
            return
        self.metrics.queue.set(await store.count_pending())
        room = max(self.settings.hook_concurrency, 1) * 4
        for d in await store.due_deliveries(self.now(), room):
            if d.id in self.busy:  # ours, in flight (its lease may look over to a moved clock)
                continue
            await self.slots.acquire()
            self.busy.add(d.id)
            task = asyncio.create_task(self._attempt(store, d))
            self.tasks.add(task)
            task.add_done_callback(functools.partial(self._done, key=d.id))

    def _done(self, task: asyncio.Task[None], key: str) -> None:
        self.tasks.discard(task)
        self.busy.discard(key)
        self.slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.warning("webhook attempt failed: %s", task.exception())

    async def _attempt(self, store: Store, d: Delivery) -> None:
        now = self.now()
        if not await store.claim_delivery(d, now + self.settings.hook_timeout + LEASE_MARGIN):
            return  # another worker has it, or it changed
        hook = await store.get_hook(d.tenant_id, d.endpoint_id)
        if hook is None:
            return  # the endpoint was deleted, and its deliveries with it
        self.metrics.in_flight.inc()
        try:
            status, failure, denied = await self._send(hook, d, now)
        finally:
            self.metrics.in_flight.dec()
        d.attempts += 1
        d.last_status = status
        done = self.now()
        if failure is None:
            d.last_error, d.last_error_code, d.last_error_params = None, None, {}
            d.state, d.done_at, outcome = DeliveryState.DELIVERED, done, "delivered"
        else:
            failure.record(d)
            at = webhooks.next_attempt(d, done, self.settings.hook_window, self.settings.rng)
            if at is None:
                d.state, d.done_at, outcome = DeliveryState.FAILED, done, "failed"
            else:
                d.next_attempt_at, outcome = at, "retry"
            log.info(
                "webhook %s to endpoint %s: attempt %d failed (%s)%s",
                d.id,
                hook.id,
                d.attempts,
                failure.text,
                "" if at is None else f"; next in {at - done:.0f} s",
            )
        await store.finish_attempt(d)
        if denied:
            self.metrics.deliveries.labels(outcome="denied").inc()
        self.metrics.deliveries.labels(outcome=outcome).inc()

    async def _send(
        self, hook: Hook, d: Delivery, now: float
    ) -> tuple[int | None, Failure | None, bool]:
        """One POST: (HTTP status or None, why it failed or None, whether the address was
        refused)."""
        policy = hook_policy(self.app)
        if not hook.active:
            return None, Failure("off", "the endpoint is switched off"), False
        try:
            _, host, port = policy.split(hook.url)
            addresses = await policy.addresses(host, port)
        except Refused as e:
            why = str(e).removeprefix("url: ")
            params: dict[str, str | int | float] = {"reason": e.reason, **e.params, "detail": why}
            return None, Failure("refused", why, params), True
        body = d.payload.encode()
        timestamp = int(now)
        headers = {
            "Host": _host_header(hook.url),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Clickacall-Webhook-Id": d.id,
            "Clickacall-Webhook-Event": d.event,
            "Clickacall-Webhook-Timestamp": str(timestamp),
            "Clickacall-Webhook-Signature": webhooks.signature_header(hook, timestamp, body, now),
        }
        ext: dict[str, Any] = {}
        try:
            ipaddress.ip_address(host)
        except ValueError:
            ext["sni_hostname"] = host
        failure = Failure("no_address", "no address")
        for address in addresses[:4]:
            try:
                return await asyncio.wait_for(
                    self._post(_target(hook.url, address, port), body, headers, ext),
                    self.settings.hook_timeout,
                ) + (False,)
            except TimeoutError:
                s = self.settings.hook_timeout
                return None, Failure("timeout", f"no answer within {s:g} s", {"seconds": s}), False
            except httpx.ConnectError as e:  # the next address may answer
                detail = str(e)[:300]
                failure = Failure("connect", f"cannot connect: {detail}"[:300], {"detail": detail})
            except httpx.HTTPError as e:
                detail = f"{type(e).__name__}: {e}"[:300]
                return None, Failure("http_error", detail, {"detail": detail}), False
        return None, failure, False

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], ext: dict[str, Any]
    ) -> tuple[int | None, Failure | None]:
        request = self.client.build_request(
            "POST", url, content=body, headers=headers, extensions=ext
        )
        response = await self.client.send(request, stream=True)
        try:
            seen = 0
            async for chunk in response.aiter_raw():
                seen += len(chunk)
                if seen >= BODY_PEEK:
                    break
        finally:
            await response.aclose()
        if 200 <= response.status_code < 300:
            return response.status_code, None
        status = response.status_code
        if 300 <= status < 400:
            text = f"HTTP {status}: redirects are not followed"
            return status, Failure("redirect", text, {"status": status})
        return status, Failure("http_status", f"HTTP {status}", {"status": status})


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Worker]:
    """The delivery worker, for as long as the app runs (its lifespan)."""
    worker = Worker(app)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
