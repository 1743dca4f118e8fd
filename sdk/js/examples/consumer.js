// A consumer: appends each item as a JSON line to args.path (stdout without one).
// Manifest:  [nodes.sink]  command = ["node", "sdk/js/examples/consumer.js"]  inputs = ["square"]
//            args = { path = "out.jsonl" }
import { createWriteStream } from "node:fs";
import { connect, NDArray } from "../index.js";

const node = await connect();
const out = node.args.path ? createWriteStream(node.args.path, { flags: "a" }) : process.stdout;
const plain = (value) => value instanceof NDArray
  ? { dtype: value.dtype, shape: value.shape, data: Array.from(value.data, Number) }
  : value;
for await (const event of node) {
  if (event.type === "item") {
    out.write(JSON.stringify(plain(event.item)) + "\n");
  } else if (event.type === "stop" && out !== process.stdout) {
    await new Promise((resolve) => out.end(resolve));  // every line is on disk before the node reports its end
  }
}
