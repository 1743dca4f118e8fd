// Flujo nodes in JavaScript (Node.js): see README.md. The wire protocol is docs/PROTOCOL.md.
export { FlujoNode, connect } from "./src/node.js";
export { NDArray, Kind, ProtocolError, PROTOCOL_VERSION } from "./src/protocol.js";
export { parseConfig, configFromEnvironment } from "./src/config.js";
