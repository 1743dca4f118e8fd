// A JavaScript node for the tests (tests/test_sdk_js.py); args.role says what it does:
//   square     numbers -> their squares (SKIP for anything else)
//   fail_at    passes numbers on, throws at args.at
//   arrays     {i, data: array} -> {i, sum, nbytes, dtype, shape, data: the same array sent back}
//   add        zips ports a and b: a + b
//   count      a producer of 0..args.n-1, args.pause ms apart, then waits for the file args.gate
//   collect    appends items as JSON lines to args.path (arrays summarised as [first, nbytes])
//   identity   sends every item on unchanged (a zip: the first port's value); fails on args.fail_on
//   take       a consumer that takes every item; fails on args.fail_on
// (identity and take are what the conformance kit drives: python -m flujo.conformance)
import { appendFileSync, existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, NDArray } from "../index.js";

const node = await connect();
const { role } = node.args;
const summary = (item) => (item && item.data instanceof NDArray)
  ? { ...item, data: [Number(item.data.data[0]), item.data.data.byteLength] } : item;
let produced = 0;

for await (const event of node) {
  if (event.type === "stop") continue;
  if (node.args.fail_on !== undefined && Object.values(event.items).includes(node.args.fail_on)) {
    // As user code failing on an item would: skipped with on_error = "skip", else the node fails.
    if (await node.fail(new Error(`failing on ${JSON.stringify(node.args.fail_on)}, as asked`))) continue;
    break;
  }
  if (role === "identity") {
    await node.send("out", event.port === null ? event.item[0] : event.item);
  } else if (role === "take") {
    // nothing to do with it
  } else if (role === "square") {
    if (typeof event.item === "number") await node.send("out", event.item * event.item);
  } else if (role === "fail_at") {
    try {
      if (event.item === node.args.at) throw new Error(`cannot handle ${event.item}`);
      await node.send("out", event.item);
    } catch (error) {
      if (!node.args.catch) throw error;
      await node.fail(error);  // with on_error = "skip": counted, the item skipped, the loop goes on
    }
  } else if (role === "arrays") {
    const { i, data } = event.item;
    let sum = 0;
    for (const value of data.data) sum += Number(value);
    await node.send("out", { i, sum, nbytes: data.data.byteLength, dtype: data.dtype, shape: data.shape, data });
  } else if (role === "add") {
    await node.send("out", event.items.a + event.items.b);
  } else if (role === "count") {
    if (produced < node.args.n) {
      if (node.args.pause) await sleep(node.args.pause);
      await node.send("out", produced++);
    } else if (node.args.gate && !existsSync(node.args.gate)) {
      await sleep(5);  // nothing this time: the stream stays open until the gate exists
    } else {
      break;
    }
  } else if (role === "collect") {
    appendFileSync(node.args.path, JSON.stringify(summary(event.item)) + "\n");
  }
}
