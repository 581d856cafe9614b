"""A relay node: N worker processes sharing the listening ports with SO_REUSEPORT.

Each worker owns its allocations and its slice of the relay port range. The supervisor opens
every worker's listening sockets, in worker order, and keeps them while the node runs; the
kernel steers a client's IP address to one slot of each group, always the same worker's, so
all of an allocation's traffic reaches the worker that holds it, across other workers'
restarts too. All workers share the nonce key, so a nonce stays valid whichever worker checks
it.

Signals: SIGTERM or SIGUSR1 drain (refuse new allocations, keep the others until they end or
``--drain-timeout`` passes); SIGINT stops at once; SIGHUP reloads the TLS certificate (new
handshakes use it; connections and allocations stay). The supervisor forwards them to workers and
restarts a worker that dies unexpectedly (with a back-off), unless the node is stopping.

With ``--control``, exactly one node agent (:mod:`relay.agent`) talks to the control plane:
the single worker runs it on its own loop, or the supervisor runs it in a thread, reading
the load from the workers' boards and handing revocations to every worker through the
revocation log (:mod:`relay.revocations`), which a restarted worker reads from the start.
Quality summaries go the other way: the single worker's agent asks the worker for them; with
several workers each worker writes them to its own hand-over files next to its board and
the supervisor's agent reads them all (:mod:`relay.summaries`); either way the agent spools
them to disk before sending (:mod:`relay.spool`).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import logging
import multiprocessing
import os
import resource
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from relay.config import RelayConfig
from relay.listeners import Listeners, open_listeners, steer_by_client_ip
from relay.logs import set_worker, setup_logging
from relay.metrics import Board, board_dir, serve_metrics
from relay.policy import PeerPolicy
from relay.quota import Quota, SharedQuota, table_slots
from relay.server import FastPathBackend, RelayWorker, serve
from relay.turn import TurnConfig, TurnServer

log = logging.getLogger("clickacall.relay.node")

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
EXIT_REFUSED = 2  # the node will not start as configured (as for a bad flag)
PR_SET_PDEATHSIG = 1


def turn_config(config: RelayConfig) -> TurnConfig:
    """The TURN core's settings from the node's configuration."""
    ip4 = next((ip for ip in config.relay_ip if ":" not in ip), None)
    ip6 = next((ip for ip in config.relay_ip if ":" in ip), None)
    return TurnConfig(
        realm=config.realm,
        auth_secrets=[s.encode() for s in config.auth_secrets],
        static_users=dict(config.users),
        software=config.software,
        max_allocations_total=config.max_allocations,
        max_allocations_per_user=config.user_quota,
        bandwidth_bytes_per_second=config.bandwidth,
        unauth_rate=config.unauth_rate,
        unauth_burst=config.unauth_burst,
        policy=PeerPolicy(
            allow=config.allow_peer, deny=config.deny_peer, own=own_addresses(config)
        ),
        relay_ip4=ip4,
        relay_ip6=ip6,
        alternate_server=config.alternate_server,
        log_full_ips=config.log_full_ips,
        multiplex_peer=config.multiplex_peer,
    )


def own_addresses(config: RelayConfig) -> list[tuple[str, int, int]]:
    """The node's listening transport addresses, as ``(ip, port, port)``, for the peer
    policy to deny (a peer there would nest an allocation through the relay). A wildcard
    listen address stands for the relay IPs, the external IP and the loopback address of its
    family; the external IP (1:1 NAT) reaches every listen port of its family."""
    out: list[tuple[str, int, int]] = []
    for host, port in [*config.listen, *config.listen_tcp, *config.listen_tls]:
        ip = ipaddress.ip_address(host)
        hosts = {str(ip)}
        if ip.is_unspecified:
            hosts = {h for h in config.relay_ip if ipaddress.ip_address(h).version == ip.version}
            hosts.add("127.0.0.1" if ip.version == 4 else "::1")
        if config.external_ip and ipaddress.ip_address(config.external_ip).version == ip.version:
            hosts.add(config.external_ip)
        out += [(h, port, port) for h in sorted(hosts)]
    return out


def _turn_factory(
    config: RelayConfig,
    nonce_key: bytes,
    count: int,
    quota_path: Path | None = None,
    index: int = 0,
) -> Callable[[FastPathBackend], TurnServer]:
    tcfg = turn_config(config)
    # the node-wide allocation cap is shared evenly between workers (a client's allocations
    # all land on one worker); the per-credential quota is counted node-wide, in the table
    # at quota_path the supervisor made (relay/quota.py)
    tcfg.max_allocations_total = max(1, config.max_allocations // count)

    def factory(backend: FastPathBackend) -> TurnServer:
        quota: Quota | None = None
        if quota_path is not None:
            shared = SharedQuota(quota_path, index)
            shared.reset()  # a restarted worker's predecessor's allocations are gone
            quota = shared
        return TurnServer(tcfg, backend, nonce_key=nonce_key, quota=quota)

    return factory


def _install_uvloop() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_worker(
    config: RelayConfig,
    index: int,
    count: int,
    nonce_key: bytes,
    board_path: Path,
    revocations: Path | None = None,
    summaries: Path | None = None,
    quota: Path | None = None,
    listeners: Listeners | None = None,
) -> int:
    """Run one worker in this process until it stops; returns an exit code. ``listeners``
    are its sockets from the supervisor (several workers); without them it opens its own."""
    set_worker(index)
    _install_uvloop()
    board = Board(board_path)
    try:
        factory = _turn_factory(config, nonce_key, count, quota, index)
        if count == 1 and config.control is not None:
            asyncio.run(_serve_with_agent(config, factory, board))
        else:
            asyncio.run(
                serve(
                    config,
                    factory,
                    index=index,
                    count=count,
                    board=board,
                    revocations=revocations,
                    summaries=summaries,
                    listeners=listeners,
                )
            )
    except OSError as exc:
        log.error("worker %d cannot serve: %s", index, exc)
        return 1
    finally:
        board.close()
    return 0


async def _serve_with_agent(
    config: RelayConfig, factory: Callable[[FastPathBackend], TurnServer], board: Board
) -> None:
    """The single worker is the whole node: it runs the node agent on its own loop and
    applies revocations directly."""
    from relay.agent import GOODBYE_TIMEOUT, LAST_SUMMARIES_TIMEOUT, BoardLoad, NodeAgent

    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def ready(worker: RelayWorker) -> None:
        def collect() -> list[dict[str, Any]]:  # still works once the worker has closed
            return worker.take_final_summaries() + worker.quality_summaries()

        agent = NodeAgent(config, BoardLoad([board]).read, worker.revoke, collect=collect)
        tasks.append(asyncio.create_task(agent.run(stop), name="node-agent"))

    try:
        await serve(config, factory, board=board, ready=ready)
    finally:
        stop.set()
        if tasks:
            timeout = GOODBYE_TIMEOUT + LAST_SUMMARIES_TIMEOUT + 1
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("node agent failed", exc_info=task.exception())


def _die_with_parent() -> None:
    """Ask Linux to stop this worker (SIGINT) if the supervisor dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGINT)
    except (OSError, AttributeError):  # not Linux: the supervisor's signals still reach us
        pass


def _child(
    config: RelayConfig,
    index: int,
    count: int,
    nonce_key: bytes,
    board_path: Path,
    revocations: Path | None,
    summaries: Path | None,
    quota: Path | None,
    listeners: Listeners,
) -> None:
    _die_with_parent()
    setup_logging(config.log_level, json=config.log_json)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop takes it
    raise SystemExit(
        run_worker(
            config, index, count, nonce_key, board_path, revocations, summaries, quota, listeners
        )
    )


def raise_fd_limit(config: RelayConfig) -> int:
    """Lift the soft limit on open files to the hard one: each allocation holds a socket,
    each TCP or TLS client a connection. Returns the limit now; warns when it is below what
    the configured caps could need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    limit = hard if soft == resource.RLIM_INFINITY else soft
    want = config.max_allocations + (
        config.stream_max_connections if config.listen_tcp or config.listen_tls else 0
    )
    if limit < want:
        log.warning(
            "the open-files limit is %d, below what --max-allocations and "
            "--stream-max-connections could need (%d); raise it (LimitNOFILE= in systemd)",
            limit,
            want,
        )
    return limit


def _ensure_std_fds() -> None:
    """Started with stdin/stdout/stderr closed (as some supervisors and CI do), the first
    sockets would get descriptors 0-2, which libuv refuses to close: fill them with
    /dev/null first."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def ephemeral_overlap(
    ports: tuple[int, int], path: Path = EPHEMERAL_RANGE
) -> tuple[int, tuple[int, int] | None]:
    """How many of the relay ports ``ports`` lie in the kernel's ephemeral port range (read
    from ``path``), and that range; ``(0, None)`` when it cannot be read (not Linux)."""
    try:
        low_s, high_s = path.read_text().split()[:2]
        kernel = (int(low_s), int(high_s))
    except (OSError, ValueError):
        return 0, None
    low, high = max(ports[0], kernel[0]), min(ports[1], kernel[1])
    return max(0, high - low + 1), kernel


def check_port_range(config: RelayConfig, path: Path = EPHEMERAL_RANGE) -> int | None:
    """Warn when the relay ports overlap the kernel's ephemeral range: every outgoing
    connection or unbound socket of the host may take one of them, and an allocation then
    finds it busy. Returns how many overlap, or None when ``--strict-port-range`` refuses."""
    overlap, kernel = ephemeral_overlap(config.ports, path)
    if not overlap or kernel is None:
        return overlap
    low, high = config.ports
    what = (
        f"--ports {low}-{high} overlaps the kernel's ephemeral port range "
        f"{kernel[0]}-{kernel[1]} ({path}) on {overlap} port(s): other programs' sockets "
        "can take them from the relay"
    )
    if config.strict_port_range:
        log.error(
            "%s; refusing to start (--strict-port-range): choose relay ports outside it, or "
            "narrow it with sysctl net.ipv4.ip_local_port_range",
            what,
        )
        return None
    log.warning(
        "%s; choose relay ports outside it or narrow it with sysctl "
        "net.ipv4.ip_local_port_range (--strict-port-range refuses to start)",
        what,
    )
    return overlap


def ports_taken(config: RelayConfig) -> list[str]:
    """The listen addresses another process already holds. The workers of one node share
    their listening ports with SO_REUSEPORT, which would also let a second node (of the same
    user) join the group and take half of the first one's clients; so before any worker
    binds, each address is bound once without SO_REUSEPORT (TCP with SO_REUSEADDR, so a
    previous run's TIME_WAIT connections do not count), which fails while anything holds it.
    Other errors are left for the workers to report."""
    taken: list[str] = []
    for kind, addrs in (
        (socket.SOCK_DGRAM, config.listen),
        (socket.SOCK_STREAM, [*config.listen_tcp, *config.listen_tls]),
    ):
        for host, port in addrs:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, kind) as sock:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        where = (
                            f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
                        )
                        taken.append(f"{'UDP' if kind == socket.SOCK_DGRAM else 'TCP'} {where}")
    return taken


def run_node(config: RelayConfig) -> int:
    """Start the node's workers and block until they have all stopped."""
    _ensure_std_fds()
    raise_fd_limit(config)
    taken = ports_taken(config)
    if taken:
        log.error(
            "%s already in use by another process (another relay node?); a node shares its "
            "ports only between its own workers: stop the other one or choose another --listen",
            ", ".join(taken),
        )
        return EXIT_REFUSED
    overlap = check_port_range(config)
    if overlap is None:
        return EXIT_REFUSED
    count = max(1, config.workers)
    boards_at = board_dir()
    boards = [Board(boards_at / f"worker-{i}", create=True) for i in range(count)]
    try:
        if config.metrics is not None:
            try:
                serve_metrics(config.metrics, boards, ephemeral_overlap=overlap)
            except OSError as exc:
                log.error("cannot serve metrics on %s:%d: %s", *config.metrics, exc)
                return 1
            log.info("metrics on http://%s:%d/metrics", *config.metrics)
        return _run(config, count, boards, boards_at)
    finally:
        for board in boards:
            board.close()
        shutil.rmtree(boards_at, ignore_errors=True)


def _run(config: RelayConfig, count: int, boards: list[Board], boards_at: Path) -> int:
    nonce_key = secrets.token_bytes(32)
    if count == 1:  # the node is its worker, on sockets of its own
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop takes it
        return run_worker(config, 0, 1, nonce_key, boards[0].path)

    quota: Path | None = None
    if config.user_quota > 0:  # one table for the node's workers, before any starts
        quota = boards_at / "quota"
        slots = table_slots(config.max_allocations)
        SharedQuota(quota, 0, create=True, slots=slots, workers=count).close()
    try:
        listeners = worker_listeners(config, count)
    except OSError as exc:
        log.error("the node cannot listen: %s", exc)
        return 1
    try:
        return _run_workers(config, count, boards, boards_at, nonce_key, quota, listeners)
    finally:  # the workers have stopped: the groups go with the supervisor's copies
        for own in listeners:
            own.close()


def worker_listeners(config: RelayConfig, count: int) -> list[Listeners]:
    """Every worker's listening sockets, opened in worker order before any worker starts.

    The supervisor keeps them for the node's life and hands worker i its own at every
    (re)start, so slot i of each SO_REUSEPORT group stays worker i's: the steering program's
    ``client IP % count`` always names the worker holding the client's allocations. Were a
    worker to open its own, the group order would be the order the workers happened to
    bind in (and, before all had, the kernel would hash instead); and when one died the
    kernel would move the group's last socket into its slot and the restarted worker would
    join at the end, steering another worker's live calls away from it. Datagrams and
    connections for a worker that is restarting wait in its sockets meanwhile."""
    out: list[Listeners] = []
    try:
        for _ in range(count):
            out.append(open_listeners(config, count))
    except OSError:
        for own in out:
            own.close()
        raise
    return out


def _run_workers(
    config: RelayConfig,
    count: int,
    boards: list[Board],
    boards_at: Path,
    nonce_key: bytes,
    quota: Path | None,
    listeners: list[Listeners],
) -> int:
    """Start ``count`` worker processes, each on its ``listeners``, and supervise them until
    they have all stopped."""
    revocations = boards_at / "revocations"
    board_paths = [b.path for b in boards]
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, BaseProcess] = {}
    restarts: dict[int, int] = {}
    stopping: list[int] = []  # the signal that asked us to stop, once one did
    follow = revocations if config.control is not None else None
    handoff = boards_at if config.control is not None else None  # summaries-<i>.<n>

    def start(index: int) -> None:
        proc = ctx.Process(
            target=_child,
            # the sockets travel as descriptors (multiprocessing.reduction.DupFd): the
            # worker gets its own copies; ours stay open while it runs, dies or restarts
            args=(
                config,
                index,
                count,
                nonce_key,
                board_paths[index],
                follow,
                handoff,
                quota,
                listeners[index],
            ),
            name=f"relay-worker-{index}",
        )
        proc.start()
        procs[index] = proc

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(signum)
        for proc in procs.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    def reload(signum: int, _frame: object) -> None:  # SIGHUP: the workers reload TLS
        for proc in procs.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGHUP, reload)
    for i in range(count):
        start(i)
    log.info("relay node started %d workers", count)
    stop_agent = None
    if config.control is not None:
        stop_agent = _start_agent(config, boards, boards_at, procs, stopping)
    ended: set[int] = set()

    def end(index: int) -> None:  # a worker has stopped, as the node does
        ended.add(index)
        steer_around(listeners, ended)

    try:
        return _supervise(procs, restarts, stopping, start, on_signal, end)
    finally:
        if stop_agent is not None:
            stop_agent()


def steer_around(listeners: list[Listeners], ended: set[int]) -> None:
    """While the node stops, steer the clients of the workers that have ended (their drain
    done) to workers still running, which refuse new Allocates as a drain does, rather
    than leave their requests unanswered in the ended workers' sockets. The running workers
    keep their slots, so their calls go on."""
    count = len(listeners)
    running = [i for i in range(count) if i not in ended]
    if not running:
        return
    redirect = {i: running[i % len(running)] for i in ended}
    for sock in listeners[0].all():  # one member of each group sets the group's program
        try:
            steer_by_client_ip(sock, count, redirect)
        except OSError as exc:
            log.warning("cannot steer the ended workers' clients to running ones: %s", exc)


def _start_agent(
    config: RelayConfig,
    boards: list[Board],
    boards_at: Path,
    procs: dict[int, BaseProcess],
    stopping: list[int],
) -> Callable[[], None]:
    """Start the node's one agent in a thread of the supervisor (revocations go to the log
    every worker follows, summaries come from the workers' hand-over files); returns what
    stops it (once the workers have stopped, so their final summaries are read)."""
    from relay.agent import AgentThread, BoardLoad, NodeAgent
    from relay.revocations import RevocationWriter
    from relay.summaries import HandoffReader

    writer = RevocationWriter(boards_at / "revocations")
    readers = [HandoffReader(boards_at, i) for i in range(len(boards))]

    def collect() -> list[dict[str, Any]]:
        return [s for r in readers for s in r.poll()]

    def pids() -> list[int]:
        return [os.getpid(), *(p.pid for p in list(procs.values()) if p.pid is not None)]

    def deliver(token_ids: list[str]) -> None:
        writer.add(token_ids, time.time())

    load = BoardLoad(boards, pids=pids, draining=lambda: bool(stopping))
    thread = AgentThread(NodeAgent(config, load.read, deliver, collect=collect)).start()

    def stop() -> None:
        thread.stop()
        writer.close()

    return stop


def _supervise(
    procs: dict[int, BaseProcess],
    restarts: dict[int, int],
    stopping: list[int],
    start: Callable[[int], None],
    on_signal: Callable[[int, object], None],
    end: Callable[[int], None],
) -> int:
    """Wait for the workers, restarting one that dies unless the node is stopping (then
    ``end`` hears of it)."""
    code = 0
    while procs:
        time.sleep(0.2)
        for index, proc in list(procs.items()):
            if proc.is_alive():
                continue
            proc.join()
            del procs[index]
            if stopping:
                end(index)
                continue
            n = restarts.get(index, 0)
            restarts[index] = n + 1
            if proc.exitcode == 1 and n == 0:
                # could not even start (say, the TLS certificate does not load): stop the node
                log.error("worker %d failed to start; stopping the node", index)
                on_signal(signal.SIGINT, None)
                code = 1
                continue
            delay = RESTART_BACKOFF[min(n, len(RESTART_BACKOFF) - 1)]
            log.warning(
                "worker %d exited with %s; restarting in %.1f s", index, proc.exitcode, delay
            )
            time.sleep(delay)
            start(index)
    return code
