"""The line's ISA-95 Job Control door (OPC 10031-4 v2), laid out as Machinery Jobs lays it out:
Plant/Lines/<line>/JobManagement with JobOrderControl (a job order receiver) and JobOrderResults
(a job response provider). A job and an order are one thing: the methods call the engine, and the
job order list, the response list and the status events follow the event stream, so an order
placed by SubmitOrder is a job here and a stored job is an order under Orders.

Every method answers Good with its outcome in ReturnStatus (the specification forbids a Bad status
where ReturnStatus is returned); a refusal also names the argument and the reason in the call's
diagnostics, in the audit trail and in a notice event (docs/isa95.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from asyncua import Node, Server, ua

from bridge.domain.events import OrderChanged, StepChanged
from bridge.domain.model import Order, OrderState, utcnow
from bridge.errors import OrderRejected, TryLater, UnknownOrder, WrongOrderState
from bridge.follow import Follower, at_most_every
from bridge.lifecycle import cancel_and_wait
from bridge.limits import LOGGED_TEXT_CHARS, clip
from bridge.opcua import asyncua_seams as seams
from bridge.opcua import isa95_jobs as jobs
from bridge.opcua import job_calls as calls
from bridge.opcua import names
from bridge.opcua.isa95_model import JOB_EVENT, PROVIDER_TYPE, SUBSTATES_TYPE
from bridge.opcua.isa95_types import STATE, structure
from bridge.opcua.job_calls import Refused
from bridge.opcua.line_calls import caller_client
from bridge.opcua.uatypes import tid
from bridge.security.rules import current_user
from bridge.security.users import at_least
from bridge.service import Bridge
from bridge.supervise import start_supervised

log = structlog.get_logger(__name__)

MAX_STORED = 100  # jobs stored and not started on one line (MaxDownloadableJobOrders): what an MES may park
ENDED_LISTED = 100  # ended jobs, not cleared, that JobOrderList and JobOrderResponseList keep (newest)
REFRESH_S = 0.2  # the lists are rewritten at most this often, however fast the line runs
ACCESS_DENIED = 1 << 33  # implementation-specific ReturnStatus bit: the caller's role may not do this
PREPARED = (OrderState.RECEIVED, OrderState.QUEUED, OrderState.STORED)  # no response yet: not started
AuditCaller = Callable[[str, str], None]


class JobControl:
    def __init__(
        self,
        bridge: Bridge,
        server: Server,
        line_ns: int,
        jc_ns: int,
        types_ns: int,
        audit_caller: AuditCaller,
        notice: Callable[[str, int], Awaitable[None]],
        retention_s: float,
        watched: Callable[[ua.NodeId], bool],
    ) -> None:
        self.bridge, self.server, self.watched = bridge, server, watched
        self.line_ns, self.jc_ns, self.types_ns = line_ns, jc_ns, types_ns
        self.audit_caller, self.notice, self.retention_s = audit_caller, notice, retention_s
        self.path = names.Paths(bridge.mapping.line.name).job_management
        self._jobs: dict[str, Order] = {}  # the job order list: active orders, then ended ones not cleared
        self._responses: dict[str, Any] = {}  # job id → its response, built again when it changed
        self._entries: dict[str, Any] = {}  # job id → its JobOrderList entry, likewise
        self._states: dict[str, int] = {}  # job id → the top-level state last announced
        self._dirty = asyncio.Event()
        self._follower = Follower(bridge.events, "opcua-jobs", (OrderChanged, StepChanged), self._on_event)
        self._events: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _nid(self, name: str) -> ua.NodeId:
        return ua.NodeId(f"{self.path}.{name}", self.line_ns)

    # -- the address space -----------------------------------------------------------------

    async def build(self, line: Node) -> None:
        management = await line.add_object(
            ua.NodeId(self.path, self.line_ns), ua.QualifiedName("JobManagement", self.line_ns)
        )
        self.receiver = await management.add_object(
            self._nid("JobOrderControl"), ua.QualifiedName("JobOrderControl", self.line_ns),
            objecttype=ua.NodeId(SUBSTATES_TYPE, self.jc_ns),
        )  # fmt: skip
        self.provider = await management.add_object(
            self._nid("JobOrderResults"), ua.QualifiedName("JobOrderResults", self.line_ns),
            objecttype=ua.NodeId(PROVIDER_TYPE, self.jc_ns),
        )  # fmt: skip
        receiver_methods = {
            "Store": self._store, "StoreAndStart": self._store_and_start, "Update": self._update,
            "Start": self._by_id("start", self.bridge.engine.start_order),
            "RevokeStart": self._by_id("revoke_start", self.bridge.engine.revoke_start),
            "Pause": self._by_id("pause", self.bridge.engine.pause_order),
            "Resume": self._by_id("resume", self.bridge.engine.resume_order),
            "Stop": self._by_id("stop", self.bridge.engine.stop_order),
            "Abort": self._by_id("abort", self.bridge.engine.abort_order),
            "Cancel": self._by_id("cancel", self.bridge.engine.cancel_job),
            "Clear": self._by_id("clear", self._clear),
        }  # fmt: skip
        for name, handler in receiver_methods.items():
            self.server.link_method(self.server.get_node(self._nid(f"JobOrderControl.{name}")), handler)
        provider = {
            "RequestJobResponseByJobOrderID": self._response_by_id,
            "RequestJobResponseByJobOrderState": self._responses_by_state,
        }
        for name, handler in provider.items():
            self.server.link_method(self.server.get_node(self._nid(f"JobOrderResults.{name}")), handler)
        mapping = self.bridge.mapping
        await self._write("JobOrderControl.WorkMaster", jobs.work_masters(mapping, self.jc_ns))
        await self._write("JobOrderControl.EquipmentID", list(mapping.stations), ua.VariantType.String)
        await self._write(
            "JobOrderControl.MaxDownloadableJobOrders", ua.UInt16(MAX_STORED), ua.VariantType.UInt16
        )
        for node in (self.receiver, self.provider):
            await node.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
            await line.add_reference(node.nodeid, ua.ObjectIds.HasNotifier)

    async def _write(
        self, name: str, value: Any, vtype: ua.VariantType = ua.VariantType.ExtensionObject
    ) -> None:
        await self.server.write_attribute_value(self._nid(name), ua.DataValue(ua.Variant(value, vtype)))

    async def start(self) -> None:
        """The job order list as it stands, then the stream that keeps it current."""
        self._follower.subscribe()  # before the orders are read: nothing falls in between
        since = utcnow() - timedelta(seconds=self.retention_s)
        for order in self.bridge.journal.jobs_ended_since(since, ENDED_LISTED):
            self._jobs[order.order_id] = order
        for order in self.bridge.engine.active_orders():
            self._jobs[order.order_id] = order
        self._states = {job_id: _number(order) for job_id, order in self._jobs.items()}
        event_type = tid(self.types_ns, JOB_EVENT)
        self._events = [
            await self.server.get_event_generator(event_type, self.receiver.nodeid),
            await self.server.get_event_generator(event_type, ua.ObjectIds.Server),
        ]
        await self._publish()
        await self._follower.start()
        start_supervised(self._tasks, "opcua-job-lists", self._refresh)

    async def stop(self) -> None:
        await self._follower.stop()
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    # -- following the line ----------------------------------------------------------------

    async def _on_event(self, event: OrderChanged | StepChanged) -> None:
        order = event.order
        if isinstance(event, StepChanged) and order.order_id not in self._jobs:
            return
        self._hold(order)
        self._dirty.set()
        if isinstance(event, OrderChanged) and self._states.get(order.order_id) != _number(order):
            self._states[order.order_id] = _number(order)
            await self._announce(order, event.event.message)

    async def _announce(self, order: Order, message: str) -> None:
        """A job status event: the job order, its state and its response (only while a monitored
        item watches events: see PlantModel.fire)."""
        if not seams.events_watched(self.server.iserver):
            return
        mapping = self.bridge.mapping
        entry = self._entry(order)  # built once: the job order list shows the same
        for generator in self._events:
            event = generator.event
            event.JobOrder, event.JobState = entry.JobOrder, entry.State
            event.JobResponse = self._response(order)
            event.Severity = 700 if order.state == OrderState.FAULTED else 300
            event.SourceName = mapping.line.name
            text = f"job {order.order_id}: {jobs.STATE_NAMES[_number(order)]}"
            await generator.trigger(message=f"{text} ({message})" if message else text)

    async def _refresh(self) -> None:
        await at_most_every(REFRESH_S, self._dirty, self._publish)

    async def _publish(self) -> None:
        """JobOrderList and JobOrderResponseList from the jobs held, ended ones trimmed to the newest.

        A list that no monitored item watches is built when it is read, not at each change: with
        no MES subscribed the lists cost the line nothing while it runs (each change of a step
        rebuilt a job's entry and response), and a Read or a new monitored item (asyncua reads
        its first value the same way) still gets the list as it stands."""
        ended = [job_id for job_id, order in self._jobs.items() if order.state.is_final]
        for job_id in ended[: max(0, len(ended) - ENDED_LISTED)]:
            self._forget(job_id)
        for name, build in (
            ("JobOrderControl.JobOrderList", self._order_list),
            ("JobOrderResults.JobOrderResponseList", self._response_list),
        ):
            nodeid = self._nid(name)
            if self.watched(nodeid):
                await self._write(name, build())
            else:  # a write clears the callback, so a monitored item gets writes from then on
                self.server.iserver.set_attribute_value_callback(nodeid, _when_read(build))

    def _order_list(self) -> list[Any]:
        return [self._entry(o) for o in self._jobs.values()]

    def _response_list(self) -> list[Any]:
        return [self._response(o) for o in self._jobs.values() if o.state not in PREPARED]

    def _hold(self, order: Order) -> None:
        """`order` changed: held (an ended one last, so the oldest ended go first), rebuilt when shown."""
        if order.state.is_final:
            self._jobs.pop(order.order_id, None)
        self._jobs[order.order_id] = order
        self._responses.pop(order.order_id, None)
        self._entries.pop(order.order_id, None)

    def _forget(self, job_id: str) -> None:
        for held in (self._jobs, self._responses, self._entries, self._states):
            held.pop(job_id, None)

    def _entry(self, order: Order) -> Any:
        entry = self._entries.get(order.order_id)
        if entry is None:
            job = jobs.job_order(order, self.bridge.mapping, self.jc_ns)
            entry = structure(jobs.AND_STATE, self.jc_ns)(
                JobOrder=job, State=jobs.job_state(order.state, self.jc_ns)
            )
            self._entries[order.order_id] = entry
        return entry

    def _response(self, order: Order) -> Any:
        response = self._responses.get(order.order_id)
        if response is None:
            response = jobs.job_response(order, self.bridge.mapping, self.jc_ns)
            self._responses[order.order_id] = response
        return response

    # -- the receiver's methods -------------------------------------------------------------

    async def _store(self, parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        return await self._answer("store", args, lambda: self._store_job(args, start=False))

    async def _store_and_start(self, parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        return await self._answer("store_and_start", args, lambda: self._store_job(args, start=True))

    async def _update(self, parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        async def update() -> str:
            order = await self.bridge.engine.update_order(calls.request(args, self.jc_ns))
            return order.order_id

        return await self._answer("update", args, update)

    async def _store_job(self, args: tuple[ua.Variant, ...], *, start: bool) -> str:
        request = calls.request(args, self.jc_ns)
        if not start and self.bridge.engine.stored_orders() >= MAX_STORED:
            raise Refused(
                jobs.UNABLE_TO_ACCEPT, f"{MAX_STORED} jobs are stored and not started: start or cancel one"
            )
        order = await self.bridge.engine.store_order(request, start=start, client=caller_client())
        return order.order_id

    def _by_id(self, action: str, command: Callable[[str], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def method(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
            async def run() -> str:
                job_id = calls.job_id(args)
                await command(job_id)
                return job_id

            return await self._answer(action, args, run)

        return method

    async def _clear(self, job_id: str) -> None:
        await self.bridge.engine.clear_order(job_id)
        self._forget(job_id)

    async def _answer(
        self, action: str, args: tuple[ua.Variant, ...], run: Callable[[], Awaitable[str]]
    ) -> ua.CallMethodResult:
        """Run one Job Control call as the caller's role allows; its ReturnStatus, audited."""
        comment = calls.comment(args)
        try:
            user = current_user.get()
            if user is not None and not at_least(user.lb_role, "operator"):
                raise Refused(
                    jobs.INVALID_REQUEST | ACCESS_DENIED, f"role {user.lb_role} may not {action} jobs", None
                )
            job_id = await run()
        except Refused as refused:
            return await self._refused(action, args, refused, comment)
        except UnknownOrder as exc:
            return await self._refused(action, args, Refused(jobs.UNKNOWN_JOB_ORDER_ID, exc.reason), comment)
        except WrongOrderState as exc:
            return await self._refused(
                action, args, Refused(jobs.INVALID_JOB_ORDER_STATUS, exc.reason), comment
            )
        except OrderRejected as exc:
            reason = f"{jobs.job_field(exc.field)}: {exc.reason}"
            return await self._refused(action, args, Refused(jobs.UNABLE_TO_ACCEPT, reason), comment)
        except TryLater as exc:  # a full journal or a full line: not the caller's fault, not for ever
            return await self._refused(action, args, Refused(jobs.UNABLE_TO_ACCEPT, str(exc)), comment)
        order = self.bridge.engine.get_active(job_id) or (
            None if action == "clear" else self.bridge.get(job_id)
        )
        if order is not None:  # the list shows what the call did when it returns, not a moment later
            self._hold(order)
        await self._publish()
        self.audit_caller(f"job_{action}", f"ok {job_id}{comment}")
        log.info("job_command", action=action, order_id=job_id)
        return calls.result(jobs.OK, len(args))

    async def _refused(
        self, action: str, args: tuple[ua.Variant, ...], refused: Refused, comment: str
    ) -> ua.CallMethodResult:
        reason = clip(refused.reason, LOGGED_TEXT_CHARS)
        if self.audit_caller(f"job_{action}", f"refused: {reason}{comment}"):  # else only counted
            log.warning("job_refused", action=action, bits=refused.bits, reason=reason)
            await self.notice(f"job {action} refused: {reason}", 500)
        return calls.result(refused.bits, len(args), refused.argument, reason)

    # -- the response provider's methods ---------------------------------------------------------

    async def _response_by_id(self, parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        try:
            job_id = calls.job_id(args)
        except Refused as refused:
            answer = calls.result(refused.bits, len(args), 0, refused.reason)
            return calls.with_outputs(answer, structure(jobs.RESPONSE, self.jc_ns)())
        order = self._jobs.get(job_id) or self.bridge.get(job_id)
        if order is None:
            empty = structure(jobs.RESPONSE, self.jc_ns)(JobOrderID=job_id, JobState=[])
            reason = f"no job {clip(repr(job_id), 60)}"
            return calls.with_outputs(calls.result(jobs.UNKNOWN_JOB_ORDER_ID, 1, 0, reason), empty)
        return calls.with_outputs(calls.result(jobs.OK, 1), self._response(order))

    async def _responses_by_state(self, parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        """The responses of the listed jobs in the state asked for: its top-level state first, then
        any sub-states, each of which the job must be in too."""
        wanted = args[0].Value if len(args) == 1 and isinstance(args[0].Value, list) else None
        if not wanted or not all(isinstance(s, structure(STATE, self.jc_ns)) for s in wanted):
            reason = "JobOrderState: ISA95StateDataType[], the top-level state first"
            return calls.with_outputs(calls.result(jobs.INVALID_REQUEST, len(args), 0, reason), [])
        asked = [calls.state_key(s) for s in wanted]
        found = []
        for order in self._jobs.values():
            has = {calls.state_key(s) for s in jobs.job_state(order.state, self.jc_ns)}
            if all(key in has for key in asked):
                found.append(self._response(order))
        return calls.with_outputs(calls.result(jobs.OK, 1), found)


def _when_read(build: Callable[[], list[Any]]) -> Callable[[ua.NodeId, ua.AttributeIds], ua.DataValue]:
    """A value callback (asyncua calls it on each Read) that builds the list as it stands then.

    asyncua lets an exception in it fail the client's whole Read request (BadInternalError for
    every node asked for), so a list that cannot be built is this node's Bad status alone."""

    def value(nodeid: ua.NodeId, attr: ua.AttributeIds) -> ua.DataValue:
        try:
            return ua.DataValue(ua.Variant(build(), ua.VariantType.ExtensionObject))
        except Exception:
            log.exception("job_list_not_built", node=nodeid.to_string())
            return ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadInternalError))

    return value


def _number(order: Order) -> int:
    return jobs.STATE_NUMBERS[order.state]
