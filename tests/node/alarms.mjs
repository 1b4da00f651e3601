// node-opcua as an alarm client (OPC UA Part 9) against linebridge: subscribe to events on the Server
// object, wait for the coil furnace's limit alarm, try to acknowledge it as an observer (refused),
// acknowledge and confirm it with a comment as an operator, shelve and unshelve it, call
// ConditionRefresh, then say "waiting" and wait for the alarm to return to normal (the test lowers
// the setpoint). Usage: node alarms.mjs URL PKI_DIR OPERATOR PASSWORD OBSERVER PASSWORD — JSON lines
// out; exits 2 when the server refuses the connection (its certificate not trusted yet).
import {
  AttributeIds, ClientMonitoredItem, DataType, MessageSecurityMode, OPCUACertificateManager, OPCUAClient,
  SecurityPolicy, TimestampsToReturn, UserTokenType, constructEventFilter,
} from "node-opcua";

const [url, pkiDir, operator, operatorPw, observer, observerPw] = process.argv.slice(2);
const clientCertificateManager = new OPCUACertificateManager({
  rootFolder: pkiDir, automaticallyAcceptUnknownCertificate: true,
});
await clientCertificateManager.initialize();
const deadline = setTimeout(() => { console.error("alarms: timed out"); process.exit(3); }, 90000);
const say = (what) => console.log(JSON.stringify(what));
const FIELDS = [
  "EventId", "EventType", "SourceName", "ConditionName", "Message", "Severity", "Retain", "ConditionId",
  "ActiveState.Id", "AckedState.Id", "ConfirmedState.Id", "Comment", "ClientUserId", "SuppressedOrShelved",
  "ShelvingState.CurrentState",
];

async function open(user, password) {
  const client = OPCUAClient.create({
    applicationName: "linebridge-alarms", endpointMustExist: false, clientCertificateManager,
    securityMode: MessageSecurityMode.None, securityPolicy: SecurityPolicy.None,
    connectionStrategy: { maxRetry: 1, initialDelay: 100 },
  });
  try {
    await client.connect(url);
    const session = await client.createSession({ type: UserTokenType.UserName, userName: user, password });
    return { client, session };
  } catch (err) {
    say({ refused: String(err.message || err).slice(0, 300) });
    process.exit(2);
  }
}

async function call(session, objectId, methodId, inputArguments = []) {
  try {
    const result = await session.call({ objectId, methodId, inputArguments });
    return result.statusCode.name;
  } catch (err) {
    return String(err.message || err).includes("BadUserAccessDenied") ? "BadUserAccessDenied" : String(err);
  }
}

const events = [];
let wake = () => {};
function waitFor(predicate) {
  return new Promise((resolve) => {
    const check = () => {
      const found = events.find(predicate);
      if (found) { resolve(found); return true; }
      return false;
    };
    if (!check()) wake = () => { if (check()) wake = () => {}; };
  });
}

say({ step: "connecting" });
const op = await open(operator, operatorPw);
const obs = await open(observer, observerPw);
const subscription = await op.session.createSubscription2({
  requestedPublishingInterval: 50, requestedMaxKeepAliveCount: 20, publishingEnabled: true,
});
const item = ClientMonitoredItem.create(
  subscription, { nodeId: "i=2253", attributeId: AttributeIds.EventNotifier },
  { samplingInterval: 0, queueSize: 1000, filter: constructEventFilter(FIELDS) }, TimestampsToReturn.Neither,
);
item.on("changed", (fields) => {
  const event = Object.fromEntries(FIELDS.map((name, i) => [name, fields[i].value]));
  event.EventType = event.EventType?.toString();
  events.push(event);
  wake();
});
await new Promise((resolve) => item.once("initialized", resolve));
say({ step: "subscribed" });
// What is active already came before this subscription: an alarm client asks for it (Part 9).
const refreshArgs = [{ dataType: DataType.UInt32, value: subscription.subscriptionId }];
const firstRefresh = await call(op.session, "i=2782", "i=3875", refreshArgs);

const furnace = (test) => (e) => e.ConditionName === "furnace_temp_c" && test(e);
const active = await waitFor(furnace((e) => e["ActiveState.Id"] === true && e["AckedState.Id"] === false));
const condition = active.ConditionId.toString();
say({ step: "active" });
const ackArgs = (event, text) => [
  { dataType: DataType.ByteString, value: event.EventId },
  { dataType: DataType.LocalizedText, value: { text } },
];
const out = { condition, severity: active.Severity, message: active.Message?.text, type: active.EventType };
out.observerAck = await call(obs.session, condition, "i=9111", ackArgs(active, "not mine"));
out.ack = await call(op.session, condition, "i=9111", ackArgs(active, "node-opcua ack"));
say({ step: "acknowledged", status: out.ack });
const acked = await waitFor(furnace((e) => e["AckedState.Id"] === true));
out.ackedBy = acked.ClientUserId;
out.ackComment = acked.Comment?.text;
out.confirm = await call(op.session, condition, "i=9113", ackArgs(acked, "node-opcua confirm"));
await waitFor(furnace((e) => e["ConfirmedState.Id"] === true));
const shelving = `${condition}.ShelvingState`;
out.shelve = await call(op.session, shelving, "i=2949", [{ dataType: DataType.Double, value: 60000 }]);
const shelved = await waitFor(furnace((e) => e.SuppressedOrShelved === true));
out.shelvedState = shelved["ShelvingState.CurrentState"]?.text;
out.unshelve = await call(op.session, shelving, "i=2947");
await waitFor(furnace((e) => e.SuppressedOrShelved === false && e !== shelved && events.indexOf(e) > events.indexOf(shelved)));
say({ step: "shelved and unshelved" });
const before = events.length;
out.firstRefresh = firstRefresh;
out.refresh = await call(op.session, "i=2782", "i=3875", refreshArgs);
await waitFor((e) => events.indexOf(e) >= before && e.EventType === "ns=0;i=2788");  // RefreshEndEventType
const refreshed = events.slice(before);
out.refreshed = refreshed.map((e) => e.ConditionName || e.EventType);
say(out);
say({ waiting: true });
const normal = await waitFor(furnace((e) => e["ActiveState.Id"] === false));
say({ normal: true, retain: normal.Retain, message: normal.Message?.text });
await subscription.terminate();
for (const { session, client } of [op, obs]) { await session.close(); await client.disconnect(); }
clearTimeout(deadline);
