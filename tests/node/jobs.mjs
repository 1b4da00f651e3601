// An MES built on node-opcua, an independent stack, that knows only the ISA-95 Job Control
// specification: it finds the job order receiver and response provider by their types, stores and
// starts a job, follows it in JobOrderList, collects its job response and the ReturnStatus of what
// it may not do. Usage: node jobs.mjs URL PHASE (run | running) — prints one JSON line;
// node jobs.mjs URL observer PKI_DIR USER PASSWORD: a Store over Basic256Sha256 SignAndEncrypt as
// that user (exits 2 when the server refuses the connection: our certificate is not trusted yet).
import {
  AttributeIds, BrowseDirection, DataType, MessageSecurityMode, OPCUACertificateManager, OPCUAClient,
  SecurityPolicy, UserTokenType, VariantArrayType, coerceNodeId,
} from "node-opcua";

const [url, phase, pkiDir, userName, password] = process.argv.slice(2);
const deadline = setTimeout(() => { console.error("jobs: timed out"); process.exit(3); }, 90000);
let client, session;
if (phase === "observer") {
  const clientCertificateManager = new OPCUACertificateManager({ rootFolder: pkiDir, automaticallyAcceptUnknownCertificate: true });
  await clientCertificateManager.initialize();
  client = OPCUAClient.create({
    applicationName: "linebridge-jobs", endpointMustExist: false, clientCertificateManager,
    securityMode: MessageSecurityMode.SignAndEncrypt, securityPolicy: SecurityPolicy.Basic256Sha256,
    connectionStrategy: { maxRetry: 0, initialDelay: 100 },
  });
  try {
    await client.connect(url);
    session = await client.createSession({ type: UserTokenType.UserName, userName, password });
  } catch (err) {
    console.log(JSON.stringify({ refused: String(err.message || err).slice(0, 300) }));
    await client.disconnect().catch(() => {});
    clearTimeout(deadline);
    process.exit(2);
  }
} else {
  client = OPCUAClient.create({ endpointMustExist: false, connectionStrategy: { maxRetry: 2, initialDelay: 200 } });
  await client.connect(url);
  session = await client.createSession();
}
const ns = (await session.readNamespaceArray()).indexOf("http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/");
if (ns < 0) { console.error("no Job Control namespace"); process.exit(2); }

async function children(nodeId, nodeClassMask) {
  const result = await session.browse({
    nodeId, referenceTypeId: "HierarchicalReferences", includeSubtypes: true,
    browseDirection: BrowseDirection.Forward, nodeClassMask, resultMask: 63,
  });
  return result.references || [];
}

async function findByType(...typeIds) {  // breadth-first from Objects, six levels
  const found = new Map(); const seen = new Set(); let level = ["i=85"];
  for (let depth = 0; depth < 6; depth++) {
    const next = [];
    for (const nodeId of level) {
      for (const ref of await children(nodeId, 1)) {
        const id = ref.nodeId.toString();
        if (seen.has(id)) continue;
        seen.add(id);
        if (typeIds.includes(ref.typeDefinition.toString())) found.set(id, ref.nodeId);
        next.push(ref.nodeId);
      }
    }
    level = next;
  }
  return [...found.values()];
}

const uint64 = (v) => (Array.isArray(v) ? v[0] * 2 ** 32 + v[1] : Number(v));

async function call(objectId, name, ...inputArguments) {
  const method = (await children(objectId, 4)).find((r) => r.browseName.name === name && r.browseName.namespaceIndex === ns);
  const result = await session.call({ objectId, methodId: method.nodeId, inputArguments });
  if (result.statusCode.name !== "Good") throw new Error(`${name}: the call is ${result.statusCode.name}`);
  const outputs = result.outputArguments.map((a) => a.value);
  const why = (result.inputArgumentDiagnosticInfos || []).map((d) => d && d.additionalInfo).filter(Boolean);
  return { outputs, status: uint64(outputs[outputs.length - 1]), why };
}

const comment = { dataType: DataType.LocalizedText, arrayType: VariantArrayType.Array, value: [] };
const id = (value) => ({ dataType: DataType.String, value });

async function job(jobOrderID, capacity) {
  const make = (typeId, fields) => session.constructExtensionObject(coerceNodeId(`ns=${ns};i=${typeId}`), fields);
  const parameter = await make(3003, { ID: "capacity_btu", value: { dataType: DataType.Int32, value: capacity } });
  const workMaster = await make(3007, { ID: "AC-W" });
  return { dataType: DataType.ExtensionObject, value: await make(3008, {
    jobOrderID, workMasterID: [workMaster], jobOrderParameters: [parameter],
  }) };
}

async function states(receiver) {
  const list = (await children(receiver, 2)).find((r) => r.browseName.name === "JobOrderList");
  const value = (await session.read({ nodeId: list.nodeId, attributeId: AttributeIds.Value })).value.value || [];
  return Object.fromEntries(value.map((e) => [e.jobOrder.jobOrderID, e.state[0].stateNumber]));
}

async function until(receiver, jobId, number) {
  for (let i = 0; i < 400; i++) {
    if ((await states(receiver))[jobId] === number) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${jobId} never reached state ${number}`);
}

const [receiver] = await findByType(`ns=${ns};i=1002`, `ns=${ns};i=1008`);  // or its subtype with sub-states
const [provider] = await findByType(`ns=${ns};i=1003`);
const seen = {};
if (phase === "run") {
  seen.store = (await call(receiver, "Store", await job("N1", 18000), comment)).status;
  seen.stored = (await states(receiver)).N1;
  seen.start = (await call(receiver, "Start", id("N1"), comment)).status;
  await until(receiver, "N1", 5);
  const answer = await call(provider, "RequestJobResponseByJobOrderID", id("N1"));
  const response = answer.outputs[0];
  const charge = response.jobResponseData.find((p) => p.ID === "unit0.charge.actual_charge_g");
  seen.response = {
    status: answer.status, state: response.jobState.map((s) => s.stateNumber),
    charge: Math.round(charge.value.value), unit: charge.engineeringUnits.displayName.text,
  };
  seen.start_again = (await call(receiver, "Start", id("N1"), comment)).status;
  seen.duplicate = (await call(receiver, "Store", await job("N1", 9000), comment)).status;
  seen.unknown = (await call(receiver, "Start", id("NOPE"), comment)).status;
  const bad = await call(receiver, "Store", await job("N9", 9001), comment);
  seen.out_of_range = [bad.status, bad.why];
} else if (phase === "observer") {
  seen.store = (await call(receiver, "Store", await job("N-OBS", 9000), comment)).status;
} else {  // the test stalled the first station: N2 stays running
  seen.store_and_start = (await call(receiver, "StoreAndStart", await job("N2", 9000), comment)).status;
  await until(receiver, "N2", 3);
  seen.start_running = (await call(receiver, "Start", id("N2"), comment)).status;
  seen.clear_running = (await call(receiver, "Clear", id("N2"), comment)).status;
  seen.abort = (await call(receiver, "Abort", id("N2"), comment)).status;
}
console.log(JSON.stringify(seen));
await session.close();
await client.disconnect();
clearTimeout(deadline);
