// Every frame a JavaScript node puts on the wire is built and parsed here (docs/PROTOCOL.md, sections 3-5).
//
// Data edges carry multipart messages:
//   frame 0   header   msgpack array [version, kind, seq, sender_node, sender_replica]
//   frame 1   body     msgpack item (DATA, BATCH); arrays appear as ext type 1 = [frame, dtype, shape]
//   frame 2.. buffers  raw bytes of each array, in the order the body refers to them
import { Encoder, Decoder, ExtensionCodec, ExtData } from "@msgpack/msgpack";

export const PROTOCOL_VERSION = 1;
export const ARRAY_EXT_CODE = 1;
export const CONFIG_ENV = "FLUJO_NODE_CONFIG";

/** What a data-edge message carries (header field 1). */
export const Kind = Object.freeze({ DATA: 0, SKIP: 1, EOS: 2, BATCH: 3, PAUSE: 4 });

/** A message that does not follow the protocol: refused, counted and logged, never passed on. */
export class ProtocolError extends Error {}

/**
 * An n-dimensional array as it travels: a typed-array view on the received bytes (no copy),
 * numpy's dtype string and the shape (C order). Received arrays are views on the message
 * frame: copy before keeping them past the next item if you must write to them.
 */
export class NDArray {
  /**
   * @param {ArrayBufferView} data typed array (or Buffer) holding the elements
   * @param {number[]} [shape] defaults to [data.length]
   * @param {string} [dtype] numpy type string; defaults to the typed array's own
   */
  constructor(data, shape, dtype) {
    this.dtype = dtype ?? dtypeOf(data);
    this.data = data;
    this.shape = shape ?? [data.length];
    const count = this.shape.reduce((a, b) => a * b, 1);
    if (count * itemSize(this.dtype) !== data.byteLength) {
      throw new TypeError(`array of shape [${this.shape}] and dtype ${this.dtype} needs ` +
        `${count * itemSize(this.dtype)} bytes, its data has ${data.byteLength}`);
    }
  }

  /** The raw bytes, a view (no copy). */
  get bytes() {
    return new Uint8Array(this.data.buffer, this.data.byteOffset, this.data.byteLength);
  }
}

// numpy kind+size -> typed array constructor, for little-endian (or byte-sized) dtypes.
const VIEWS = {
  u1: Uint8Array, i1: Int8Array, b1: Uint8Array, u2: Uint16Array, i2: Int16Array, f2: Uint16Array,
  u4: Uint32Array, i4: Int32Array, f4: Float32Array, u8: BigUint64Array, i8: BigInt64Array, f8: Float64Array,
};
const DTYPES = new Map([
  [Uint8Array, "|u1"], [Uint8ClampedArray, "|u1"], [Int8Array, "|i1"], [Uint16Array, "<u2"], [Int16Array, "<i2"],
  [Uint32Array, "<u4"], [Int32Array, "<i4"], [Float32Array, "<f4"], [Float64Array, "<f8"],
  [BigUint64Array, "<u8"], [BigInt64Array, "<i8"],
]);

function dtypeOf(data) {
  const dtype = DTYPES.get(data.constructor) ?? (data instanceof Uint8Array ? "|u1" : undefined);
  if (dtype === undefined) throw new TypeError(`cannot send a ${data.constructor.name} as an array`);
  return dtype;
}

function itemSize(dtype) {
  const size = Number(dtype.slice(2));
  if (!/^[<>|=][biufcmMSUV]\d+$/.test(dtype) || !(size > 0)) throw new ProtocolError(`bad dtype ${JSON.stringify(dtype)}`);
  return size;
}

/** A typed-array view of ``bytes`` as ``dtype``: no copy when the bytes are aligned, else one copy. */
function view(bytes, dtype) {
  const size = itemSize(dtype);
  const type = VIEWS[dtype.slice(1)];
  const littleOrByte = dtype[0] === "<" || dtype[0] === "|" || (dtype[0] === "=" && true);
  if (type === undefined || !littleOrByte) return bytes;  // unusual dtype (big-endian, complex, ...): raw bytes
  if (bytes.byteLength % size !== 0) throw new ProtocolError(`${bytes.byteLength} bytes are not whole ${dtype} items`);
  if (bytes.byteOffset % size !== 0) bytes = new Uint8Array(bytes);  // misaligned: one copy, aligned
  return new type(bytes.buffer, bytes.byteOffset, bytes.byteLength / size);
}

/** Encodes and decodes data messages for one node replica. */
export class Codec {
  /** @param {string} node @param {number} replica */
  constructor(node, replica) {
    this.node = node;
    this.replica = replica;
    /** @type {Uint8Array[]} array buffers of the message being encoded */
    this._buffers = [];
    /** @type {Buffer[]} frames of the message being decoded */
    this._frames = [];
    const codec = new ExtensionCodec();
    codec.register({
      type: ARRAY_EXT_CODE,
      encode: (value) => this._encodeArray(value),
      decode: (data) => this._decodeArray(data),
    });
    this._encoder = new Encoder({ extensionCodec: codec, ignoreUndefined: true });
    this._plain = new Encoder();
    this._decoder = new Decoder({ extensionCodec: codec });
    this._plainDecoder = new Decoder();
    /** @type {Map<number, Buffer>} one cached header per marker kind (seq 0) */
    this._markers = new Map();
  }

  /** @param {number} kind @param {number} seq */
  header(kind, seq) {
    // [1, kind, seq, node, replica] by hand: fixarray(5), two positive fixints, seq, then a
    // tail that never changes (msgpack of node and replica). One small buffer per message.
    const tail = this._headerTail ??= Buffer.from(this._plain.encode([this.node, this.replica])).subarray(1);
    let head;
    if (seq < 0x80) head = [0x95, PROTOCOL_VERSION, kind, seq];
    else if (seq < 0x100) head = [0x95, PROTOCOL_VERSION, kind, 0xcc, seq];
    else if (seq < 0x10000) head = [0x95, PROTOCOL_VERSION, kind, 0xcd, seq >> 8, seq & 0xff];
    else if (seq < 0x100000000) head = [0x95, PROTOCOL_VERSION, kind, 0xce, seq >>> 24, (seq >>> 16) & 0xff, (seq >>> 8) & 0xff, seq & 0xff];
    else return Buffer.from(this._plain.encode([PROTOCOL_VERSION, kind, seq, this.node, this.replica]));
    const header = Buffer.allocUnsafe(head.length + tail.length);
    header.set(head, 0);
    header.set(tail, head.length);
    return header;
  }

  /** Frames of one item; array buffers are referenced, not copied. */
  encode(seq, item) {
    this._buffers = [];
    const encoded = this._encoder.encode(item);
    const body = Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength);
    const frames = [this.header(Kind.DATA, seq), body];
    for (const buffer of this._buffers) frames.push(Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength));
    this._buffers = [];
    return frames;
  }

  /** One BATCH message carrying items whose encoded bodies are given (no arrays), in order. */
  batch(firstSeq, bodies) {
    const count = bodies.length;
    const prefix = count < 16 ? Buffer.from([0x90 | count]) : Buffer.from([0xdc, count >> 8, count & 0xff]);
    return [this.header(Kind.BATCH, firstSeq), Buffer.concat([prefix, ...bodies])];
  }

  /** Frames of a SKIP, EOS or PAUSE marker. */
  marker(kind, seq) {
    if (seq !== 0) return [this.header(kind, seq)];
    let header = this._markers.get(kind);
    if (!header) this._markers.set(kind, header = this.header(kind, 0));
    return [header];
  }

  _encodeArray(value) {
    let array = value;
    if (!(value instanceof NDArray)) {
      if (!ArrayBuffer.isView(value) || value instanceof Uint8Array || value instanceof DataView) return null;
      array = new NDArray(value);  // a typed array other than bytes: a one-dimensional array
    }
    this._buffers.push(array.bytes);
    return this._plain.encode([this._buffers.length + 1, array.dtype, array.shape]);
  }

  /**
   * Decode one received message. Throws ProtocolError for anything malformed.
   * @param {Buffer[]} frames
   * @returns {{kind: number, seq: number, sender: string, replica: number, item?: any}}
   */
  decode(frames) {
    let header;
    try {
      header = this._plainDecoder.decode(frames[0]);
    } catch (error) {
      throw new ProtocolError(`undecodable header: ${error.message}`);
    }
    if (!Array.isArray(header) || header.length < 5) throw new ProtocolError(`malformed header ${JSON.stringify(header)}`);
    const [version, kind, seq, sender, replica] = header;
    if (version !== PROTOCOL_VERSION) {
      throw new ProtocolError(`protocol version ${version} is not supported (this node speaks ${PROTOCOL_VERSION})`);
    }
    if (!Number.isInteger(kind) || kind < 0 || kind > 4) throw new ProtocolError(`unknown message kind ${kind}`);
    if (!Number.isInteger(seq) || seq < 0 || typeof sender !== "string" || !Number.isInteger(replica) || replica < 0) {
      throw new ProtocolError(`malformed header ${JSON.stringify(header)}`);
    }
    const message = { kind, seq, sender, replica, item: undefined };
    if (kind === Kind.DATA || kind === Kind.BATCH) {
      if (frames.length < 2) throw new ProtocolError("data message without a body frame");
      this._frames = kind === Kind.BATCH ? null : frames;  // a batch never carries arrays
      try {
        message.item = this._decoder.decode(frames[1]);
      } catch (error) {
        throw error instanceof ProtocolError ? error : new ProtocolError(`undecodable body: ${error.message}`);
      } finally {
        this._frames = [];
      }
      if (kind === Kind.BATCH && !Array.isArray(message.item)) throw new ProtocolError("a batch body is not an array");
    }
    return message;
  }

  _decodeArray(data) {
    const meta = this._plainDecoder.decode(data);
    if (!Array.isArray(meta) || meta.length < 3) throw new ProtocolError("malformed array reference");
    const [index, dtype, shape] = meta;
    if (this._frames === null) throw new ProtocolError("an array in a batch (batches carry small items only)");
    if (!Number.isInteger(index) || index < 2 || index >= this._frames.length) {
      throw new ProtocolError(`array refers to frame ${index}, message has ${this._frames.length}`);
    }
    if (typeof dtype !== "string" || !Array.isArray(shape) || !shape.every((n) => Number.isInteger(n) && n >= 0)) {
      throw new ProtocolError("malformed array reference");
    }
    const bytes = this._frames[index];
    const count = shape.reduce((a, b) => a * b, 1);
    if (count * itemSize(dtype) !== bytes.byteLength) {
      throw new ProtocolError(`array of shape [${shape}] and dtype ${dtype} in a frame of ${bytes.byteLength} bytes`);
    }
    const array = Object.create(NDArray.prototype);
    array.dtype = dtype;
    array.shape = shape;
    array.data = view(bytes, dtype);
    return array;
  }
}

// -- control and status ----------------------------------------------------------------------
const plain = new Encoder();
const plainDecoder = new Decoder();

/** The control subscription by which the launcher sees that a replica's SUB is live. */
export function identityTopic(node, replica) {
  return `hello:${node}.${replica}`;
}

/** [topic, payload] of a control message; payload [] when absent or undecodable. */
export function parseControl(frames) {
  const topic = frames[0].toString();
  let payload = [];
  if (frames.length > 1) {
    try {
      payload = plainDecoder.decode(frames[1]);
    } catch {
      return [topic, null];
    }
  }
  return [topic, Array.isArray(payload) ? payload : null];
}

/** One status-channel frame: [kind, node, replica, payload]. */
export function statusFrame(kind, node, replica, payload = null) {
  return Buffer.from(plain.encode([kind, node, replica, payload]));
}

export { ExtData };
