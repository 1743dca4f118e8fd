// An identity processor: every item goes on unchanged (arrays too, without a copy; a zip of
// several ports sends the first port's value). args.fail_on: an item equal to it fails the node.
// It is what the conformance kit drives (python -m flujo.conformance) and the benchmark measures.
import { connect } from "../index.js";

const node = await connect();
const failOn = node.args.fail_on;
for await (const event of node) {
  if (event.type !== "item") continue;
  try {
    const value = event.port === null ? event.item[0] : event.item;
    if (failOn !== undefined && value === failOn) throw new Error(`failing on ${JSON.stringify(failOn)}, as asked`);
    await node.send("out", value);
  } catch (error) {
    // on_error = "skip" in the manifest: the item is skipped and counted, the loop goes on;
    // otherwise the node fails (error reported, stream ended, exit status 1).
    if (!(await node.fail(error))) break;
  }
}
