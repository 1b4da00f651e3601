"""ISA-95 Job Control over OPC UA, as an MES that knows only the specification uses it: a client in
a process of its own (tests/integration/job_client.py) finds the receiver and the response provider
by their types, stores and starts a job for AC-W with parameters, sees it run to Ended with a job
response holding station results, and gets the specification's ReturnStatus bits for what it may
not do. docs/isa95.md."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from asyncua import ua

from bridge.domain.model import OrderState
from bridge.handshake import PlcState
from bridge.http.lineview import LineView
from bridge.opcua import job_control
from bridge.opcua.isa95_jobs import (
    INVALID_JOB_ORDER_STATUS,
    INVALID_REQUEST,
    OK,
    UNABLE_TO_ACCEPT,
    UNKNOWN_JOB_ORDER_ID,
)
from bridge.opcua.isa95_types import JOB_ORDER, JOBCONTROL_URI, WORK_MASTER, structure
from bridge.opcua.job_control import ACCESS_DENIED
from bridge.security.pki import Pki
from tests.integration.conftest import NODE_DIR
from tests.integration.opcua_rig import opcua_rig, s
from tests.integration.orders import until
from tests.integration.secure_rig import secure_client, secured_rig
from tests.integration.test_isa95_types import run_client

CLIENT = str(Path(__file__).with_name("job_client.py"))


@pytest.fixture
async def rig(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        yield rig


async def test_an_mes_stores_starts_and_collects_a_job(rig) -> None:
    await rig.call("SubmitOrder", s("VIA-SUBMIT"), s("AC-W"), s("{}"))  # the other door
    await until(lambda: rig.bridge.get("VIA-SUBMIT").state == OrderState.COMPLETED)
    seen = await run_client(sys.executable, CLIENT, rig.url, "run")
    assert seen["listed"] == {"VIA-SUBMIT": 5}
    assert seen["work_masters"] == list(rig.bridge.mapping.products)
    assert seen["store"] == [OK, []]
    assert seen["update"] == [OK, []]
    assert seen["stored"] == 1  # NotAllowedToStart
    assert seen["start"] == [OK, []]
    assert seen["store_j3"] == [OK, []]
    assert seen["revoke_stored"][0] == INVALID_JOB_ORDER_STATUS
    assert (seen["cancel"], seen["cancelled"]) == ([OK, []], 6)  # Aborted
    assert await rig.node("Plant.Lines.ac_line.Orders.J1").read_browse_name()  # a job is an order
    charge = seen["response"].pop("charge")
    assert abs(charge - 1250) <= 10, "the charge station's result for 24000 BTU (ac_line.md)"
    assert seen["response"] == {
        "status": OK, "state": [["Ended", 5], ["Completed", 1]], "unit": "g",
        "units": ["unit0.serial", "unit1.serial"], "end": True,
    }  # fmt: skip
    assert seen["start_again"][0] == INVALID_JOB_ORDER_STATUS
    assert "is completed: start applies to stored" in seen["start_again"][1][0]
    assert seen["duplicate"][0] == UNABLE_TO_ACCEPT
    assert seen["duplicate"][1] == ["JobOrderID: an order with this id exists"]
    assert seen["unknown"][0] == UNKNOWN_JOB_ORDER_ID
    assert seen["out_of_range"][0] == UNABLE_TO_ACCEPT
    assert seen["out_of_range"][1][0].startswith("JobOrderParameters.capacity_btu: must be one of 9000")
    assert rig.bridge.get("J9") is None  # refused: nothing kept, nothing written
    assert seen["by_state"] == [OK, ["VIA-SUBMIT", "J1"]]
    assert seen["clear"] == [OK, []]
    assert seen["after_clear"] is False
    order = rig.bridge.get("J1")  # one order, two doors: the job is an order of the engine
    assert (order.state, order.quantity, order.options["capacity_btu"]) == (OrderState.COMPLETED, 2, 24000)


async def test_a_running_job_cannot_be_started_or_cleared_but_can_be_aborted(rig) -> None:
    chassis = rig.line["chassis"]
    await chassis.set_fault("stall", 1)
    seen = await run_client(sys.executable, CLIENT, rig.url, "running")
    assert seen["store_and_start"] == [OK, []]
    assert (seen["pause"], seen["paused"]) == ([OK, []], 4)  # Interrupted
    assert (seen["resume"], seen["resumed"]) == ([OK, []], 3)
    assert seen["start_running"][0] == INVALID_JOB_ORDER_STATUS
    assert seen["clear_running"][0] == INVALID_JOB_ORDER_STATUS
    assert "clear applies to an ended order" in seen["clear_running"][1][0]
    assert seen["abort"] == [OK, []]
    await chassis.set_fault("stall", 0)
    order = rig.bridge.get("J2")
    assert order.state == OrderState.FAULTED
    await chassis.wait_for(lambda plc: plc.status.state != PlcState.BUSY)  # its step was aborted


@pytest.mark.slow
async def test_an_observer_may_not_store_or_abort_a_job_over_a_secured_channel(ac_mapping, tmp_path) -> None:
    """The refusal is a ReturnStatus (invalid request, and bit 33: the role may not), the call
    Good as the specification requires; nothing is stored and the refusal is audited."""
    async with secured_rig(ac_mapping, tmp_path) as (rig, cert, _):
        outcomes = {}
        for user in ("otto", "olga"):
            async with secure_client(rig.url, cert, user, f"{user}-pw") as client:
                jc = await client.get_namespace_index(JOBCONTROL_URI)
                ns = await client.get_namespace_index("urn:linebridge:ac_line")
                receiver = client.get_node(ua.NodeId("Plant.Lines.ac_line.JobManagement.JobOrderControl", ns))
                # the classes of the server this process runs (job_client.py shows a client that has none)
                job = structure(JOB_ORDER, jc)(
                    JobOrderID=f"SEC-{user}", WorkMasterID=[structure(WORK_MASTER, jc)(ID="AC-W")]
                )
                store = await receiver.get_child(ua.QualifiedName("Store", jc))
                no_comment = ua.Variant([], ua.VariantType.LocalizedText)
                outcomes[user] = await receiver.call_method(store, ua.Variant(job), no_comment)
        assert outcomes == {"otto": INVALID_REQUEST | ACCESS_DENIED, "olga": OK}
        assert rig.bridge.get("SEC-otto") is None
        assert rig.bridge.get("SEC-olga").state == OrderState.STORED
        records = [r[1:3] + r[4:5] for r in rig.bridge.journal.load_audit()]
        assert ("job_store", "otto", "refused: role observer may not store jobs") in records
        assert ("job_store", "olga", "ok SEC-olga") in records


async def test_the_job_lists_are_built_when_read_and_written_while_a_client_monitors_them(rig) -> None:
    """Nobody monitoring: JobOrderList is built by a Read (asyncua's value callback), not written at
    each change. A monitored item gets the list as it stands, then every change as a write."""
    path = "Plant.Lines.ac_line.JobManagement.JobOrderControl.JobOrderList"
    value = rig.face.values.aspace[ua.NodeId(path, rig.ns)].attributes[ua.AttributeIds.Value]

    async def listed() -> set[str]:
        return {entry.JobOrder.JobOrderID for entry in await rig.node(path).read_value() or []}

    await rig.bridge.submit("LIST-1", "AC-W", {"capacity_btu": 9000})
    await until(lambda: value.value_callback is not None)
    assert "LIST-1" in await listed()

    changes: asyncio.Queue = asyncio.Queue()

    class Handler:
        def datachange_notification(self, node, val, data) -> None:
            changes.put_nowait({entry.JobOrder.JobOrderID for entry in val or []})

    subscription = await rig.client.create_subscription(20, Handler())
    await subscription.subscribe_data_change(rig.node(path))
    async with asyncio.timeout(10):
        assert "LIST-1" in await changes.get()  # the first value: the list as it stands
    await rig.bridge.submit("LIST-2", "AC-W", {"capacity_btu": 9000})
    async with asyncio.timeout(10):
        while "LIST-2" not in await changes.get():
            pass
    assert value.value_callback is None  # written, as a monitored list is
    await subscription.delete()
    await rig.bridge.submit("LIST-3", "AC-W", {"capacity_btu": 9000})
    await until(lambda: value.value_callback is not None)  # nobody watches: built when read again
    assert {"LIST-1", "LIST-2", "LIST-3"} <= await listed()


async def test_a_job_list_that_cannot_be_built_fails_its_node_not_the_whole_read(rig, monkeypatch) -> None:
    """A SCADA client reads the line in one request: a list the bridge cannot build is that node's
    Bad status, the other nodes are read as ever."""
    def broken(*args, **kwargs):
        raise RuntimeError("a job order the mapping no longer describes")

    monkeypatch.setattr(job_control.jobs, "job_order", broken)  # ours, not asyncua's
    await rig.bridge.submit("BROKEN-1", "AC-W", {"capacity_btu": 9000})
    listed = rig.node("Plant.Lines.ac_line.JobManagement.JobOrderControl.JobOrderList")
    stations = rig.node("Plant.Lines.ac_line.JobManagement.JobOrderControl.EquipmentID")
    values = await rig.client.read_attributes([listed, stations])
    assert values[0].StatusCode.value == ua.StatusCodes.BadInternalError
    assert values[1].StatusCode.is_good()
    assert "chassis" in values[1].Value.Value


@pytest.mark.interop
async def test_node_opcua_stores_starts_and_collects_a_job(rig, node_client) -> None:
    """The same walk with node-opcua, an independent stack (tests/node/jobs.mjs)."""
    node, script = node_client[0], str(NODE_DIR / "jobs.mjs")
    seen = await run_client(node, script, rig.url, "run")
    charge = seen["response"].pop("charge")
    assert abs(charge - 980) <= 10, "the charge station's result for 18000 BTU (ac_line.md)"
    assert seen["response"] == {"status": OK, "state": [5, 1], "unit": "g"}  # Ended, Completed
    assert (seen["store"], seen["stored"], seen["start"]) == (OK, 1, OK)
    assert seen["start_again"] == INVALID_JOB_ORDER_STATUS
    assert seen["duplicate"] == UNABLE_TO_ACCEPT
    assert seen["unknown"] == UNKNOWN_JOB_ORDER_ID
    assert seen["out_of_range"][0] == UNABLE_TO_ACCEPT
    assert seen["out_of_range"][1][0].startswith("JobOrderParameters.capacity_btu: must be one of")
    chassis = rig.line["chassis"]
    await chassis.set_fault("stall", 1)
    seen = await run_client(node, script, rig.url, "running")
    assert seen == {
        "store_and_start": OK, "start_running": INVALID_JOB_ORDER_STATUS,
        "clear_running": INVALID_JOB_ORDER_STATUS, "abort": OK,
    }  # fmt: skip
    await chassis.set_fault("stall", 0)
    assert rig.bridge.get("N2").state == OrderState.FAULTED


async def test_job_state_changes_are_announced_as_job_order_status_events(rig) -> None:
    """Events of the concrete subtype of ISA95JobOrderStatusEventType on the receiver, one per
    top-level state change, each carrying the job order, its state and its response."""
    events: asyncio.Queue = asyncio.Queue()

    class Handler:
        def event_notification(self, event) -> None:
            events.put_nowait(event)

    jc = await rig.client.get_namespace_index(JOBCONTROL_URI)
    receiver = rig.node("Plant.Lines.ac_line.JobManagement.JobOrderControl")
    subscription = await rig.client.create_subscription(20, Handler())
    event_type = rig.client.get_node(ua.NodeId("T.JobOrderStatusEventType", rig.types_ns))
    await subscription.subscribe_events(receiver, event_type)
    job = structure(JOB_ORDER, jc)(JobOrderID="J-EV", WorkMasterID=[structure(WORK_MASTER, jc)(ID="AC-W")])
    assert await receiver.call_method(ua.QualifiedName("Store", jc), ua.Variant(job)) == OK
    shown = {o["order_id"]: o["state"] for o in LineView(rig.bridge).snapshot()["orders"]}
    assert shown["J-EV"] == "stored"  # one order, two doors: the line view shows the stored job
    assert await receiver.call_method(ua.QualifiedName("Start", jc), "J-EV") == OK
    seen = []
    async with asyncio.timeout(20):
        while not seen or seen[-1].JobState[0].StateNumber != 5:
            seen.append(await events.get())
    assert [e.JobState[0].StateNumber for e in seen] == [1, 2, 3, 5]
    assert [(s.StateText.Text, s.StateNumber) for s in seen[-1].JobState] == [("Ended", 5), ("Completed", 1)]
    assert {e.JobOrder.JobOrderID for e in seen} == {"J-EV"}
    assert seen[-1].Message.Text == "job J-EV: Ended (all units done)"
    assert any(p.ID == "unit0.pack.result_code" for p in seen[-1].JobResponse.JobResponseData)
    await subscription.delete()


@pytest.mark.interop
@pytest.mark.slow
async def test_node_opcua_as_an_observer_is_refused_a_store_by_its_return_status(
    ac_mapping, tmp_path, node_client
):
    node, script = node_client[0], str(NODE_DIR / "jobs.mjs")
    async with secured_rig(ac_mapping, tmp_path) as (rig, _, _):
        pki_args = (str(tmp_path / "node-pki"), "otto", "otto-pw")
        first = await run_node_client(node, script, rig.url, "observer", *pki_args)
        assert "refused" in first  # its certificate is not trusted yet
        pki = Pki(tmp_path / "pki")
        (rejected,) = pki.certificates(pki.rejected)
        pki.move(rejected[0][:8], pki.rejected, pki.trusted)  # what `linebridge pki trust` does
        seen = await run_client(node, script, rig.url, "observer", *pki_args)
        assert seen == {"store": INVALID_REQUEST | ACCESS_DENIED}
        assert rig.bridge.get("N-OBS") is None


async def run_node_client(*args: str) -> dict:
    """A client expected to be refused: its JSON line, whatever its exit code."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(90):
        out, err = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, err.decode()[-2000:]
    return json.loads(lines[-1])


async def test_stored_jobs_are_capped_and_a_comment_reaches_the_audit_trail(rig, monkeypatch) -> None:
    """MaxDownloadableJobOrders is a cap: past it a Store is refused (unable to accept) with the
    reason, until a stored job is started or cancelled; the caller's Comment is audited."""
    monkeypatch.setattr(job_control, "MAX_STORED", 2)
    jc = await rig.client.get_namespace_index(JOBCONTROL_URI)
    receiver = rig.node("Plant.Lines.ac_line.JobManagement.JobOrderControl")
    comment = ua.Variant([ua.LocalizedText("shift B, line 3")], ua.VariantType.LocalizedText)

    async def store(job_id: str) -> int:
        job = structure(JOB_ORDER, jc)(
            JobOrderID=job_id, WorkMasterID=[structure(WORK_MASTER, jc)(ID="AC-W")]
        )
        return await receiver.call_method(ua.QualifiedName("Store", jc), ua.Variant(job), comment)

    assert [await store("CAP-1"), await store("CAP-2"), await store("CAP-3")] == [OK, OK, UNABLE_TO_ACCEPT]
    assert rig.bridge.get("CAP-3") is None
    assert await receiver.call_method(ua.QualifiedName("Cancel", jc), "CAP-1") == OK
    assert await store("CAP-3") == OK
    outcomes = [r[4] for r in rig.bridge.journal.load_audit() if r[1] == "job_store"]
    assert "ok CAP-1 (comment: shift B, line 3)" in outcomes
    assert (
        "refused: 2 jobs are stored and not started: start or cancel one (comment: shift B, line 3)"
        in outcomes
    )
