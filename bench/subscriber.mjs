// bench/subscriber.py in node-opcua: the same subscription and the same JSON lines on stdout, from
// a client that costs the two-core rig far less CPU than a Python one (a SCADA client on a plant
// does not share the bridge's machine at all). Uses the node-opcua that `make tools` installs
// under tests/node. Usage: node bench/subscriber.mjs URL INTERVAL_S [floor]
import { createRequire } from "node:module";

// node-opcua logs its warnings with console.log: to stderr, so stdout carries our JSON lines only
console.log = console.error;
const say = (what) => process.stdout.write(`${JSON.stringify(what)}\n`);
const require = createRequire(new URL("../tests/node/package.json", import.meta.url));
const {
  AttributeIds, BrowseDirection, ClientSubscription, OPCUAClient, TimestampsToReturn,
} = require("node-opcua");

const [url, intervalText, mode] = process.argv.slice(2);
const intervalMs = Number(intervalText) * 1000;

const client = OPCUAClient.create({
  endpointMustExist: false, connectionStrategy: { maxRetry: 300, initialDelay: 200, maxDelay: 1000 },
});
await client.connect(url);
const session = await client.createSession();

async function children(nodeId) {
  const result = await session.browse({
    nodeId, browseDirection: BrowseDirection.Forward, referenceTypeId: "HierarchicalReferences",
    includeSubtypes: true, nodeClassMask: 0, resultMask: 63,
  });
  return Object.fromEntries(result.references.map((r) => [r.browseName.name, r.nodeId.toString()]));
}

const variables = [];
const diagnostics = [];
if (mode === "floor") { // bench/floors.py's bare server
  variables.push(...Object.values(await children((await children("i=85")).Floor)));
} else {
  const plant = (await children("i=85")).Plant;
  const lines = Object.values(await children((await children(plant)).Lines));
  for (const station of Object.values(await children((await children(lines[0])).Stations))) {
    const parts = await children(station);
    variables.push(...Object.values(await children(parts.Telemetry)));
    const names = await children(parts.Diagnostics);
    diagnostics.push([names.PollsDone, names.PollsMissed]);
  }
}

const subscription = ClientSubscription.create(session, {
  requestedPublishingInterval: intervalMs, requestedLifetimeCount: 6000, requestedMaxKeepAliveCount: 20,
  maxNotificationsPerPublish: 0, publishingEnabled: true, priority: 1,
});
await new Promise((resolve) => subscription.once("started", resolve));
let values = 0;
for (let i = 0; i < variables.length; i += 500) {
  const group = await subscription.monitorItems(
    variables.slice(i, i + 500).map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value })),
    { samplingInterval: intervalMs, queueSize: 10, discardOldest: true },
    TimestampsToReturn.Both,
  );
  group.on("changed", () => { values += 1; });
}
say({ subscribed: variables.length });

// node-opcua hands a UInt64 over as [high, low]
const count = (v) => (Array.isArray(v) ? v[0] * 2 ** 32 + v[1] : Number(v ?? 0));
const counters = diagnostics.flat().filter((n) => n !== undefined);
setInterval(async () => {
  // one Read request for all the counters: the measuring client should load the bridge little
  const read = counters.length
    ? await session.read(counters.map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value })))
    : [];
  const byId = new Map(counters.map((nodeId, i) => [nodeId, count(read[i].value.value)]));
  let polls = 0;
  let missed = 0;
  for (const [done, miss] of diagnostics) {
    polls += byId.get(done) ?? 0;
    missed += byId.get(miss) ?? 0;
  }
  const at = Number(process.hrtime.bigint()) / 1e9;
  say({ at, values, polls, missed });
}, 1000);
