"""An MES as the ISA-95 Job Control specification describes one, run in a process of its own by
test_job_control.py: it knows the Job Control namespace and type ids and nothing of linebridge. It
finds the job order receiver and response provider by their types, calls them and prints what it
saw as one JSON line. `phase` says which part of the walk-through to run."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from asyncua import Client, ua

JC = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"
RECEIVERS, PROVIDER = (1002, 1008), 1003  # the receiver, and its subtype with sub-states
JC_INDEX = [0]  # the server's index of the Job Control namespace, once connected


async def find_by_type(client: Client, type_ids: set[ua.NodeId], depth: int = 6) -> list:
    """Objects under Objects whose type definition is one of `type_ids` (a breadth-first walk)."""
    found, seen, level = [], set(), [client.nodes.objects]
    for _ in range(depth):
        following = []
        for node in level:
            for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences,
                                                 nodeclassmask=ua.NodeClass.Object):
                if child.nodeid in seen:
                    continue
                seen.add(child.nodeid)
                if await child.read_type_definition() in type_ids:
                    found.append(child)
                following.append(child)
        level = following
    return found


async def call(node, name: str, *args: ua.Variant) -> list:
    """A method of the receiver or provider, by its browse name in the Job Control namespace."""
    method = await node.get_child(ua.QualifiedName(name, JC_INDEX[0]))
    request = ua.CallMethodRequest(ObjectId=node.nodeid, MethodId=method.nodeid, InputArguments=list(args))
    (result,) = await node.session.call([request])
    assert result.StatusCode.is_good(), f"{name}: the call itself is {result.StatusCode}"
    diagnostics = [d.AdditionalInfo for d in result.InputArgumentDiagnosticInfos or [] if d.AdditionalInfo]
    return [v.Value if isinstance(v, ua.Variant) else v for v in result.OutputArguments] + [diagnostics]


def job(classes: dict, job_id: str, **options) -> ua.Variant:
    quantity = options.pop("quantity", None)
    materials = None
    if quantity is not None:
        materials = [classes["ISA95MaterialDataType"](MaterialUse="Produced", Quantity=str(quantity))]
    order = classes["ISA95JobOrderDataType"](
        JobOrderID=job_id,
        WorkMasterID=[classes["ISA95WorkMasterDataType"](ID="AC-W")],
        JobOrderParameters=[
            classes["ISA95ParameterDataType"](ID=k, Value=ua.Variant(v, ua.VariantType.Int32))
            for k, v in options.items()
        ],
        MaterialRequirements=materials,
    )
    return ua.Variant(order, ua.VariantType.ExtensionObject)


def job_id(value: str) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.String)


async def states(receiver) -> dict[str, int]:
    listed = await (await receiver.get_child(ua.QualifiedName("JobOrderList", JC_INDEX[0]))).read_value()
    return {entry.JobOrder.JobOrderID: entry.State[0].StateNumber for entry in listed or []}


async def until_state(receiver, job: str, number: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while (await states(receiver)).get(job) != number:
        assert time.monotonic() < deadline, f"{job} never reached state {number}: {await states(receiver)}"
        await asyncio.sleep(0.05)


async def main(url: str, phase: str) -> None:
    async with Client(url, timeout=10) as client:
        classes = await client.load_data_type_definitions()
        jc = JC_INDEX[0] = await client.get_namespace_index(JC)
        (receiver,) = await find_by_type(client, {ua.NodeId(i, jc) for i in RECEIVERS})
        (provider,) = await find_by_type(client, {ua.NodeId(PROVIDER, jc)})
        seen: dict = {}
        if phase == "run":
            masters = await (await receiver.get_child(f"{jc}:WorkMaster")).read_value()
            seen["work_masters"] = [m.ID for m in masters]
            seen["listed"] = await states(receiver)  # an order placed by the line's own method is a job
            seen["store"] = await call(receiver, "Store", job(classes, "J1", capacity_btu=9000))
            bigger = job(classes, "J1", capacity_btu=24000, quantity=2)
            seen["update"] = await call(receiver, "Update", bigger)
            seen["stored"] = (await states(receiver)).get("J1")
            seen["start"] = await call(receiver, "Start", job_id("J1"))
            seen["store_j3"] = await call(receiver, "Store", job(classes, "J3"))
            seen["revoke_stored"] = await call(receiver, "RevokeStart", job_id("J3"))
            seen["cancel"] = await call(receiver, "Cancel", job_id("J3"))
            seen["cancelled"] = (await states(receiver)).get("J3")
            await until_state(receiver, "J1", 5)
            response, status, _ = await call(provider, "RequestJobResponseByJobOrderID", job_id("J1"))
            data = {p.ID: p for p in response.JobResponseData}
            charge = data["unit1.charge.actual_charge_g"]
            seen["response"] = {
                "status": status,
                "state": [(s.StateText.Text, s.StateNumber) for s in response.JobState],
                "charge": round(charge.Value.Value), "unit": charge.EngineeringUnits.DisplayName.Text,
                "units": sorted(k for k in data if k.endswith(".serial")),
                "end": response.EndTime is not None,
            }  # fmt: skip
            seen["start_again"] = await call(receiver, "Start", job_id("J1"))
            seen["duplicate"] = await call(receiver, "Store", job(classes, "J1"))
            seen["unknown"] = await call(receiver, "Start", job_id("NOPE"))
            seen["out_of_range"] = await call(receiver, "Store", job(classes, "J9", capacity_btu=9001))
            ended = [  # Ended, and its sub-state Completed
                classes["ISA95StateDataType"](StateText=ua.LocalizedText("Ended"), StateNumber=5),
                classes["ISA95StateDataType"](
                    BrowsePath=ua.RelativePath(Elements=[ua.RelativePathElement(
                        ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasComponent), IncludeSubtypes=True,
                        TargetName=ua.QualifiedName("EndedSubstates", jc))]),
                    StateText=ua.LocalizedText("Completed"), StateNumber=1),
            ]  # fmt: skip
            by_state = "RequestJobResponseByJobOrderState"
            responses, status, _ = await call(provider, by_state, ua.Variant(ended))
            seen["by_state"] = [status, [r.JobOrderID for r in responses]]
            seen["clear"] = await call(receiver, "Clear", job_id("J1"))
            seen["after_clear"] = "J1" in await states(receiver)
        elif phase == "running":  # the test stalled the first station: J2 stays running
            seen["store_and_start"] = await call(receiver, "StoreAndStart", job(classes, "J2"))
            await until_state(receiver, "J2", 3)
            seen["pause"] = await call(receiver, "Pause", job_id("J2"))
            seen["paused"] = (await states(receiver)).get("J2")
            seen["resume"] = await call(receiver, "Resume", job_id("J2"))
            seen["resumed"] = (await states(receiver)).get("J2")
            seen["start_running"] = await call(receiver, "Start", job_id("J2"))
            seen["clear_running"] = await call(receiver, "Clear", job_id("J2"))
            seen["abort"] = await call(receiver, "Abort", job_id("J2"))
            await until_state(receiver, "J2", 6)
        sys.stdout.write(json.dumps(seen) + "\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
