// Writes TypeScript declarations of the log's events from docs/events.schema.json (whose root
// is a $ref to EventView: compiled here as the root, with its $defs beside it).
//   node types/gen-events.mjs <events.schema.json> <out.d.ts>
import { compile } from "json-schema-to-typescript";
import { readFileSync, writeFileSync } from "node:fs";

const [input, output] = process.argv.slice(2);
const s = JSON.parse(readFileSync(input, "utf8"));
const root = { ...s.$defs.EventView, title: "EventView", $defs: s.$defs };
const ts = await compile(root, "EventView", {
  bannerComment: "// Generated from docs/events.schema.json by types/gen-events.mjs: do not edit.",
  additionalProperties: false,
  unreachableDefinitions: true,
  format: true,
});
writeFileSync(output, ts);
