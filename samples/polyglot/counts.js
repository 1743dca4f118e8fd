// The counts of the polyglot sample, in JavaScript: zips each frame's brightness statistics
// (from the C node) with its people detections (from the Python detector), appends one JSON
// line per frame to args.path, and serves the running totals over HTTP while the flow runs:
//   GET /counts  ->  {"frames", "people", "people_max", "last": {line of the latest frame}}
// args: path (JSON lines), port (0: any free port), host (default 127.0.0.1),
//       port_file (the port is written there once listening), timing (a JSON summary written at the end)
import { createServer } from "node:http";
import { createWriteStream, writeFileSync } from "node:fs";
import { once } from "node:events";
import { configFromEnvironment, connect } from "../../sdk/js/index.js";

const config = configFromEnvironment();
const { path, port = 0, host = "127.0.0.1", port_file: portFile, timing } = config.args;

// Opened before connect(): the launcher hears "ready" once the endpoint serves.
const totals = { frames: 0, people: 0, people_max: 0, last: null };
const server = createServer((request, response) => {
  if (request.method === "GET" && (request.url === "/counts" || request.url === "/")) {
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify(totals));
  } else {
    response.writeHead(404, { "content-type": "text/plain" });
    response.end("GET /counts\n");
  }
});
server.listen(port, host);
await once(server, "listening");
if (portFile) writeFileSync(portFile, String(server.address().port));
const out = createWriteStream(path, { flags: "w" });

const node = await connect({ config });
let first = 0;
for await (const event of node) {
  if (event.type === "item") {
    const { stats, people } = event.items;
    if (stats.index !== people.index) throw new Error(`frame ${stats.index} zipped with detections of ${people.index}`);
    const count = people.boxes.shape[0];  // an N x 4 float32 array of boxes
    const line = { index: stats.index, timestamp: stats.timestamp, gray_mean: stats.gray_mean,
      gray_min: stats.gray_min, gray_max: stats.gray_max, people: count };
    first ||= performance.now();
    totals.frames += 1;
    totals.people += count;
    totals.people_max = Math.max(totals.people_max, count);
    totals.last = line;
    if (!out.write(JSON.stringify(line) + "\n")) await once(out, "drain");
  } else {  // stop: every line on disk, the endpoint closed, before the node reports its end
    out.end();
    await once(out, "finish");
    server.close();
    server.closeAllConnections();
    if (timing) writeFileSync(timing, JSON.stringify({ frames: totals.frames, seconds: (performance.now() - first) / 1000 }));
  }
}
