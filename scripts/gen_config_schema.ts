/**
 * Writes docs/nfqlb-config.schema.json, the JSON Schema of the host config
 * file (docs/config.md), from its zod schema. The unit test
 * tests/unit/host_config_test.ts fails when the committed file differs from
 * what this writes, so run it after every change to host/config/schema.ts:
 *
 *   deno run --allow-read --allow-write scripts/gen_config_schema.ts
 */
import { z } from "zod";
import { HostConfigFileSchema } from "../host/config/load.ts";

/** Where the schema is published, relative to the repository root. */
export const SCHEMA_FILE = "docs/nfqlb-config.schema.json";

/**
 * The JSON Schema text: the file as written (defaulted keys optional), with
 * a stable `$id`, indented, ending in a newline.
 */
export function configJsonSchema(): string {
  const schema = z.toJSONSchema(HostConfigFileSchema, { io: "input" });
  return JSON.stringify({ ...schema, $id: "nfqlb-config.schema.json" }, null, 2) + "\n";
}

if (import.meta.main) {
  const path = new URL(`../${SCHEMA_FILE}`, import.meta.url);
  Deno.writeTextFileSync(path, configJsonSchema());
  console.log(`wrote ${SCHEMA_FILE}`);
}
