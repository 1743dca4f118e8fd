// A processor: squares numbers; for arrays, sends their element-wise square (a new Float64Array).
// Manifest:  [nodes.square]  command = ["node", "sdk/js/examples/processor.js"]  inputs = ["numbers"]
import { connect, NDArray } from "../index.js";

const node = await connect();
for await (const event of node) {
  if (event.type !== "item") continue;  // "stop": nothing to clean up here
  const value = event.item;
  if (value instanceof NDArray) {
    const squares = Float64Array.from(value.data, (x) => Number(x) * Number(x));
    await node.send("out", new NDArray(squares, value.shape));
  } else if (typeof value === "number") {
    await node.send("out", value * value);
  }  // anything else: nothing sent, downstream gets a SKIP for this item
}
