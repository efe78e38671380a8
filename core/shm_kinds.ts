/**
 * What a file in the shm directory is, when it is not a target table: so that
 * `nfqlb show --shm=X` (and every other opener of a target table) says "this is
 * our counters file" or "this is the fragment statistics" instead of only
 * "bad magic". Tools that list the shm directory and `show` each name
 * (Meridio's log collector) then get an error that explains itself. Only
 * consulted after a file failed the target-table check. docs/shm.md.
 */
import { NFQLB_CT_MAGIC, NFQLB_FTSTATS_LEN } from "../ffi/consts.ts";
import { COUNTERS_MAGIC } from "./counters_shm.ts";
import { OWN_DIR_NAME } from "./shm_dir.ts";
import { TRACE_SHM } from "./trace_shm.ts";

/** How much of a file is read to tell what it is. */
const SNIFF_BYTES = 256;

function head(path: string): { bytes: Uint8Array; size: number } | undefined {
  let f: Deno.FsFile | undefined;
  try {
    f = Deno.openSync(path, { read: true });
    const size = f.statSync().size;
    const buf = new Uint8Array(Math.min(SNIFF_BYTES, size));
    let got = 0;
    // bounded: at most SNIFF_BYTES, and a read of 0 (end of file) stops it
    for (let i = 0; i < SNIFF_BYTES && got < buf.length; i++) {
      const n = f.readSync(buf.subarray(got));
      if (n === null || n === 0) break;
      got += n;
    }
    return { bytes: buf.subarray(0, got), size };
  } catch {
    return undefined;
  } finally {
    f?.close();
  }
}

/**
 * Says what the file `name` at `path` is when it is not a target table and we
 * know its kind, as the text after `not a target table: `; undefined when we
 * do not know it (the caller keeps its own reason, e.g. bad magic).
 *
 * Known: our own directory; files an older nfqlb-deno kept in the shm
 * directory itself (counters, connection tables, saved flows, apply's state and
 * log: now in `.nfqlb-deno/` or opt-in, and never read at the old name);
 * upstream's fragment statistics (72 bytes) and `nfqlb-trace`.
 *
 * @example
 * ```ts
 * describeNonTable("ftshm-counters", "/dev/shm/ftshm-counters");
 * // "the counters of an older nfqlb-deno's lb (now kept in .nfqlb-deno/); remove it with: nfqlb delete --shm=ftshm-counters"
 * ```
 */
export function describeNonTable(name: string, path: string): string | undefined {
  const remove = `remove it with: nfqlb delete --shm=${name}`;
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(path);
  } catch {
    return undefined;
  }
  if (st.isDirectory) {
    return name === OWN_DIR_NAME
      ? "the directory of nfqlb-deno's own files (counters, connection tables, apply's state; docs/shm.md)"
      : "a directory";
  }
  if (!st.isFile) return undefined;
  const h = head(path);
  if (!h) return undefined;
  const v = new DataView(h.bytes.buffer, h.bytes.byteOffset, h.bytes.byteLength);
  const magic = h.bytes.length >= 4 ? v.getUint32(0, true) : undefined;
  if (magic === COUNTERS_MAGIC) {
    return `the counters of an older nfqlb-deno's lb (now kept in ${OWN_DIR_NAME}/); ${remove}`;
  }
  if (magic === NFQLB_CT_MAGIC) {
    const target = name.endsWith("-ct") ? name.slice(0, -3) : "<target>";
    return `a connection table of an older nfqlb-deno (now kept in ${OWN_DIR_NAME}/; re-create it with: ` +
      `nfqlb init --shm=${target} --conntrack=MAX); ${remove}`;
  }
  const text = new TextDecoder().decode(h.bytes);
  if (/^\{\s*"format":\s*"nfqlb-deno-flows"/.test(text)) {
    return `flows saved by an older nfqlb-deno (flowlb now saves flows only with --flow_store=FILE); ${remove}`;
  }
  if (/^\.nfqlb-host-.+\.(json|log)$/.test(name)) {
    return `apply's state or log of an older nfqlb-deno (now kept in ${OWN_DIR_NAME}/); ${remove}`;
  }
  if (name === TRACE_SHM && h.size === 8) return "upstream's log level and trace mask (nfqlb loglevel)";
  if (h.size === NFQLB_FTSTATS_LEN) {
    return `${NFQLB_FTSTATS_LEN} bytes, the size of upstream's fragment-table statistics ` +
      `(read them with: nfqlb stats --ft_shm=${name})`;
  }
  return undefined;
}
