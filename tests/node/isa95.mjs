// An independent OPC UA client (node-opcua) that knows only what the server says: it builds an
// ISA95JobOrderDataType from the server's DataTypeDefinitions, writes it into a variable of that
// type and reads it back. Usage: node isa95.mjs opc.tcp://127.0.0.1:PORT/ NODE_ID — one JSON line.
import { AttributeIds, DataType, OPCUAClient, Variant, coerceNodeId } from "node-opcua";

const [url, nodeId] = process.argv.slice(2);
const deadline = setTimeout(() => { console.error("isa95: timed out"); process.exit(3); }, 60000);

const client = OPCUAClient.create({ endpointMustExist: false, connectionStrategy: { maxRetry: 2, initialDelay: 200 } });
await client.connect(url);
const session = await client.createSession();
const namespaces = await session.readNamespaceArray();
const ns = namespaces.indexOf("http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/");
if (ns < 0) { console.error("no Job Control namespace in", namespaces); process.exit(2); }
const parameter = await session.constructExtensionObject(coerceNodeId(`ns=${ns};i=3003`), {
  ID: "capacity_btu", value: new Variant({ dataType: DataType.Int32, value: 12000 }),
});
const jobOrder = await session.constructExtensionObject(coerceNodeId(`ns=${ns};i=3008`), {
  jobOrderID: "J-node", priority: 4, jobOrderParameters: [parameter],
});
const status = await session.write({
  nodeId, attributeId: AttributeIds.Value,
  value: { value: new Variant({ dataType: DataType.ExtensionObject, value: jobOrder }) },
});
const back = (await session.read({ nodeId, attributeId: AttributeIds.Value })).value.value;
const p = back.jobOrderParameters[0];
console.log(JSON.stringify({
  write: status.name, type: back.constructor.name, id: back.jobOrderID, priority: back.priority,
  parameter: [p.ID, p.value.value],
}));
await session.close();
await client.disconnect();
clearTimeout(deadline);
