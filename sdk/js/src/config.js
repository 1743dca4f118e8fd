// A replica's configuration, as the launcher hands it over in FLUJO_NODE_CONFIG (docs/PROTOCOL.md, section 2).
import { CONFIG_ENV } from "./protocol.js";

/**
 * @typedef {{port: string, endpoint: string, hwm: number, source: string, source_port: string,
 *            senders: number, policy: string}} InputConfig
 * @typedef {{port: string, target: string, target_port: string, endpoints: string[], hwm: number,
 *            policy: string, aligned: boolean}} OutputConfig
 * @typedef {{flow: string, node: string, replica: number, replicas: number, kind: string,
 *            control: string, status: string, inputs: InputConfig[], outputs: OutputConfig[],
 *            join: string, keyword_ports: boolean, on_error: string, restart: string,
 *            seq_start: number, generation: number, args: object, protocol: number}} NodeConfig
 */

const KINDS = ["producer", "processor", "consumer"];

/** Parse and check a configuration; throws an Error naming the field that is wrong. */
export function parseConfig(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new Error(`flujo node: ${CONFIG_ENV} is not JSON: ${error.message}`);
  }
  const fail = (field, want) => {
    throw new Error(`flujo node: ${CONFIG_ENV}: field "${field}" must be ${want}`);
  };
  const str = (object, field, where = field) => typeof object[field] === "string" || fail(where, "a string");
  const int = (object, field, where = field) => Number.isInteger(object[field]) && object[field] >= 0 || fail(where, "a whole number");
  if (typeof data !== "object" || data === null) fail("(top)", "an object");
  if (data.protocol !== undefined && data.protocol !== 1) fail("protocol", "1 (this library speaks version 1)");
  ["node", "control", "status"].forEach((field) => str(data, field));
  ["replica"].forEach((field) => int(data, field));
  if (!KINDS.includes(data.kind)) fail("kind", KINDS.join(" | "));
  const inputs = (data.inputs ?? []).map((port, i) => {
    ["port", "endpoint", "source"].forEach((field) => str(port, field, `inputs[${i}].${field}`));
    ["hwm", "senders"].forEach((field) => int(port, field, `inputs[${i}].${field}`));
    return { source_port: "out", policy: "block", ...port };
  });
  const outputs = (data.outputs ?? []).map((edge, i) => {
    ["port", "target", "target_port"].forEach((field) => str(edge, field, `outputs[${i}].${field}`));
    int(edge, "hwm", `outputs[${i}].hwm`);
    if (!Array.isArray(edge.endpoints) || !edge.endpoints.every((e) => typeof e === "string")) {
      fail(`outputs[${i}].endpoints`, "a list of strings");
    }
    return { policy: "block", aligned: false, ...edge };
  });
  return {
    flow: "", replicas: 1, join: "zip", keyword_ports: false, on_error: "fail", restart: "no",
    seq_start: 0, generation: 0, args: {}, protocol: 1,
    ...data, inputs, outputs,
  };
}

/** The configuration the launcher set for this process. */
export function configFromEnvironment() {
  const text = process.env[CONFIG_ENV];
  if (text === undefined) throw new Error(`flujo node: no configuration; the launcher sets ${CONFIG_ENV}`);
  return parseConfig(text);
}
