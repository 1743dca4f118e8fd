// Secure flows (docs/PROTOCOL.md, section 11): every tcp socket of the flow uses CURVE with the
// flow key the configuration carries. A socket that binds is a CURVE server, and a ZAP handler
// in this process admits only clients presenting the flow key; a socket that connects is a
// CURVE client that presents the flow key and expects it from the server. ipc is left alone.
import * as zmq from "zeromq";

export const ZAP_DOMAIN = "flujo";
const ZAP_ENDPOINT = "inproc://zeromq.zap.01";
const Z85 = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

/** @typedef {{public: string, secret: string}} KeyPair  Z85 text */

/** The configuration's key pair, checked; null for a flow without one. */
export function flowKeys(config) {
  const curve = config.curve;
  if (curve === undefined || curve === null) return null;
  if (typeof curve !== "object" || !Z85.test(curve.public ?? "") || !Z85.test(curve.secret ?? "")) {
    throw new Error('flujo node: FLUJO_NODE_CONFIG: field "curve" must be {"public", "secret"}, 40 characters of Z85 each');
  }
  return { public: curve.public, secret: curve.secret };
}

const isTcp = (endpoint) => endpoint.startsWith("tcp://");

/** Socket options for a socket that binds ``endpoint`` (none unless tcp in a secure flow). */
export function serverOptions(keys, endpoint) {
  if (keys === null || !isTcp(endpoint)) return {};
  return { curveServer: true, curveSecretKey: keys.secret, curvePublicKey: keys.public, zapDomain: ZAP_DOMAIN };
}

/** Socket options for a socket that connects to ``endpoint``. */
export function clientOptions(keys, endpoint) {
  if (keys === null || !isTcp(endpoint)) return {};
  return { curveServerKey: keys.public, curvePublicKey: keys.public, curveSecretKey: keys.secret };
}

/**
 * The ZAP handler (RFC 27) of this process: admits CURVE clients whose key is the flow's,
 * refuses (and counts) every other. Started before the first tcp input binds.
 */
export class Gatekeeper {
  /** @param {KeyPair} keys */
  constructor(keys) {
    this.allowed = Buffer.from(z85Decode(keys.public));
    this.refused = 0;
    this.socket = new zmq.Router({ linger: 0 });
  }

  async start() {
    await this.socket.bind(ZAP_ENDPOINT);
    this._serving = this._serve();
  }

  async _serve() {
    try {
      for await (const frames of this.socket) {
        // [routing id, empty, version, request id, domain, address, identity, mechanism, credentials...]
        const [peer, empty, version, requestId, , , , mechanism, key] = frames;
        const ok = mechanism?.toString() === "CURVE" && key !== undefined && key.equals(this.allowed);
        if (!ok) this.refused += 1;
        await this.socket.send([peer, empty, version ?? Buffer.from("1.0"), requestId ?? Buffer.alloc(0),
          Buffer.from(ok ? "200" : "400"), Buffer.from(ok ? "OK" : "not the flow key"), Buffer.alloc(0), Buffer.alloc(0)]);
      }
    } catch (error) {
      if (!this.socket.closed) throw error;
    }
  }

  close() {
    this.socket.close();
  }
}

// Z85 (ZeroMQ RFC 32) decoding, for the flow's public key as ZAP presents it (32 raw bytes).
const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
function z85Decode(text) {
  const bytes = [];
  for (let i = 0; i < text.length; i += 5) {
    let value = 0;
    for (let j = 0; j < 5; j++) value = value * 85 + ALPHABET.indexOf(text[i + j]);
    bytes.push((value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
  }
  return bytes;
}
