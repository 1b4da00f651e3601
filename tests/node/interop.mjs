// An independent OPC UA client (node-opcua) against a running linebridge:
// browse the address space, read every variable, call SubmitOrder, receive the order's events.
// Usage: node interop.mjs opc.tcp://127.0.0.1:PORT/ ORDER_ID   — prints one JSON summary line.
import {
  AttributeIds, BrowseDirection, ClientMonitoredItem, ClientSubscription, DataType, OPCUAClient,
  TimestampsToReturn, constructEventFilter, makeBrowsePath,
} from "node-opcua";

const [url, orderId] = process.argv.slice(2);
const deadline = setTimeout(() => { console.error("interop: timed out"); process.exit(3); }, 60000);

const client = OPCUAClient.create({ endpointMustExist: false, connectionStrategy: { maxRetry: 2, initialDelay: 200 } });
await client.connect(url);
const session = await client.createSession();
const namespaces = await session.readNamespaceArray();
const typesNs = namespaces.indexOf("urn:linebridge:types");

// Browse everything under Objects, following hierarchical references.
const seen = new Set();
const variables = [];
let queue = ["i=85"];
while (queue.length) {
  const batch = queue.splice(0, 50);
  let results = await session.browse(batch.map((nodeId) => ({
    nodeId, browseDirection: BrowseDirection.Forward, referenceTypeId: "HierarchicalReferences",
    includeSubtypes: true, nodeClassMask: 0, resultMask: 63,
  })));
  for (let result of results) {
    let refs = [...(result.references || [])];
    let cp = result.continuationPoint;
    while (cp && cp.length) {
      const [next] = await session.browseNext([cp], false);
      refs = refs.concat(next.references || []);
      cp = next.continuationPoint;
    }
    for (const ref of refs) {
      const id = ref.nodeId.toString();
      if (seen.has(id)) continue;
      seen.add(id);
      if (ref.nodeClass === 2 /* Variable */) variables.push(id);
      if (ref.nodeClass === 1 /* Object */ || ref.nodeClass === 2) queue.push(id);
    }
  }
}

// Read every variable.
const statuses = {};
let plantGood = 0;
let plantVariables = 0;
for (let i = 0; i < variables.length; i += 200) {
  const chunk = variables.slice(i, i + 200);
  const values = await session.read(chunk.map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value })));
  values.forEach((dv, j) => {
    const name = dv.statusCode.name;
    statuses[name] = (statuses[name] || 0) + 1;
    if (chunk[j].includes("s=Plant.")) {
      plantVariables += 1;
      if (dv.statusCode.isGood()) plantGood += 1;
    }
  });
}

// Find the line and subscribe to its order events.
const lineId = variables.length && [...seen].find((id) => id.endsWith("s=Plant.Lines.ac_line"));
const subscription = ClientSubscription.create(session, {
  requestedPublishingInterval: 50, requestedLifetimeCount: 600, requestedMaxKeepAliveCount: 20,
  maxNotificationsPerPublish: 1000, publishingEnabled: true, priority: 1,
});
const fields = ["EventType", "Message", "Severity", `${typesNs}:OrderId`, `${typesNs}:NewState`, `${typesNs}:Station`];
const item = ClientMonitoredItem.create(subscription, { nodeId: lineId, attributeId: AttributeIds.EventNotifier },
  { queueSize: 1000, discardOldest: true, filter: constructEventFilter(fields) }, TimestampsToReturn.Neither);
const events = [];
const completed = new Promise((resolve) => {
  item.on("changed", (values) => {
    const event = { message: values[1].value?.text, severity: values[2].value, orderId: values[3].value,
                    newState: values[4].value, station: values[5].value };
    events.push(event);
    if (event.orderId === orderId && event.newState === 3 /* completed */) resolve();
  });
});
await new Promise((resolve) => item.on("initialized", resolve));

// Call SubmitOrder(OrderId, Product, Options).
const [pathResult] = await session.translateBrowsePath([makeBrowsePath(lineId, `/${lineId.split(";")[0].replace("ns=", "")}:SubmitOrder`)]);
const methodId = pathResult.targets?.[0]?.targetId?.toString() ?? lineId.replace("ac_line", "ac_line.SubmitOrder");
const call = await session.call({
  objectId: lineId, methodId,
  inputArguments: [
    { dataType: DataType.String, value: orderId },
    { dataType: DataType.String, value: "AC-W" },
    { dataType: DataType.String, value: JSON.stringify({ capacity_btu: 9000, panel_color: "graphite" }) },
  ],
});
await completed;

// The order it placed, by the node id the call returned: nobody has read it yet, so the server
// builds its nodes within this request (docs/opcua-model.md, "Orders are built when asked for").
const orderNode = call.outputArguments?.[0]?.value?.toString();
const [state] = await session.read([{ nodeId: `${orderNode}.State`, attributeId: AttributeIds.Value }]);
const [stepsBrowse] = await session.browse([{
  nodeId: `${orderNode}.Steps`, browseDirection: BrowseDirection.Forward, referenceTypeId: "HierarchicalReferences",
  includeSubtypes: true, nodeClassMask: 0, resultMask: 63,
}]);
const stepIds = (stepsBrowse.references || []).map((ref) => ref.nodeId.toString());
const results = await session.read(stepIds.map((id) => ({ nodeId: `${id}.Results`, attributeId: AttributeIds.Value })));
const order = {
  state: state.value.value, stateStatus: state.statusCode.name, steps: stepIds.length,
  results: results.map((dv) => (dv.statusCode.isGood() ? JSON.parse(dv.value.value) : dv.statusCode.name)),
};

console.log(JSON.stringify({
  nodes: seen.size, variables: variables.length, statuses, plantVariables, plantGood,
  call: { status: call.statusCode.name, output: call.outputArguments?.[0]?.value?.toString() },
  events: events.filter((e) => e.orderId === orderId), order,
}));
await subscription.terminate();
await session.close();
await client.disconnect();
clearTimeout(deadline);
