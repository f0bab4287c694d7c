"""One cronsvc process: resources opened in order, loops supervised, shut
down in reverse.

Each resource has one cleanup context, so teardown runs only for what
started: coordinator (takes the `local` lock first), store, dispatcher, then
the engine (the run path, scheduler, leader duties) whose loops run in one
TaskGroup. A loop that dies ends the process loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web

from cronsvc import gcpolicy
from cronsvc.adoption import Adoption, OrphanClaims, keep_lost_s
from cronsvc.alertsend import AlertSender
from cronsvc.alertwatch import AlertWatch
from cronsvc.api.app import create_app
from cronsvc.api.auth import ACCESS, Access
from cronsvc.api.context import CONTEXT, ApiContext
from cronsvc.claims import ClaimPipeline, JobService, LostLeases
from cronsvc.clock import Clock, SystemClock
from cronsvc.config import Config, is_loopback
from cronsvc.coord import Coordinator, open_coordinator
from cronsvc.deliveries import Deliveries
from cronsvc.dispatch import Dispatcher
from cronsvc.errors import CannotListen
from cronsvc.feedback import TargetFeedback
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.ids import new_id
from cronsvc.leader import LeaderDuties
from cronsvc.metrics import Metrics
from cronsvc.netguard import TargetPolicy
from cronsvc.notices import Notices
from cronsvc.openfiles import ensure_open_files
from cronsvc.ownership import Membership
from cronsvc.results import ResultWriter
from cronsvc.retry import TRANSIENT
from cronsvc.scheduler import Scheduler
from cronsvc.sdnotify import Notifier
from cronsvc.share import RecentFires
from cronsvc.store import Store, open_store
from cronsvc.ticks import HandBack
from cronsvc.urls import (
    CoordinationBackend,
    StoreBackend,
    coordination_backend,
    sqlite_path,
    store_backend,
)

log = structlog.get_logger(__name__)

ALERTS_GRACE_S = 5.0
"""At shutdown: how long alert outcomes may wait for the store, and then
queued alerts for their receivers; what is left is counted dropped."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    config: Config
    clock: Clock
    metrics: Metrics
    instance_id: str


SERVICES = web.AppKey("services", Services)
COORDINATOR = web.AppKey("coordinator", Coordinator)
STORE = web.AppKey("store", Store)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
ENGINE_TASK = web.AppKey("engine_task", asyncio.Task[None])
DELIVERIES = web.AppKey("deliveries", Deliveries)


def make_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"


def build_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    app = create_app()
    app[SERVICES] = Services(
        config=config,
        clock=clock or SystemClock(),
        metrics=Metrics(),
        instance_id=make_instance_id(),
    )
    app[ACCESS] = Access.from_config(config, clock=app[SERVICES].clock)
    app.cleanup_ctx.extend([_coordinator_ctx, _store_ctx, _dispatcher_ctx, _engine_ctx])
    return app


def _target_policy(config: Config) -> TargetPolicy:
    """The SSRF guard's policy, from keys `load_config` has already checked."""
    return TargetPolicy.from_settings(
        allow_private=config.webhook.allow_private_targets,
        allowed_cidrs=config.webhook.allowed_cidrs,
    )


def _lock_path(config: Config) -> Path | None:
    if (
        coordination_backend(config.coordination.url) is not CoordinationBackend.LOCAL
        or store_backend(config.store.url) is not StoreBackend.SQLITE
    ):
        return None
    db = sqlite_path(config.store.url)
    db.parent.mkdir(parents=True, exist_ok=True)
    return db.with_name(db.name + ".lock")


async def _coordinator_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[SERVICES].config
    coordinator = open_coordinator(
        config.coordination.url,
        lock_path=_lock_path(config),
        key_prefix=config.coordination.key_prefix,
    )
    await coordinator.start()
    app[SERVICES].metrics.gauge(
        "cronsvc_coordinator_round_trips",
        "Network exchanges with the coordinator since start (a pipeline is one)",
        lambda: float(coordinator.round_trips),
    )
    app[COORDINATOR] = coordinator
    yield
    await coordinator.aclose()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[SERVICES].config
    store = await open_store(config.store.url, retention_days=config.retention.execution_logs_days)
    app[STORE] = store
    yield
    await store.aclose()


async def _dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    webhook = services.config.webhook
    dispatcher = Dispatcher(
        max_concurrency=webhook.max_concurrency,
        max_response_bytes=webhook.max_response_bytes,
        clock=services.clock,
        target_policy=_target_policy(services.config),
        max_connections_per_host=webhook.max_connections_per_host,
    )
    await dispatcher.start()
    services.metrics.gauge(
        "cronsvc_dispatches_in_flight", "Webhook deliveries running", lambda: dispatcher.in_flight
    )
    app[DISPATCHER] = dispatcher
    yield
    await dispatcher.aclose()


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    config, clock, metrics = services.config, services.clock, services.metrics
    store, coordinator = app[STORE], app[COORDINATOR]
    started_at = clock.now()
    shutdown_write_s = 10.0  # how long unwritten results may wait for the store at shutdown
    health = HealthMonitor(
        probes={Dependency.STORE: store.ping, Dependency.COORDINATOR: coordinator.ping},
        metrics=metrics,
        answers={
            Dependency.STORE: lambda: store.answered,
            Dependency.COORDINATOR: lambda: coordinator.answered,
        },
    )
    sender, watch = _alerts(app)
    results = ResultWriter(store=store, clock=clock, metrics=metrics, observer=watch)
    # What the run path hands back to the scheduler (held ticks, stale jobs)
    # goes through this, made before both.
    handback = HandBack()
    run_path = _run_path(app, health=health, results=results, handback=handback, alerts=watch)
    membership = Membership(services.instance_id)
    scheduler = Scheduler(
        store=store,
        sink=run_path.claims,
        handback=handback,
        clock=clock,
        config=config.scheduler,
        metrics=metrics,
        health=health,
        instance_id=services.instance_id,
        started_at=started_at,
        alerts=watch,
        membership=membership,
    )
    membership.listeners.append(run_path.orphans.owners_changed)
    leader = LeaderDuties(
        store=store,
        coordinator=coordinator,
        clock=clock,
        metrics=metrics,
        instance_id=services.instance_id,
        started_at=started_at,
        heartbeat_interval_s=config.scheduler.heartbeat_interval_s,
        retention_days=config.retention.execution_logs_days,
        reap_grace=coordination_backend(config.coordination.url) is not CoordinationBackend.LOCAL,
        on_adopted=run_path.adoption.adopt,
        claim_orphans=run_path.orphans.claim,
        on_lost=watch.lost,
        recent=run_path.deliveries.recent,
        jobs_owned=scheduler.jobs_owned,
        loading=scheduler.loading,
        membership=membership,
    )
    coordinator.subscribe_job_changes(scheduler.notify_job_changed)
    coordinator.subscribe_cancels(run_path.deliveries.cancel_replaced)
    # Before the scheduler starts: runs left RUNNING by a previous process.
    await leader.step()
    await health.probe()
    app[DELIVERIES] = run_path.deliveries
    app[CONTEXT] = ApiContext(
        config=config,
        store=store,
        coordinator=coordinator,
        jobs=run_path.jobs,
        leader=leader,
        clock=clock,
        metrics=metrics,
        scheduler_ready=scheduler.ready,
        health=health,
        target_policy=_target_policy(config),
        instance_id=services.instance_id,
        started_at=started_at,
    )

    async def write_results() -> None:
        await results.run(give_up_after_s=shutdown_write_s)
        watch.stop()  # the last results are written: their outcomes are in

    async def alert() -> None:
        sending = asyncio.create_task(sender.run(), name="alert-sender")
        try:
            await watch.run(give_up_after_s=ALERTS_GRACE_S)
        finally:
            await sender.aclose(sending, ALERTS_GRACE_S)

    async def supervise() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(scheduler.run(), name="scheduler")
            group.create_task(leader.run(), name="leader")
            group.create_task(write_results(), name="results")
            group.create_task(alert(), name="alerts")
            group.create_task(health.run(), name="health")

    engine = asyncio.create_task(supervise(), name="engine")
    app[ENGINE_TASK] = engine
    yield
    await _hand_over(scheduler, leader, membership, config.scheduler.heartbeat_interval_s)
    scheduler.stop()
    await run_path.deliveries.drain(config.server.shutdown_grace_s)
    results.stop()
    leader.stop()
    health.stop()
    if not engine.done():
        # The loops stop at their next turn; one waiting on a store that
        # does not answer is cancelled once the grace is over.
        await asyncio.wait({engine}, timeout=shutdown_write_s + 2 * ALERTS_GRACE_S + 5.0)
        if not engine.done():
            log.warning("engine_stop_overdue", waited_s=shutdown_write_s + 5.0)
            engine.cancel()
            await asyncio.wait({engine})


async def _hand_over(
    scheduler: Scheduler, leader: LeaderDuties, membership: Membership, interval_s: float
) -> None:
    """Before it stops, an instance that shares the jobs announces it owns none
    and fires its jobs until the others have heard (at their next heartbeat,
    within half an interval) and loaded them, so a restart or an upgrade leaves
    no gap; the tick leases fence the overlap. It waits one heartbeat interval."""
    if membership.current.alone:
        return
    scheduler.leaving = True
    with contextlib.suppress(*TRANSIENT):
        async with asyncio.timeout(interval_s / 2):
            await leader.renew()
    log.info("handing_over", wait_s=interval_s)
    await asyncio.sleep(interval_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPath:
    """The parts that run due ticks, as the engine wires them."""

    claims: ClaimPipeline
    """The scheduler's `TickSink`."""
    deliveries: Deliveries
    """Every task of the run path, drained at shutdown; cancel notices go to it."""
    adoption: Adoption
    """The leader hands it the unsent ticks of instances gone."""
    jobs: JobService
    """What the API asks of the run path."""
    orphans: OrphanClaims
    """The leader claims through it the ticks whose lease a departed
    instance won and never claimed."""


def _alerts(app: web.Application) -> tuple[AlertSender, AlertWatch]:
    services = app[SERVICES]
    config = services.config
    sender = AlertSender(
        config=config.alerts,
        dashboard_url=config.alerts.dashboard_url
        or f"http://{config.server.host}:{config.server.port}",
        target_policy=_target_policy(config),
        clock=services.clock,
        metrics=services.metrics,
    )
    watch = AlertWatch(
        store=app[STORE],
        sender=sender,
        config=config.alerts,
        clock=services.clock,
        metrics=services.metrics,
    )
    return sender, watch


def _run_path(
    app: web.Application,
    *,
    health: HealthMonitor,
    results: ResultWriter,
    handback: HandBack,
    alerts: AlertWatch,
) -> RunPath:
    services = app[SERVICES]
    config, clock, metrics = services.config, services.clock, services.metrics
    store, coordinator = app[STORE], app[COORDINATOR]
    notices = Notices(coordinator=coordinator, metrics=metrics)
    feedback = TargetFeedback(
        store=store,
        clock=clock,
        metrics=metrics,
        notices=notices,
        handback=handback,
        max_defer_s=config.webhook.max_defer_s,
        alerts=alerts,
    )
    deliveries = Deliveries(
        dispatcher=app[DISPATCHER],
        results=results,
        feedback=feedback,
        notices=notices,
        clock=clock,
        metrics=metrics,
        alerts=alerts,
        recent=RecentFires(clock),
    )
    lost_leases = LostLeases(clock=clock, keep_s=keep_lost_s(config.scheduler.heartbeat_interval_s))
    return RunPath(
        claims=ClaimPipeline(
            store=store,
            coordinator=coordinator,
            deliveries=deliveries,
            handback=handback,
            health=health,
            clock=clock,
            metrics=metrics,
            instance_id=services.instance_id,
            lease_ttl_s=config.scheduler.lease_ttl_s,
            lost_leases=lost_leases,
            initial_claim_s=_usual_claim_s(config.store.url),
        ),
        deliveries=deliveries,
        adoption=Adoption(
            store=store,
            deliveries=deliveries,
            health=health,
            clock=clock,
            metrics=metrics,
            instance_id=services.instance_id,
            max_catchup=config.scheduler.max_catchup,
        ),
        jobs=JobService(
            store=store,
            notices=notices,
            deliveries=deliveries,
            clock=clock,
            instance_id=services.instance_id,
        ),
        orphans=OrphanClaims(
            store=store,
            lost=lost_leases,
            clock=clock,
            metrics=metrics,
            instance_id=services.instance_id,
        ),
    )


async def serve(config: Config) -> None:
    """Run until SIGTERM/SIGINT, or until an engine loop dies (then raise)."""
    files = ensure_open_files(config.webhook.max_concurrency)
    if files.now != files.before:
        log.info("open_file_limit_raised", before=files.before, now=files.now)
    if not files.enough:
        log.warning(
            "open_file_limit_low",
            limit=files.now,
            needed=files.needed,
            hint="raise the hard limit (systemd LimitNOFILE=, docker --ulimit nofile=) "
            "or lower webhook.max_concurrency",
        )
    app = build_app(config)
    app_runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await app_runner.setup()
    gcpolicy.before_loading()
    stop = asyncio.Event()
    notifier = Notifier()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = False
    try:
        site = web.TCPSite(app_runner, config.server.host, config.server.port)
        try:
            await site.start()
        except OSError as exc:
            # Everything opened so far is closed by the cleanup below.
            raise cannot_listen(config.server.host, config.server.port, exc) from None
        started = True
        _log_started(app, _bound_port(app_runner, config.server.port))
        engine = app[ENGINE_TASK]
        stopper = asyncio.create_task(stop.wait())
        ready = asyncio.create_task(app[CONTEXT].scheduler_ready.wait())
        await asyncio.wait({engine, stopper, ready}, return_when=asyncio.FIRST_COMPLETED)
        gcpolicy.after_loading(loaded=ready.done())
        if ready.done():
            notifier.notify("READY=1", f"STATUS=serving; instance {app[CONTEXT].instance_id}")
            watchdog = asyncio.create_task(notifier.keep_alive(lambda: not engine.done()))
            await asyncio.wait({engine, stopper}, return_when=asyncio.FIRST_COMPLETED)
            watchdog.cancel()
        ready.cancel()
        stopper.cancel()
        if engine.done():
            engine.result()  # raises what killed it
            raise RuntimeError("the engine stopped on its own")
        log.info("shutting_down")
    finally:
        gcpolicy.at_exit()
        notifier.notify("STOPPING=1")
        # Signals stay handled while in-flight runs drain: a repeated SIGTERM
        # must not cut the grace period short.
        await app_runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if started:
        log.info("service_stopped", instance_id=app[SERVICES].instance_id)


def _log_started(app: web.Application, port: int) -> None:
    """Once the API listens: a process that could not has not started."""
    services = app[SERVICES]
    config = services.config
    log.info(
        "service_started",
        instance_id=services.instance_id,
        host=config.server.host,
        port=port,
        store=config.store.url.split(":", 1)[0],
        api_tokens=len(config.server.api_tokens),
        rate_limit_per_s=config.limits.rate_limit_per_s,
    )
    if not config.server.api_tokens and not is_loopback(config.server.host):
        log.warning("api_unauthenticated", host=config.server.host)


def cannot_listen(host: str, port: int, exc: OSError) -> CannotListen:
    """What a failed listen on `host`:`port` says: the address, the cause in
    words, and the setting (and its variable) that would get past it."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    port_setting = "set server.port or CRONSVC_SERVER_PORT"
    host_setting = "set server.host or CRONSVC_SERVER_HOST"
    if isinstance(exc, socket.gaierror):
        cause = f"the name does not resolve ({host_setting})"
    elif exc.errno == errno.EADDRINUSE:
        cause = f"address already in use ({port_setting})"
    elif exc.errno == errno.EADDRNOTAVAIL:
        cause = f"the address is not one of this host's ({host_setting})"
    elif exc.errno == errno.EACCES and port < 1024:
        cause = f"permission denied: ports below 1024 need privileges ({port_setting})"
    else:
        # uvloop's strerror repeats the address; the system's text does not.
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        cause = (
            f"{reason} (check server.host and server.port, "
            "or CRONSVC_SERVER_HOST and CRONSVC_SERVER_PORT)"
        )
    return CannotListen(f"cannot listen on {shown}: {cause}")


def _usual_claim_s(store_url: str) -> float:
    """How long a batch's claim usually takes on this kind of store, until
    the claim pipeline has measured it: the claim lead starts from it. A networked
    store starting from the embedded file's few milliseconds fires a new
    cluster's first ticks late while the lead catches up."""
    return 0.005 if store_url.startswith("sqlite") else 0.5


def _bound_port(app_runner: web.AppRunner, default: int) -> int:
    for address in app_runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    return default
