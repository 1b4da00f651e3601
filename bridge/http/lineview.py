"""The live line view: one page drawn from the mapping, kept current by Server-Sent Events.

`/` is the page (no build step: plain HTML and JavaScript, `lineview_page.py`); `/api/line` the
line as JSON; `/api/events` the same, pushed whenever it changes (checked twice a second, so the
page is at most half a second behind the bridge); `POST /api/orders` submits an order with the same
checks and messages as the OPC UA method, and `POST /api/orders/{id}/cancel` cancels one;
`POST /api/alarms/{id}/ack` and `/confirm` answer an alarm of the banner as its OPC UA twins do,
`/unshelve` and `/enable` put one back in service;
`/api/trends/{station}/{field}?minutes=N` is a field's trend.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bridge.alarms.book import AlarmBook
from bridge.domain.alarm_condition import AlarmRefused, AlarmState, Refusal
from bridge.domain.events import OrderChanged, StationScanned
from bridge.domain.model import Order
from bridge.errors import JournalUnavailable, OrderFinished, OrderRejected, TryLater, UnknownOrder
from bridge.follow import Follower
from bridge.handshake import PlcState, station_state
from bridge.http.guard import read_json
from bridge.http.lineview_page import PAGE
from bridge.limits import HTTP_BODY_BYTES, LOGGED_TEXT_CHARS, OPTIONS_JSON_DEPTH, clip
from bridge.mapping.model import alternatives
from bridge.mapping.vocabulary import is_number
from bridge.security.refusals import client_of
from bridge.service import Bridge

PUSH_EVERY_S = 0.5
KEEP_FINISHED = 50  # finished orders the page still shows
SPARK_POINTS = 60  # the last values of a field the snapshot carries for its sparkline
TREND_KEEP = 1_200  # (time, value) kept per field in memory, for trends when no history store answers
TREND_MINUTES = (1, 60)  # what a trend may ask for
TREND_POINTS_MAX = 600  # a trend's points are thinned to this many for the page
TrendSource = Callable[[str, str, float], Awaitable[list[tuple[float, Any]] | None]]


class LineView:
    def __init__(self, bridge: Bridge, audit: Callable[..., None] | None = None) -> None:
        self.bridge = bridge
        self.audit = audit  # every submit, cancel and alarm action, as its OPC UA twin
        self._finished: deque[Order] = deque(maxlen=KEEP_FINISHED)
        self._trends: dict[str, dict[str, deque[tuple[float, float]]]] = {}  # station → field → (t, value)
        # the history store (the OPC UA face's, when it runs): trends of minutes, across restarts
        self.trend_source: TrendSource | None = None
        self._scans: dict[str, StationScanned] = {}  # station → its last poll
        self._pushed: tuple[float, str] = (-1.0, "")  # when the pushed snapshot was made, and it
        self.follower = Follower(bridge.events, "line-view", (OrderChanged, StationScanned), self._on_event)

    async def _on_event(self, event: OrderChanged | StationScanned) -> None:
        if isinstance(event, OrderChanged):
            if event.event.state.is_final:
                self._finished.appendleft(event.order)
            return
        last = self._scans.get(event.station)
        self._scans[event.station] = event
        if last is not None and event.read_at == last.read_at:  # a failed poll: nothing new to trend
            return
        # the last values of each numeric telemetry field (bounded) for the trend lines
        trends = self._trends.setdefault(event.station, {})
        at = event.read_at or 0.0
        for name in event.read:
            value = event.telemetry.get(name)
            if is_number(value) and value == value:
                trends.setdefault(name, deque(maxlen=TREND_KEEP)).append((at, float(value)))

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page),
            Route("/api/line", self.line),
            Route("/api/events", self.events),
            Route("/api/orders", self.submit, methods=["POST"]),
            Route("/api/orders/{order_id}/cancel", self.cancel, methods=["POST"]),
            Route("/api/alarms/{alarm_id}/{action}", self.answer_alarm, methods=["POST"]),
            Route("/api/trends/{station}/{field}", self.trend),
        ]

    # -- what the page shows -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        mapping, engine = self.bridge.mapping, self.bridge.engine
        first = next(iter(mapping.products.values()))
        stations = {}
        for name in mapping.stations:
            stations[name] = self._station(name)
        active = engine.active_orders()
        shown = {o.order_id for o in active}
        orders = [*active, *(o for o in self._finished if o.order_id not in shown)]
        return {
            "line": mapping.line.name,
            "description": mapping.line.description,
            "route": [list(alternatives(step)) for step in first.route],
            "stations": stations,
            "orders": [_order(o) for o in orders],
            "refusing": self.bridge.refusing(),  # why a new order would be refused now, or None
            # the banner: what waits for an operator, the most severe first; shelved ones left out
            "alarms": [_alarm(a) for a in self.bridge.alarms.retained() if not a.shelved],
            # what an operator took out of the banner (shelved, or disabled): named, so it is not forgotten
            "out_of_service": [
                _out_of_service(a) for a in self.bridge.alarms.states.values() if a.shelved or not a.enabled
            ],
            "products": {
                pid: {"route": [list(alternatives(step)) for step in p.route], "options": _options(p.options)}
                for pid, p in mapping.products.items()
            },
        }

    def _station(self, name: str) -> dict[str, Any]:
        engine = self.bridge.engine
        step = engine.station_steps.get(name)
        info: dict[str, Any] = {
            "type": self.bridge.mapping.stations[name].type,
            "current_order": step.order_id if step else "",
        }
        scan = self._scans.get(name)  # None: not polled yet
        online = scan is not None and scan.counters.connected
        status = scan.status if scan is not None else None
        held = name in engine.station_errors or (scan is not None and scan.status_invalid)
        fields = self.bridge.mapping.resolved_fields(name)
        kind = self.bridge.mapping.station_type(name)
        info.update(
            state=station_state(online, held, status),
            connected=online,
            # cycles finished, as a PLC's cycle counter counts them: a running step is not one yet
            cycle_count=status.executed_count - (status.state == PlcState.BUSY) if status else None,
            telemetry={k: _plain(v) for k, v in scan.telemetry.items()} if scan is not None else {},
            trends={k: [v for _, v in itertools.islice(reversed(points), SPARK_POINTS)][::-1]
                    for k, points in self._trends.get(name, {}).items()},
            units={n: fields[n].unit or "" for n in kind.telemetry},
            # the mapping's range: the scale of sparklines and trends (not the noise's)
            ranges={n: [fields[n].min, fields[n].max] for n in kind.telemetry},
            precision={n: fields[n].precision for n in kind.telemetry if fields[n].precision is not None},
            # when the values were read (seconds since the epoch): the page shows their age, and
            # marks them stale when the PLC stopped answering
            read_at=scan.read_at if scan is not None else None,
            alarms=[a.definition.name for a in self.bridge.alarms.states.values()
                    if a.active and a.definition.station == name],
        )  # fmt: skip
        return info

    # -- endpoints -----------------------------------------------------------------------------

    def _snapshot_text(self) -> str:
        """The snapshot as JSON, made at most once per push interval whatever the number of pages
        open (each stream asks for it every interval)."""
        made, text = self._pushed
        now = asyncio.get_running_loop().time()
        if now - made >= PUSH_EVERY_S / 2:
            text = json.dumps(self.snapshot(), separators=(",", ":"))
            self._pushed = (now, text)
        return text

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def line(self, request: Request) -> Response:
        return JSONResponse(self.snapshot())

    async def events(self, request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            last = ""
            quiet = 0
            while not await request.is_disconnected():
                text = self._snapshot_text()
                if text != last:
                    last, quiet = text, 0
                    yield f"data: {text}\n\n"
                else:
                    quiet += 1
                    if quiet % 20 == 0:  # a comment every 10 s keeps proxies from closing the stream
                        yield ": still here\n\n"
                await asyncio.sleep(PUSH_EVERY_S)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def submit(self, request: Request) -> Response:
        body, refusal = await read_json(request.stream, HTTP_BODY_BYTES, OPTIONS_JSON_DEPTH + 1)
        if refusal is not None:
            return JSONResponse({"field": "", "reason": refusal}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"field": "", "reason": "expected a JSON object"}, status_code=400)
        try:
            order = await self.bridge.submit(
                body.get("order_id"), body.get("product"), body.get("options") or {},
                quantity=body.get("quantity"), priority=body.get("priority", 0),
                client=client_of(*_who(request)),
            )  # fmt: skip
        except TryLater as exc:  # a full journal or a full line: not the caller's fault, not for ever
            self._audit(request, "order_submit", f"refused {_shown_id(body)}: {exc.reason}")
            return JSONResponse({"field": "", "reason": str(exc)}, status_code=503)
        except OrderRejected as exc:
            self._audit(request, "order_submit", f"refused {_shown_id(body)}: {exc}")
            return JSONResponse(
                {"field": exc.field, "reason": clip(str(exc), LOGGED_TEXT_CHARS)}, status_code=400
            )
        self._audit(request, "order_submit", f"ok {order.order_id}")
        return JSONResponse({"order_id": order.order_id, "state": str(order.state)})

    async def cancel(self, request: Request) -> Response:
        order_id = request.path_params["order_id"]
        try:
            order = await self.bridge.cancel(order_id)
        except UnknownOrder:
            self._audit(request, "order_cancel", f"refused {clip(order_id, 64)}: no such order")
            return JSONResponse({"reason": f"no order {clip(order_id, 64)!r}"}, status_code=404)
        except JournalUnavailable as exc:
            self._audit(request, "order_cancel", f"refused {clip(order_id, 64)}: {exc.reason}")
            return JSONResponse({"reason": str(exc)}, status_code=503)
        except OrderFinished as exc:
            self._audit(request, "order_cancel", f"refused {clip(order_id, 64)}: {exc.reason}")
            return JSONResponse({"reason": exc.reason}, status_code=409)
        self._audit(request, "order_cancel", f"ok {order_id}")
        return JSONResponse({"order_id": order.order_id, "state": str(order.state)})

    async def trend(self, request: Request) -> Response:
        """A telemetry field's values over the last `minutes` (1-60, default 10) with its unit and
        the mapping's range: from the history store when one answers, else from memory."""
        station, name = request.path_params["station"], request.path_params["field"]
        mapping = self.bridge.mapping
        if station not in mapping.stations or name not in mapping.station_type(station).telemetry:
            unknown = f"no telemetry {clip(station, 64)}.{clip(name, 64)}"
            return JSONResponse({"reason": unknown}, status_code=404)
        try:
            minutes = float(request.query_params.get("minutes", "10"))
        except ValueError:
            minutes = -1.0
        if not TREND_MINUTES[0] <= minutes <= TREND_MINUTES[1]:
            reason = f"minutes: a number from {TREND_MINUTES[0]} to {TREND_MINUTES[1]}"
            return JSONResponse({"reason": reason}, status_code=400)
        now = time.time()
        since, source = now - minutes * 60, "memory"
        points = await self.trend_source(station, name, since) if self.trend_source is not None else None
        if points is not None:
            source = "history"
        else:
            points = [p for p in self._trends.get(station, {}).get(name, ()) if p[0] >= since]
        numbers = [(t, float(v)) for t, v in points if is_number(v)]
        stride = max(1, -(-len(numbers) // TREND_POINTS_MAX))
        f = mapping.resolved_fields(station)[name]
        return JSONResponse({
            "station": station, "field": name, "unit": f.unit or "", "min": f.min, "max": f.max,
            "from": since, "to": now, "source": source,
            "points": [[round(t, 3), _plain(v)] for t, v in numbers[::stride]],
        })  # fmt: skip

    async def answer_alarm(self, request: Request) -> Response:
        """Acknowledge or confirm an alarm, with an optional {"comment": …}, or put one an operator
        took out of service back (unshelve, enable); refusals as OPC UA's."""
        alarm_id, action = request.path_params["alarm_id"], request.path_params["action"]
        if action not in _ALARM_ACTIONS:
            reason = f"no alarm action {clip(action, 32)!r} ({', '.join(_ALARM_ACTIONS)})"
            return JSONResponse({"reason": reason}, status_code=404)
        body, refusal = await read_json(request.stream, HTTP_BODY_BYTES, 2)
        if refusal is None and not isinstance(body, dict):
            refusal = 'expected a JSON object, e.g. {"comment": "…"}'
        if refusal is None and not isinstance(body.get("comment", ""), str):
            refusal = f"comment: text expected, got {type(body['comment']).__name__}"
        if refusal is not None:
            return JSONResponse({"reason": refusal}, status_code=400)
        user = request.scope.get("state", {}).get("user", ("",))[0] or "line view"
        comment = clip(body.get("comment", ""), 256)
        event = f"alarm_{action}"
        try:
            alarm = _ALARM_ACTIONS[action](self.bridge.alarms, alarm_id, user, comment)
        except AlarmRefused as exc:
            self._audit(request, event, f"refused {clip(alarm_id, 64)}: {exc.refusal}")
            status = 404 if exc.refusal is Refusal.UNKNOWN else 409
            return JSONResponse({"reason": str(exc)}, status_code=status)
        self._audit(request, event, f"ok {alarm_id}" + (f": {comment}" if comment else ""))
        return JSONResponse(_alarm(alarm))

    def _audit(self, request: Request, event: str, outcome: str) -> None:
        """Audited with or without --security, as OPC UA audits an anonymous session's calls: who
        changed the line is asked of the journal, not of the log files."""
        if self.audit is None:
            return
        user, channel = _who(request)
        self.audit(event, user, "", outcome, channel)


def _shown_id(body: dict[str, Any]) -> str:
    """A submitted order id as a refusal's audit shows it (whatever the client sent, clipped)."""
    return clip(str(body.get("order_id")), 64)


def _who(request: Request) -> tuple[str, str]:
    """The request's user (or anonymous) and channel, as the audit records them."""
    logged_in = request.scope.get("state", {}).get("user")
    if logged_in is not None:
        user, _role, channel = logged_in
        return str(user), str(channel)
    client = request.client
    return "anonymous", f"http {client.host}:{client.port}" if client else "http"


# what each POST /api/alarms/{id}/{action} does: (the book, the alarm, the user, the comment)
_ALARM_ACTIONS: dict[str, Callable[[AlarmBook, str, str, str], AlarmState]] = {
    "ack": lambda book, alarm, user, comment: book.acknowledge(alarm, user, comment),
    "confirm": lambda book, alarm, user, comment: book.confirm(alarm, user, comment),
    "unshelve": lambda book, alarm, user, _: book.unshelve(alarm, user),
    "enable": lambda book, alarm, user, _: book.enable(alarm, user),
}


def _out_of_service(alarm: AlarmState) -> dict[str, Any]:
    return {
        "id": alarm.alarm_id, "enabled": alarm.enabled, "active": alarm.active, "user": alarm.user,
        "shelving": alarm.shelving.value if alarm.shelved else "", "until": alarm.unshelve_at,
    }  # fmt: skip


def _alarm(alarm: AlarmState) -> dict[str, Any]:
    d = alarm.definition
    return {
        "id": alarm.alarm_id, "station": d.station, "name": d.name, "kind": d.kind,
        "severity": alarm.severity or d.severity, "active": alarm.active, "acked": alarm.acked,
        "confirmed": alarm.confirmed, "message": alarm.message, "limit": alarm.limit,
        "since": alarm.active_since or alarm.changed_at, "user": alarm.user, "comment": alarm.comment,
    }  # fmt: skip


def _order(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "product": order.product,
        "state": str(order.state),
        "quantity": order.quantity,
        "units_done": order.units_done,
        "current_station": order.current_station or "",
        "waiting_for": order.waiting_for or "",
        "fault_station": order.fault_station or "",
        "result_code": order.result_code or 0,
        "steps": [
            {
                "unit": s.unit_index,
                "route_index": s.route_index,
                "station": s.station,
                "seq": s.seq,
                "phase": str(s.phase),
                "result_code": s.result_code,
                "parameters": {k: _plain(v) for k, v in s.parameters.items()},
                "results": {k: _plain(v) for k, v in (s.results or {}).items()},
            }
            for s in order.steps
        ],
    }


def _options(options: dict[str, Any]) -> dict[str, Any]:
    shown = {}
    for name, option in options.items():
        shown[name] = {
            k: v
            for k, v in option.model_dump(mode="json").items()
            if k in ("type", "values", "default", "min", "max", "max_length", "description") and v is not None
        }
    return shown


def _plain(value: Any) -> Any:
    """A value JSON can carry: a number that is not finite becomes null."""
    if (isinstance(value, float) and value != value) or value in (float("inf"), float("-inf")):
        return None
    return value
