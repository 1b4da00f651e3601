// node-opcua over Basic256Sha256 SignAndEncrypt with a user: submit one order, then try to set the
// coil furnace setpoint to 615 (engineers may).
// Usage: node secure_submit.mjs URL PKI_DIR USER PASSWORD ORDER_ID — prints one JSON line;
// exits 2 when the server refuses the connection (e.g. our certificate is not trusted yet).
import {
  AttributeIds, DataType, MessageSecurityMode, OPCUACertificateManager, OPCUAClient, SecurityPolicy, UserTokenType,
} from "node-opcua";

const [url, pkiDir, userName, password, orderId] = process.argv.slice(2);
const deadline = setTimeout(() => { console.error("secure_submit: timed out"); process.exit(3); }, 60000);

const clientCertificateManager = new OPCUACertificateManager({
  rootFolder: pkiDir, automaticallyAcceptUnknownCertificate: true,
});
await clientCertificateManager.initialize();
const client = OPCUAClient.create({
  applicationName: "linebridge-interop", endpointMustExist: false,
  securityMode: MessageSecurityMode.SignAndEncrypt, securityPolicy: SecurityPolicy.Basic256Sha256,
  clientCertificateManager, connectionStrategy: { maxRetry: 0, initialDelay: 100 },
});
try {
  await client.connect(url);
  const session = await client.createSession({ type: UserTokenType.UserName, userName, password });
  const namespaces = await session.readNamespaceArray();
  const ns = namespaces.indexOf("urn:linebridge:ac_line");
  const result = await session.call({
    objectId: `ns=${ns};s=Plant.Lines.ac_line`, methodId: `ns=${ns};s=Plant.Lines.ac_line.SubmitOrder`,
    inputArguments: [
      { dataType: DataType.String, value: orderId }, { dataType: DataType.String, value: "AC-W" },
      { dataType: DataType.String, value: JSON.stringify({ capacity_btu: 24000 }) },
    ],
  });
  let write;
  try {
    const code = await session.write({
      nodeId: `ns=${ns};s=Plant.Lines.ac_line.Stations.coil.Setpoints.furnace_setpoint_c`,
      attributeId: AttributeIds.Value, value: { value: { dataType: DataType.Double, value: 615 } },
    });
    write = code.name;
  } catch (err) {
    write = String(err.message || err).slice(0, 200);  // a refused request is a service fault
  }
  console.log(JSON.stringify({
    status: result.statusCode.name, output: result.outputArguments?.[0]?.value?.toString(), write,
  }));
  await session.close();
  await client.disconnect();
  clearTimeout(deadline);
} catch (err) {
  console.log(JSON.stringify({ refused: String(err.message || err).slice(0, 300) }));
  await client.disconnect().catch(() => {});
  clearTimeout(deadline);
  process.exit(2);
}
