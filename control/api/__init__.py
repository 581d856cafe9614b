"""The control plane's HTTP API: one router per resource, JSON under ``/v1/``.

| module | routes | caller |
|---|---|---|
| :mod:`~control.api.health` | ``/healthz``, ``/readyz`` | anyone |
| :mod:`~control.api.tenants` | tenants and their API keys | the operator |
| :mod:`~control.api.staff` | staff members, console tokens | a tenant |
| :mod:`~control.api.links` | call links | a tenant |
| :mod:`~control.api.calls` | the click, answer, decline, hang up, the tenant's calls | visitor, staff, tenant |
| :mod:`~control.api.credentials` | raw relay credentials, revoking tokens | a tenant |
| :mod:`~control.api.nodes` | relay heartbeats, the registry | relay nodes, the operator |
| :mod:`~control.api.calllogs` | relay summaries in; call logs, analytics, aggregates out | nodes, tenant, operator |
| :mod:`~control.api.subjects` | data-subject requests, the audit log | a tenant |
| :mod:`~control.api.signalling` | the call's and the staff console's WebSockets | parties, staff |
| :mod:`~control.api.visitors` | link status, connection check, fresh ICE, callback requests | visitors |
| :mod:`~control.api.sessions` | console sign-in, sign-out, invitations; the cookie and CSRF | staff |
| :mod:`~control.api.console` | ``/v1/me``, console tokens, callback requests for staff | staff |
| :mod:`~control.api.dashboard` | the dashboard's staff and API keys (``/v1/dashboard/``) | admins |
| :mod:`~control.api.dashboard_links` | the dashboard's links and their QR codes | admins |
| :mod:`~control.api.dashcalls` | the dashboard's call log, call detail and CSV | admins |
| :mod:`~control.api.dashprivacy` | the dashboard's privacy requests, audit log, settings | admins |
| :mod:`~control.api.dashanalytics` | the dashboard's analytics (the API's figures) | admins |
| :mod:`~control.api.webhooks` | webhook endpoints, secrets, the delivery log | a tenant |
| :mod:`~control.api.dashhooks` | the dashboard's webhooks | admins |
| :mod:`~control.api.account` | one's password, two-factor sign-in (``/v1/account/``) | staff, admins |
| :mod:`~control.api.cors` | CORS for the button's two public endpoints, and no other | anyone |

:mod:`~control.api.deps` holds what they share (context, errors, parameters, authentication);
a new resource is a new module here with a ``router``, listed in :data:`ROUTERS`.
"""

from __future__ import annotations

from fastapi import APIRouter

from control.api import (
    account,
    calllogs,
    calls,
    console,
    cors,
    credentials,
    dashanalytics,
    dashboard,
    dashboard_links,
    dashcalls,
    dashhooks,
    dashprivacy,
    health,
    links,
    nodes,
    sessions,
    signalling,
    staff,
    subjects,
    tenants,
    visitors,
    webhooks,
)

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    tenants.router,
    staff.router,
    links.router,
    calls.router,
    credentials.router,
    nodes.router,
    calllogs.router,
    subjects.router,
    signalling.router,
    visitors.router,
    sessions.router,
    console.router,
    dashboard.router,
    dashboard_links.router,
    dashcalls.router,
    dashprivacy.router,
    dashanalytics.router,
    account.router,
    webhooks.router,
    dashhooks.router,
    cors.router,
)
