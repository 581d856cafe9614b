"""A visitor behind a firewall that lets only TCP 443 out, as in many hotels and offices.

The visitor's Chromium runs on a test host of its own (a network namespace, tests/netns.py)
whose UDP to the platform, and TCP to any port of the relay but 443, is dropped. The staff
member's Chromium, the control plane and the relay node (UDP, TCP and TLS on 443) run on
this machine, at its end of the link. The call must connect through TURN over TLS on 443,
the relay's metrics must show a TLS allocation carrying the media, and the visitor's
connection check must say what the network allowed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests import netns
from tests.controlproc import free_port
from tests.netns import NetHost
from tests.relayproc import RelayProcess, RelaySpec, make_certificate
from tests.web.browser import Browser, axe_violations, missing, screenshot
from tests.web.pages import CallPage, ConsolePage
from tests.web.test_web_call import _wait_healthy
from tests.web.webcontrol import WebControl

pytestmark = [pytest.mark.slow]

TLS_PORT = 443


@pytest.fixture(scope="module")
def host() -> Iterator[NetHost]:
    reason = missing() or netns.missing()
    if reason:
        pytest.skip(reason)
    with NetHost() as h:
        yield h


@pytest.fixture(scope="module")
def control(host: NetHost) -> Iterator[WebControl]:
    control = WebControl(host=host.gateway).start()
    try:
        yield control
    finally:
        control.stop()


@pytest.fixture(scope="module")
def certificate(host: NetHost, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    make_certificate(cert, key, ips=(host.gateway,))
    return str(cert), str(key)


@pytest.fixture(scope="module")
def node(
    host: NetHost,
    control: WebControl,
    certificate: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RelayProcess, int]]:
    """The relay on this machine's end of the link: UDP and TCP on one port, TLS on 443."""
    metrics = free_port()
    spec = RelaySpec(
        listen=(host.gateway,),
        relay_ips=(host.gateway,),
        allow_peers=(f"{host.gateway}/32",),  # both parties' relayed addresses
        secret=control.relay_secret,
        tcp=True,
        tls=certificate,
        tls_port=TLS_PORT,
        extra_args=(
            "--control",
            control.url,
            "--node-id",
            "edge-443",
            "--region",
            "eu",
            "--heartbeat-interval",
            "0.5",
            "--metrics",
            f"127.0.0.1:{metrics}",
        ),
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLICKACALL_NODE_SECRET", control.node_secret)
        relay = RelayProcess(spec, Path(tmp_path_factory.mktemp("relay")), impl="ours").start()
    try:
        _wait_healthy(control, "edge-443", True, timeout=15)  # registered
        # the firewall: from the visitor's host, no UDP to this machine and no TCP to the
        # relay but on 443 (the control plane's port stays open: the page must load)
        host.block("udp")
        host.block("tcp", relay.port)
        assert not host.reaches("udp", relay.port)
        assert not host.reaches("tcp", relay.port)
        assert host.reaches("tcp", TLS_PORT)
        assert host.reaches("tcp", control.port)
        yield relay, metrics
    finally:
        relay.stop()


def spki_pin(cert_path: str) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what --ignore-certificate-errors-spki-list takes
    to trust exactly this certificate (the relay's, self-signed for the test)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


SELECTED_PAIR = """
const done = arguments[arguments.length - 1];
const pc = document.querySelector('clickacall-call').session.peer.pc;
pc.getStats().then(stats => {
  let pair = null;
  stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId)
    pair = stats.get(s.selectedCandidatePairId); });
  if (!pair) return done(null);
  const local = stats.get(pair.localCandidateId);
  done({type: local.candidateType, relayProtocol: local.relayProtocol || null,
        url: local.url || null, state: pair.state});
}).catch(e => done({error: String(e)}));
"""


@pytest.mark.timeout(240)
def test_a_visitor_who_may_only_use_tcp_443_calls_through_turn_over_tls(
    host: NetHost,
    control: WebControl,
    certificate: tuple[str, str],
    node: tuple[RelayProcess, int],
    open_browser: Callable[..., Browser],
) -> None:
    relay, metrics = node
    tenant = control.bootstrap(media=["video", "voice"])
    secure = f"--unsafely-treat-insecure-origin-as-secure={control.url}"  # http on a LAN IP
    trust = f"--ignore-certificate-errors-spki-list={spki_pin(certificate[0])}"
    before = scrape(metrics)

    console = ConsolePage(open_browser(flags=(secure,)), control.url)
    console.open(tenant.login).wait_ready()
    console.arm()
    visitor_b = open_browser(flags=(secure, trust), netns=host)
    visitor = CallPage(visitor_b, control.url).open(tenant.link["public_id"]).wait_ready()
    visitor.video_call()
    visitor.wait_state("ringing")
    # the connection check: UDP and TCP to the relay fail, TLS on 443 works
    visitor.until(lambda: visitor.check in ("ok", "partial", "blocked"), 20, "the relay check")
    assert visitor.check == "partial"
    screenshot(visitor.d, "firewall-ringing")

    console.wait_ringing()
    console.answer()
    console.in_call()
    visitor.wait_state("in-call", timeout=45)
    visitor.until(lambda: visitor.remote_video_playing(), 30, "the staff member's video")
    console.until(lambda: console.remote_video_playing(), 30, "the visitor's video")
    assert visitor.video_flowing() and console.video_flowing()
    assert axe_violations(visitor.d) == []
    screenshot(visitor.d, "firewall-incall-visitor")

    # the visitor's selected candidate: a relay candidate over TLS, from the 443 URL
    pair: dict[str, Any] = visitor.d.execute_async_script(SELECTED_PAIR)
    assert pair and pair.get("type") == "relay", pair
    assert pair["relayProtocol"] == "tls", pair
    assert pair["url"] is None or f":{TLS_PORT}" in pair["url"], pair

    # the relay saw it: a live TLS allocation, and media relayed for a TLS client
    now = scrape(metrics)
    assert now.get('clickacall_relay_allocations{transport="tls"}', 0) >= 1, now
    key = 'clickacall_relay_packets_total{direction="%s",transport="tls"}'
    for direction in ("client_to_peer", "peer_to_client"):
        sent = now.get(key % direction, 0) - before.get(key % direction, 0)
        assert sent > 100, (direction, sent)
    assert now.get('clickacall_relay_tls_handshakes_total{transport="tls"}', 0) >= 1

    visitor.hang_up()
    visitor.wait_state("ended")
    ref = visitor.call_ref
    console.wait_ready()

    # the call carries the check's verdict, transport by transport
    calls = httpx.get(f"{control.url}/v1/calls", headers=tenant.th, timeout=10).json()["calls"]
    (listed,) = [c for c in calls if c["call_ref"] == ref]
    call = httpx.get(f"{control.url}/v1/calls/{listed['id']}", headers=tenant.th, timeout=10)
    check = call.json()["visitor_check"]
    assert check["verdict"] == "partial", json.dumps(check)
    assert check["transports"] == {"udp": "fail", "tcp": "fail", "tls": "ok"}, check
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", ref), ref


@pytest.mark.timeout(180)
def test_a_network_that_blocks_every_way_to_the_relay_is_named_and_offers_a_callback(
    host: NetHost,
    control: WebControl,
    certificate: tuple[str, str],
    node: tuple[RelayProcess, int],
    open_browser: Callable[..., Browser],
) -> None:
    """TLS on 443 blocked too: the check finds no relay candidate on any transport within its
    5 s, the ringing page says the network blocks calls and offers a call back, which stops
    the ringing; the call keeps the 'blocked' verdict and the request."""
    tenant = control.bootstrap(media=["video", "voice"])
    secure = f"--unsafely-treat-insecure-origin-as-secure={control.url}"
    console = ConsolePage(open_browser(flags=(secure,)), control.url)
    console.open(tenant.login).wait_ready()
    host.block("tcp", TLS_PORT)
    try:
        assert not host.reaches("tcp", TLS_PORT) and host.reaches("tcp", control.port)
        visitor = CallPage(open_browser(flags=(secure,), netns=host), control.url)
        visitor.open(tenant.link["public_id"]).wait_ready()
        visitor.voice_call()
        visitor.wait_state("ringing")
        console.wait_ringing()
        call_id = visitor.d.execute_script(
            "return document.querySelector('clickacall-call').session.state.callId"
        )
        visitor.until(lambda: visitor.check in ("ok", "partial", "blocked"), 20, "the check")
        assert visitor.check == "blocked"
        assert visitor.text(".cc-check").startswith("Your network blocks calls.")
        visitor.until(
            lambda: visitor.live_text().startswith("Your network blocks calls."), 5, "announced"
        )
        assert axe_violations(visitor.d) == []
        screenshot(visitor.d, "firewall-blocked")
        visitor.button("Ask for a call back").click()
        visitor.wait_state("callback")
        assert visitor.text("[data-screen='callback'] h2") == "Your network blocks calls"
        console.wait_quiet()  # asking for a call back stopped the ringing
        visitor.request_callback("Grace Hopper", "grace@example.com")
        visitor.wait_state("ended")
    finally:
        host.unblock("tcp", TLS_PORT)
    call = httpx.get(f"{control.url}/v1/calls/{call_id}", headers=tenant.th, timeout=10).json()
    assert call["callback_state"] == "open", call
    check = call["visitor_check"]
    assert check["verdict"] == "blocked", check
    assert check["transports"] == {"udp": "fail", "tcp": "fail", "tls": "fail"}, check
