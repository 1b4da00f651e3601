"""The order queue is bounded: past its open-order limits, in all or from one client, a submit is
refused with the limit named (OPC UA BadResourceUnavailable, HTTP 503, ISA-95 UnableToAccept)
and nothing is journaled; room comes back as orders end (docs/engine.md, "Open-order limits")."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import Client, ua

from bridge.domain.admission import OpenOrderLimits
from bridge.domain.model import OrderState
from bridge.errors import LineFull
from bridge.http.server import HttpFace, HttpSettings
from bridge.mapping import apply_deployment
from bridge.opcua.isa95_jobs import UNABLE_TO_ACCEPT
from bridge.opcua.isa95_types import JOB_ORDER, JOBCONTROL_URI, WORK_MASTER, structure
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from tests.integration.http_calls import post_json
from tests.integration.opcua_rig import Events, from_another_host, opcua_rig
from tests.integration.orders import until
from tests.integration.shell import cli

s = ua.Variant


async def test_past_its_open_order_limits_a_submit_is_refused_naming_the_limit(ac_mapping, tmp_path):
    limits = OpenOrderLimits(per_line=4, per_client=2)
    async with opcua_rig(ac_mapping, tmp_path / "data", open_orders=limits) as rig:
        bridge = rig.bridge
        await rig.line["chassis"].set_fault("stall", 1)  # orders stay open while the test runs
        notices = Events()  # a SCADA's event list
        subscription = await rig.client.create_subscription(50, notices)
        await subscription.subscribe_events(rig.client.nodes.server)
        http = HttpFace(bridge, HttpSettings(port=0))
        await http.start()
        try:

            async def submit(order_id: str) -> ua.CallMethodResult:
                return await rig.call("SubmitOrder", s(order_id), s("AC-W"), s("{}"))

            # an anonymous OPC UA client (no --security) is known by its address
            assert [(await submit(i)).StatusCode.is_good() for i in ("UA-1", "UA-2")] == [True, True]
            third = await submit("UA-3")
            assert third.StatusCode.value == ua.StatusCodes.BadResourceUnavailable
            held = (
                "client 'anonymous@127.0.0.1' holds 2 open orders, as many as one client may"
                " (--max-open-orders-per-client)"
            )
            assert third.InputArgumentDiagnosticInfos[0].AdditionalInfo == held
            assert (await submit("UA-1")).StatusCode.is_good()  # the same order again is no new one
            # the same host through the line view is the same client
            order = {"order_id": "WEB-1", "product": "AC-W", "options": {}}
            assert await asyncio.to_thread(post_json, http.address + "/api/orders", order) == (503, held)
            # another client still has room, up to the line's limit
            await bridge.submit("CLI-1", "AC-W", {}, client="--submit")
            await bridge.submit("CLI-2", "AC-W", {}, client="--submit")
            with pytest.raises(LineFull, match=r"^the line holds 4 open orders, as many as it takes"):
                await bridge.submit("CLI-3", "AC-W", {}, client="--submit")
            order = {**order, "order_id": "WEB-2"}
            full = "the line holds 4 open orders, as many as it takes (--max-open-orders)"
            assert await asyncio.to_thread(post_json, http.address + "/api/orders", order) == (503, full)
            accepting = rig.node("Plant.Lines.ac_line.AcceptingOrders")  # an MES may look first
            async with asyncio.timeout(10):
                while await accepting.read_value():  # noqa: ASYNC110 - the face looks twice a second
                    await asyncio.sleep(0.05)
            assert await rig.node("Plant.Lines.ac_line.OrderRefusal").read_value() == full
            refusing = await notices.until(lambda e: e.Message.Text.startswith("new orders are refused: "))
            assert refusing.Message.Text == f"new orders are refused: {full}"
            code, out, err = await cli("order", "list", "--endpoint", rig.url)  # the shell says so too
            assert code == 0, err
            assert f"new orders are refused: {full}" in err
            assert "UA-1" in out
            jc = await rig.client.get_namespace_index(JOBCONTROL_URI)
            receiver = rig.node("Plant.Lines.ac_line.JobManagement.JobOrderControl")
            work_master = [structure(WORK_MASTER, jc)(ID="AC-W")]
            job = structure(JOB_ORDER, jc)(JobOrderID="J-1", WorkMasterID=work_master)
            store = await receiver.get_child(ua.QualifiedName("Store", jc))
            call = ua.CallMethodRequest(
                ObjectId=receiver.nodeid, MethodId=store.nodeid, InputArguments=[ua.Variant(job)]
            )
            (stored,) = await rig.client.uaclient.call([call])  # an MES hears it as ISA-95 says:
            assert stored.OutputArguments[0].Value == UNABLE_TO_ACCEPT
            assert [d.AdditionalInfo for d in stored.InputArgumentDiagnosticInfos] == [full]
            for refused in ("UA-3", "WEB-1", "WEB-2", "CLI-3", "J-1"):  # nothing of them journaled
                assert bridge.get(refused) is None
            audited = [row[4] for row in bridge.journal.load_audit(100)]  # but every door audited it
            assert f"refused UA-3: {third.InputArgumentDiagnosticInfos[0].AdditionalInfo}" in audited
            assert f"refused WEB-2: {full}" in audited
            # an order that ends (cancelled while it waits) gives its client its place back
            assert bridge.get("UA-2").state == OrderState.QUEUED
            cancelled = await rig.call("CancelOrder", s("UA-2"))
            assert cancelled.StatusCode.is_good()
            await until(lambda: bridge.engine.open_orders == 3)
            async with asyncio.timeout(10):
                while not await accepting.read_value():  # noqa: ASYNC110 - the face looks twice a second
                    await asyncio.sleep(0.05)
            assert await rig.node("Plant.Lines.ac_line.OrderRefusal").read_value() == ""
            await notices.until(lambda e: e.Message.Text == "new orders are accepted again")
            assert (await submit("UA-3")).StatusCode.is_good()
        finally:
            await http.stop()


async def test_anonymous_opcua_clients_on_two_hosts_each_have_their_share(ac_mapping, tmp_path):
    """No --security: each caller is known by its address, in the limit and in the audit."""
    limits = OpenOrderLimits(per_line=10, per_client=1)
    async with opcua_rig(ac_mapping, tmp_path / "data", open_orders=limits) as rig:
        await rig.line["chassis"].set_fault("stall", 1)  # orders stay open while the test runs
        assert (await rig.call("SubmitOrder", s("A-1"), s("AC-W"), s("{}"))).StatusCode.is_good()
        refused = await rig.call("SubmitOrder", s("A-2"), s("AC-W"), s("{}"))
        assert refused.StatusCode.value == ua.StatusCodes.BadResourceUnavailable
        why = refused.InputArgumentDiagnosticInfos[0].AdditionalInfo
        assert why.startswith("client 'anonymous@127.0.0.1' holds 1 open orders")
        async with from_another_host(rig.url) as url, Client(url, timeout=10) as other:
            line = other.get_node(ua.NodeId("Plant.Lines.ac_line", rig.ns))
            method = ua.NodeId("Plant.Lines.ac_line.SubmitOrder", rig.ns)
            await line.call_method(method, "B-1", "AC-W", "{}")
        assert rig.bridge.get("B-1").state == OrderState.QUEUED
        channels = {row[4]: row[5] for row in rig.bridge.journal.load_audit(100) if row[1] == "order_submit"}
        assert channels["ok A-1"].startswith("None/None 127.0.0.1:")
        assert channels["ok B-1"].startswith("None/None 127.0.0.2:")


async def test_a_restart_gives_each_client_back_the_open_orders_it_held(ac_mapping, tmp_path):
    settings = BridgeSettings(data_dir=tmp_path, open_orders=OpenOrderLimits(per_line=10, per_client=2))
    ports = dict.fromkeys(ac_mapping.stations, 0)
    async with SimulatedLine(ac_mapping, ports=ports, speed=0, seed=5) as line:
        await line["chassis"].set_fault("stall", 1)  # orders stay open across the restart
        mapping = apply_deployment(ac_mapping, line.endpoints())
        bridge = Bridge(mapping, settings)
        await bridge.start()
        try:
            for order_id in ("A-1", "A-2"):
                await bridge.submit(order_id, "AC-W", {}, client="mes-a")
        finally:
            await bridge.stop()
        bridge = Bridge(mapping, settings)  # on the same journal
        await bridge.start()
        try:
            assert bridge.engine.open_orders == 2
            with pytest.raises(LineFull, match=r"^client 'mes-a' holds 2 open orders"):
                await bridge.submit("A-3", "AC-W", {}, client="mes-a")
            await bridge.submit("B-1", "AC-W", {}, client="mes-b")
            await bridge.cancel("A-2")  # a restored order that ends gives its client's place back
            await until(lambda: bridge.engine.open_orders == 2)
            await bridge.submit("A-3", "AC-W", {}, client="mes-a")
            assert bridge.get("A-3").state == OrderState.QUEUED
        finally:
            await bridge.stop()
