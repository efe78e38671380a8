/*
 * nfqlb.h - the C half of nfqlb-deno.
 *
 * Everything here is called from TypeScript through Deno FFI. Rules that keep
 * that cheap and safe:
 *   - hot-path functions take and return only u32/i32/pointer/buffer types;
 *   - nothing keeps global mutable state: state lives in caller-owned memory;
 *   - every function that reads packet or file bytes takes a length and checks
 *     bounds before each read.
 *
 * Compatibility: the random sequence, the Maglev permutation and population,
 * the 40-byte key and the djb2 hash reproduce upstream nfqlb 1.2.0 bit for bit
 * (see docs/maglev.md).
 *
 * Organisation (as libmnl's): one section per C file, named after the object
 * its functions work on. nfqlb_<object>_<verb> is defined in <object>.c, the
 * longest file name its name starts with (nfqlb_ct_sched_pick: ct_sched.c,
 * nfqlb_ct_lookup: ct.c), and declared in its section in the order of the
 * file. <object>_internal.h headers are private to the files of one object.
 * tests/unit/c_names_test.ts checks all of this.
 *
 * The contract with TypeScript: a comment whose text starts with `ts:`
 * exports what follows it to TypeScript: a run of #defines (up to the first
 * line that is not one), an enum (its members) or a struct (the byte offset
 * of each field, and its size). scripts/gen_consts.ts writes them to
 * ffi/consts.ts with their comments (`deno task consts`); `deno task check`
 * fails when that file is stale. Layouts are described once, in docs/.
 */
#ifndef NFQLB_H
#define NFQLB_H

#include <stdint.h>
#include <stddef.h>

/* ts: The C library's version (`nfqlb version --build`). */
#define NFQLB_LIB_VERSION_MAJOR 0 /* up when a function or an exported constant changes or goes away */
#define NFQLB_LIB_VERSION_MINOR 1 /* up when one is added */
#define NFQLB_LIB_VERSION_PATCH 0 /* up for a fix that changes no interface */

/* ----------------------------------------------------------------------------
 * rand.c - glibc random()/rand() TYPE_3 generator, without global state.
 * ------------------------------------------------------------------------- */

/** Generator state: a ring of the last 34 words and a position. */
struct nfqlb_rand {
	uint32_t r[34];
	uint32_t k;
};

/** nfqlb_rand_size - bytes the caller must provide for a struct nfqlb_rand. */
uint32_t nfqlb_rand_size(void);

/**
 * nfqlb_rand_seed - seed like glibc srand(seed); seed 0 behaves as seed 1.
 * After nfqlb_rand_seed(s, 1) the outputs equal glibc rand() in a fresh process.
 */
void nfqlb_rand_seed(struct nfqlb_rand* s, uint32_t seed);

/** nfqlb_rand_next - next value in [0, 2^31), exactly as glibc rand(). */
int32_t nfqlb_rand_next(struct nfqlb_rand* s);

/* ----------------------------------------------------------------------------
 * prime.c
 * ------------------------------------------------------------------------- */

/**
 * nfqlb_prime_below - the largest prime <= n, as upstream primeBelow().
 * n >= 994009 is capped to 994009 first (so the result is <= 993997);
 * n < 2 returns 0 (there is none; upstream dies), n 2 and 3 are returned as is.
 */
uint32_t nfqlb_prime_below(uint32_t n);

/* ----------------------------------------------------------------------------
 * maglev.c - permutation parameters and lookup-table population.
 * ------------------------------------------------------------------------- */

/**
 * nfqlb_maglev_params - draw (offset, skip) for rows 0..N-1 exactly as
 * upstream init does in a fresh process: rand() seeded 1, per row
 * offset = rand() % M, skip = rand() % (M-1) + 1.
 * @out: 2*N u32, row i at out[2i] (offset) and out[2i+1] (skip).
 * Returns 0, or -1 if M < 3.
 */
int32_t nfqlb_maglev_params(uint32_t M, uint32_t N, uint32_t* out);

/**
 * nfqlb_maglev_populate - fill lookup[0..M-1] with row indexes (or -1 when
 * no row is active) by upstream's algorithm. A row i is active when
 * active[i] >= 0. The permutation of row i is (offset + j*skip) % M in
 * unsigned 32-bit arithmetic, as upstream computes it; for M > 65536 that
 * wraps and a row may not be a full permutation, so a walk may continue into
 * the next row's sequence as upstream's flat array does. Where upstream would
 * read past its permutation array (and crash), the walk continues on the
 * row's exact permutation instead, so the result is always a full table.
 * @params: 2*N u32 from nfqlb_maglev_params.
 * Returns 0, -1 on bad arguments, -2 when out of memory.
 */
int32_t nfqlb_maglev_populate(uint32_t M, uint32_t N, const uint32_t* params,
			      const int32_t* active, int32_t* lookup);

/** ts: The largest row weight (activate --weight). */
#define NFQLB_MAX_WEIGHT 65535u

/**
 * nfqlb_maglev_populate_weighted - nfqlb_maglev_populate with a weight per
 * row (weights NULL: all 1). Active rows of weight 0 take no slots (drained);
 * when every active row has weight 0 the table is all -1. When all the other
 * active rows have the same weight the result is exactly upstream's table for
 * them. Otherwise rows take turns Katran-style (docs/maglev.md, "Weights"):
 * in round r = 1, 2, ... each row, ascending, adds its weight to a credit that
 * starts at wmax/2 and takes a turn (claims its next free slot, walking its
 * permutation as above) when the credit reaches wmax, then subtracts wmax.
 * A row's share of the M slots is then w/sum(w) within about one slot.
 * Returns 0, -1 on bad arguments (or a weight > NFQLB_MAX_WEIGHT), -2 when out
 * of memory.
 */
int32_t nfqlb_maglev_populate_weighted(uint32_t M, uint32_t N, const uint32_t* params,
				       const int32_t* active, const uint32_t* weights, int32_t* lookup);

/* ----------------------------------------------------------------------------
 * hash.c - the 40-byte key and djb2, as upstream.
 *
 *   0        16        32   34      36      38     40
 *   +--------+---------+----+-------+-------+------+
 *   | src v6 | dst v6  | ud | proto | sport | dport|   ports raw (network order)
 *   +--------+---------+----+-------+-------+------+   proto little-endian
 *   IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d).
 * ------------------------------------------------------------------------- */

/* ts: Bytes of a key. */
#define NFQLB_KEY_LEN 40

/** nfqlb_hash_djb2 - h = 5381; h = h*33 + byte, 32-bit wrap. */
uint32_t nfqlb_hash_djb2(const uint8_t* p, uint32_t len);

/**
 * nfqlb_hash_key - hash of a 40-byte key: for proto 132 (SCTP) with
 * hash_mode 1, djb2 of bytes 36..39 (the ports) only; else djb2 of all 40.
 * @len: bytes readable at key; < 40 returns 0.
 */
uint32_t nfqlb_hash_key(const uint8_t* key, uint32_t len, uint32_t hash_mode);

/** nfqlb_hash_addresses - djb2 of the 32 address bytes (LB tier, fwmark without proto). */
uint32_t nfqlb_hash_addresses(const uint8_t* key, uint32_t len);

/* ----------------------------------------------------------------------------
 * tshm.c - the target (Maglev) table in shared memory. Writers fill the
 * buffer that is not current, then publish it by storing its index in
 * `current` (release). Each buffer has a sequence number that is odd while
 * it is written, so a reader that raced two updates retries.
 * layout: docs/shm.md#the-target-table-init-activate-deactivate-show-lb
 * ------------------------------------------------------------------------- */

/* ts: The target table's file. */
#define NFQLB_TSHM_MAGIC 0x424c514eu /* "NQLB" */
#define NFQLB_TSHM_VERSION 2u /* 2: weights in each buffer */
#define NFQLB_TSHM_HEADER 64u /* header bytes; the permutation parameters follow */
#define NFQLB_TSHM_MAX_BYTES (1ull << 31) /* 2 GiB */

/* ts: Offsets of the header fields that TypeScript reads (tshm.c asserts them). */
#define NFQLB_TSHM_OFF_VERSION 4u       /* u16 */
#define NFQLB_TSHM_OFF_M 16u            /* u32 lookup table size */
#define NFQLB_TSHM_OFF_N 20u            /* u32 rows */
#define NFQLB_TSHM_OFF_OWN_FWMARK 24u   /* i32 */
#define NFQLB_TSHM_OFF_REPLACED 40u     /* u32, 1 once init has replaced the file */

/* ts: Errors returned (negative) by nfqlb_tshm_check (and nfqlb_ct_admin_check). */
#define NFQLB_ETRUNC -1   /* shorter than its header or than its size field */
#define NFQLB_EMAGIC -2   /* not an nfqlb-deno target shm */
#define NFQLB_EVERSION -3 /* a layout version this build does not know */
#define NFQLB_ELAYOUT -4  /* M, N or the size field are inconsistent */
#define NFQLB_EUPSTREAM -5 /* an upstream nfqlb 1.x target shm */

/**
 * nfqlb_tshm_bytes - file size for (M, N), written to *out (u64).
 * Returns 0, or -1 when M < 3, N < 1, N > M or the size exceeds
 * NFQLB_TSHM_MAX_BYTES.
 */
int32_t nfqlb_tshm_bytes(uint32_t M, uint32_t N, uint64_t* out);

/**
 * nfqlb_tshm_format - write a fresh table into base[0..size): header,
 * permutation parameters, no active target, lookup all -1 in both buffers.
 * Returns 0 or -1 (size too small / bad M, N).
 */
int32_t nfqlb_tshm_format(uint8_t* base, uint64_t size, uint32_t M, uint32_t N, int32_t own_fwmark);

/** nfqlb_tshm_check - validate a mapped file of `size` bytes. 0 or NFQLB_E*. */
int32_t nfqlb_tshm_check(const uint8_t* base, uint64_t size);

/**
 * nfqlb_tshm_commit - publish a new active set: populate the spare buffer
 * from active[0..N-1] and weights[0..N-1] (NULL: all 1; each <=
 * NFQLB_MAX_WEIGHT) and make it current. Callers serialise writers (flock).
 * Returns 0, or nfqlb_maglev_populate_weighted's error (nothing published).
 */
int32_t nfqlb_tshm_commit(uint8_t* base, const int32_t* active, const uint32_t* weights);

/**
 * nfqlb_tshm_read - consistent snapshot of the current buffer: the first
 * nlookup lookup entries, all N active entries and all N weights (each
 * output may be NULL). Returns the generation.
 */
uint32_t nfqlb_tshm_read(const uint8_t* base, int32_t* lookup, uint32_t nlookup, int32_t* active,
			 uint32_t* weights);

/**
 * nfqlb_tshm_lookup_row - like nfqlb_tshm_lookup but also stores the row
 * index (or -1) in *row; for `nfqlb fwmark`.
 */
int32_t nfqlb_tshm_lookup_row(const uint8_t* base, uint32_t hash, int32_t* row);

/**
 * nfqlb_tshm_row_fwmark - active[row] of the current buffer (the fwmark of
 * the target in that row, whatever its weight: 0 = draining is still there),
 * or -1 when the row is out of range or empty.
 */
int32_t nfqlb_tshm_row_fwmark(const uint8_t* base, int32_t row);

/**
 * nfqlb_tshm_lookup - the fwmark for a hash: active[lookup[hash % M]] of
 * the current buffer, or -1 when that slot has no target. Hot path.
 */
int32_t nfqlb_tshm_lookup(const uint8_t* base, uint32_t hash);

/**
 * nfqlb_tshm_lookup_key - hash a 40-byte key (nfqlb_hash_key) and look it
 * up: one FFI crossing per key for callers outside the C dataplane.
 */
int32_t nfqlb_tshm_lookup_key(const uint8_t* base, const uint8_t* key, uint32_t len, uint32_t hash_mode);

/**
 * nfqlb_tshm_count_empty - number of lookup slots of the current buffer
 * without a target (row < 0 or active[row] < 0), read under the seqlock.
 * Used by tests and health checks.
 */
uint32_t nfqlb_tshm_count_empty(const uint8_t* base);

/** nfqlb_tshm_own_fwmark - the table's own fwmark (init --ownfw; LB tier). */
int32_t nfqlb_tshm_own_fwmark(const uint8_t* base);

/**
 * nfqlb_tshm_stamp - identifies the current buffer's contents of a target
 * table (its index and seqlock count; changes with every commit) and stores
 * N in *n (may be NULL).
 */
uint32_t nfqlb_tshm_stamp(const uint8_t* base, uint32_t* n);

/* ----------------------------------------------------------------------------
 * tshm_view.c - the dataplane's private copy of a target table file, read
 * with pread (never mapped: a truncated or rewritten file cannot fault a
 * load) and refreshed between batches; it keeps the last good table while
 * the file is bad. The copy has the file's layout: every nfqlb_tshm_*
 * reader above reads nfqlb_tshm_view_table(). docs/dataplane.md "Damaged
 * shm files".
 * ------------------------------------------------------------------------- */

/* ts: View states besides the NFQLB_E* errors (the file is bad; the copy is the last good table). */
#define NFQLB_TVIEW_OK 0       /* the copy is the file's current table */
#define NFQLB_TVIEW_REPLACED 1 /* init replaced the file, or it has another M or N: open the name again */

/* ts: Indexes into nfqlb_tshm_view_info's output (i64 each). */
enum nfqlb_tview_info {
	NFQLB_TVIEW_INFO_STATE = 0,  /* NFQLB_TVIEW_* or NFQLB_E* */
	NFQLB_TVIEW_INFO_INCIDENTS,  /* times the file went bad (good -> bad) */
	NFQLB_TVIEW_INFO_LAST_ERROR, /* NFQLB_E* of the latest incident, 0: none */
	NFQLB_TVIEW_INFO_COPIES,     /* good copies taken */
	NFQLB_TVIEW_INFO_DEV,        /* st_dev, st_ino of the file opened */
	NFQLB_TVIEW_INFO_INO,
	NFQLB_TVIEW_INFO_GENERATION, /* the copy's generation (commits since init) */
	NFQLB_TVIEW_INFO_COUNT
};

struct nfqlb_tshm_view;

/**
 * nfqlb_tshm_view_open - open `path` and copy its table. NULL on failure
 * with *err: an errno (> 0), 0 for an empty file, or an NFQLB_E* (< 0).
 */
struct nfqlb_tshm_view* nfqlb_tshm_view_open(const char* path, int32_t* err);

/**
 * nfqlb_tshm_view_refresh - look at the file again (one pread when nothing
 * changed) and copy a new current table; between batches. Returns the state.
 * A good -> bad transition adds 1 to counters[NFQLB_C_TABLE_ERRORS]
 * (atomically; counters may be NULL). Any thread; one refreshes at a time.
 */
int32_t nfqlb_tshm_view_refresh(struct nfqlb_tshm_view* v, uint64_t* counters);

/** nfqlb_tshm_view_table - the copy, a table every nfqlb_tshm_* reader takes. */
const uint8_t* nfqlb_tshm_view_table(const struct nfqlb_tshm_view* v);

/** nfqlb_tshm_view_info - up to n values of enum nfqlb_tview_info. */
void nfqlb_tshm_view_info(const struct nfqlb_tshm_view* v, int64_t* out, uint32_t n);

/** nfqlb_tshm_view_close - close the file and free the copy (no thread may use it any more). */
void nfqlb_tshm_view_close(struct nfqlb_tshm_view* v);

/* ----------------------------------------------------------------------------
 * file.c - map files (POSIX shm lives in /dev/shm) with mmap, and the
 * SIGBUS guard: a registered mapping whose file was truncated becomes zero
 * pages instead of killing the process (file.c has the details). The
 * registry of mappings is the library's one global state (a signal handler
 * reaches nothing else).
 * ------------------------------------------------------------------------- */

/**
 * nfqlb_file_guard - install the SIGBUS handler (once per process; the
 * handler found before is called for any other SIGBUS). 0 or -errno.
 */
int32_t nfqlb_file_guard(void);

/**
 * nfqlb_file_map - open `path` (NUL-terminated) and map it MAP_SHARED,
 * read-only or read-write. On success returns the address and stores the
 * size in *size; on failure returns NULL and stores errno in *err.
 */
void* nfqlb_file_map(const char* path, int32_t writable, uint64_t* size, int32_t* err);

/**
 * nfqlb_file_map_fd - map the first len bytes of an open file MAP_SHARED and
 * register the mapping with the guard; with `at` (a mapping made so, of len
 * bytes), map over it in place (MAP_FIXED) and clear its faults. NULL with
 * *err = errno on failure. Bytes past the end of the file read as zero up to
 * the page end; pages past it fault (the guard's).
 */
void* nfqlb_file_map_fd(int32_t fd, uint64_t len, int32_t writable, void* at, int32_t* err);

/** nfqlb_file_unmap - munmap; returns 0 or -errno. */
int32_t nfqlb_file_unmap(void* addr, uint64_t size);

/**
 * nfqlb_file_faults - SIGBUS faults the guard turned into zero pages in the
 * mapping that holds addr since it was mapped (or remapped); 0 when none or
 * unknown. Once > 0 the mapping is private memory, no longer the file.
 */
uint32_t nfqlb_file_faults(const void* addr);

/**
 * nfqlb_file_remap - map `path` again over the whole mapping that starts at
 * addr (size bytes, as mapped), at the same address: pointers into it stay
 * valid. The file must be at least size bytes. 0 or -errno (-ERANGE: short).
 */
int32_t nfqlb_file_remap(void* addr, uint64_t size, const char* path, int32_t writable);

/**
 * nfqlb_file_reserve - give the existing file `path` `size` bytes of real
 * storage (posix_fallocate). Why: a file merely truncated to its size is
 * sparse, and on a full tmpfs the first write through a mapping of it kills
 * the process with SIGBUS; reserving first turns that into -ENOSPC here.
 * Returns 0 or -errno.
 */
int32_t nfqlb_file_reserve(const char* path, uint64_t size);

/* ----------------------------------------------------------------------------
 * packet.c - the key of a packet (upstream getHashKey, with fixes).
 * ------------------------------------------------------------------------- */

/* ts: Result bits of nfqlb_packet_key (upstream's values). */
#define NFQLB_PKT_FIRST_FRAG 1 /* first fragment: fkey holds the fragment key */
#define NFQLB_PKT_FRAG 2       /* non-first fragment: only fkey is valid */
#define NFQLB_PKT_UDPENCAP 4   /* SCTP over UDP, key has the SCTP ports */
#define NFQLB_PKT_ICMP_INNER 8 /* ICMP error: key is the flipped inner packet */
#define NFQLB_PKT_ICMP 16      /* other ICMP: addresses, proto and echo id */
#define NFQLB_PKT_ADDRONLY 32  /* no ports: addresses and proto */

/**
 * nfqlb_packet_key - fill key[40] for a packet of `len` bytes starting at its
 * IP header. hw_proto is 0x0800 or 0x86dd (NFQUEUE hw_protocol). udpencap is
 * the UDP port carrying SCTP (0 = off). For fragments, fkey[40] receives
 * {src, dst, fragment id}. Returns the NFQLB_PKT_* bits, or -1 for a packet
 * that cannot be parsed (never reads outside pkt[0..len)).
 */
int32_t nfqlb_packet_key(uint32_t hw_proto, const uint8_t* pkt, uint32_t len, uint32_t udpencap,
			 uint8_t* key, uint8_t* fkey);

/**
 * nfqlb_packet_fraginfo - for a fragment: out[0] = byte offset, out[1] = data
 * length, out[2] = more-fragments flag, from the headers. 0, or -1 when the
 * packet is not a (well-formed) fragment.
 */
int32_t nfqlb_packet_fraginfo(uint32_t hw_proto, const uint8_t* pkt, uint32_t len, uint32_t* out);

/* ----------------------------------------------------------------------------
 * ft.c - fwmark per fragmented datagram, and its counters in the ftshm.
 * layout: docs/shm.md#ftshm-fragment-table-statistics-upstreams-layout
 * ------------------------------------------------------------------------- */

/* ts: The ftshm record: upstream's struct fragStats, kept byte for byte. */
#define NFQLB_FTSTATS_LEN 72 /* bytes */

/* ts: Offsets of its fields, u32 each but the u64 TTL (in ns). */
enum nfqlb_ftstat {
	NFQLB_FTSTATS_TTL = 0,
	NFQLB_FTSTATS_SIZE = 8,
	NFQLB_FTSTATS_ACTIVE = 12,
	NFQLB_FTSTATS_COLLISIONS = 16,
	NFQLB_FTSTATS_INSERTS = 20,
	NFQLB_FTSTATS_REJECTED = 24,
	NFQLB_FTSTATS_LOOKUPS = 28,
	NFQLB_FTSTATS_OBJGC = 32,
	NFQLB_FTSTATS_MTU = 40,
	NFQLB_FTSTATS_BUCKETSMAX = 44,
	NFQLB_FTSTATS_BUCKETSALLOC = 48,
	NFQLB_FTSTATS_BUCKETSUSED = 52,
	NFQLB_FTSTATS_FRAGSMAX = 56,
	NFQLB_FTSTATS_FRAGSDISCARDED = 60,
	NFQLB_FTSTATS_FRAGSALLOC = 64,
	NFQLB_FTSTATS_REASSEMBLED = 68
};

struct nfqlb_fragtable;

/**
 * nfqlb_ft_create - a table of `size` slots plus `buckets` extra entries;
 * entries live `ttl_ms` after their last use. `frags` buffers of `mtu` bytes
 * keep fragments that come before their first fragment (0: none are kept and
 * such datagrams are lost); `reassembler` hole descriptors (RFC 815) let
 * complete datagrams free their entry early (0: off). `stats` is the 72-byte
 * ftshm record for the counters (or NULL). NULL on bad sizes or no memory.
 */
struct nfqlb_fragtable* nfqlb_ft_create(uint32_t size, uint32_t buckets, uint32_t ttl_ms, uint32_t mtu,
					uint32_t frags, uint32_t reassembler, uint8_t* stats);

/** nfqlb_ft_destroy - free the table. */
void nfqlb_ft_destroy(struct nfqlb_fragtable* ft);

/**
 * nfqlb_ft_first - a first fragment got `fwmark`: remember it. Returns 0, or
 * -1 when the table is full. A first fragment whose id is already known
 * starts the entry afresh (senders reuse ids within the TTL), unless it is a
 * duplicate with the same fwmark. *inject gets the
 * chain of fragments stored before it (-1: none); pass it to nfqlb_ft_inject.
 * info: {offset, length, more} of the fragment (nfqlb_packet_fraginfo) or
 * NULL, for the reassembler.
 */
int32_t nfqlb_ft_first(struct nfqlb_fragtable* ft, const uint8_t* fkey, int32_t fwmark, uint64_t now_ns,
		       const uint32_t* info, int32_t* inject);

/**
 * nfqlb_ft_next - a later fragment (pkt/len: the whole IP packet). Returns 0
 * with *fwmark when its first fragment has been seen; 1 when it came first and
 * was stored (drop the original: a copy is re-injected later); -1 when it is
 * lost (table or store full, too long, or the datagram is poisoned).
 */
int32_t nfqlb_ft_next(struct nfqlb_fragtable* ft, const uint8_t* fkey, uint64_t now_ns, const uint8_t* pkt,
		      uint32_t len, const uint32_t* info, int32_t* fwmark);

/**
 * nfqlb_ft_inject - write each stored fragment of `chain` to the tun device
 * (they come back through the queue and find their fwmark) and free them.
 * Returns how many were written; *failed counts the others.
 */
uint32_t nfqlb_ft_inject(struct nfqlb_fragtable* ft, int32_t chain, int32_t tun_fd, uint32_t* failed);

/* ----------------------------------------------------------------------------
 * tun.c
 * ------------------------------------------------------------------------- */

/**
 * nfqlb_tun_open - attach to tun device `name` (IFF_TUN | IFF_NO_PI), as
 * `ip tuntap add mode tun` creates it. Returns the fd or -errno.
 */
int32_t nfqlb_tun_open(const char* name);

/** nfqlb_tun_close - close(2) a tun fd of nfqlb_tun_open; returns 0 or -errno. */
int32_t nfqlb_tun_close(int32_t fd);

/* ----------------------------------------------------------------------------
 * lb.c - the per-packet decision of `lb`.
 * ------------------------------------------------------------------------- */

/* ts: Per-queue counters (u64 each), indexes into the counters array. */
enum nfqlb_counter {
	NFQLB_C_RECEIVED = 0,
	NFQLB_C_ACCEPTED,
	NFQLB_C_DROPPED,
	NFQLB_C_MALFORMED,
	NFQLB_C_NOTARGET,
	NFQLB_C_FRAG_DROPPED,
	NFQLB_C_ENOBUFS,
	NFQLB_C_RECV_ERRORS,
	NFQLB_C_SEND_ERRORS,
	NFQLB_C_VERDICT_ERRORS,
	NFQLB_C_BATCHES,
	NFQLB_C_SETUP_DROPPED,
	NFQLB_C_FRAG_STORED,   /* kept until their first fragment comes */
	NFQLB_C_FRAG_INJECTED, /* written back through the tun device */
	NFQLB_C_FRAG_INJECT_FAILED,
	NFQLB_C_FRAG_TIER,     /* forwarded to the LB that owns them (LB tier) */
	NFQLB_C_NOLB,          /* flowlb: no flow matched */
	NFQLB_C_TARGET_OVERFLOW, /* accepted, but the per-target table was full */
	NFQLB_C_TABLE_ERRORS,    /* a shm file in use found damaged (once per incident) */
	NFQLB_C_COUNT
};

struct nfqlb_lb;

/**
 * nfqlb_lb_create - classifier over a mapped target table (tshm), an
 * optional fragment table, hash_mode, the SCTP-over-UDP port and the
 * fwmark to return when the table has no target (-1 = drop).
 */
struct nfqlb_lb* nfqlb_lb_create(const uint8_t* tshm, struct nfqlb_fragtable* ft, uint32_t hash_mode,
				 uint32_t sctp_encap, int32_t notargets_fwmark);

struct nfqlb_flows;

/**
 * nfqlb_lb_create_flows - a flowlb classifier for worker `slot` of the
 * shared flow set `flows`: no target table of its own; the matched flow's is
 * used. nolb_fwmark is returned when no flow matches (-1 = drop).
 */
struct nfqlb_lb* nfqlb_lb_create_flows(struct nfqlb_flows* flows, uint32_t slot, struct nfqlb_fragtable* ft,
				       uint32_t hash_mode, int32_t notargets_fwmark, int32_t nolb_fwmark,
				       uint32_t promiscuous);

/** nfqlb_lb_enter / nfqlb_lb_leave - a worker starts / ends a batch (flowlb: announce the set in use). */
void nfqlb_lb_enter(struct nfqlb_lb* lb);
/** See nfqlb_lb_enter. */
void nfqlb_lb_leave(struct nfqlb_lb* lb);

struct nfqlb_trace_ring; /* trace.c */

/**
 * nfqlb_lb_set_trace - trace this classifier's packets (see trace.c below):
 * `mask` is the process's trace-mask word (nfqlb_trace_mask_create; read once
 * per packet, 0 = nothing else happens), `ring` receives the records (one
 * per traced packet; the caller drains it between batches, on the same
 * thread), `tflows` (flowlb, or NULL) holds the trace flows, published with
 * nfqlb_flows_publish where the "table" of flow i is its trace-flow id
 * (any non-zero u32; the flows are built with NFQLB_FLOW_F_TARGET and no
 * udpencap, and matched with promiscuous ping on, as upstream's trace set).
 * mask or ring NULL turns tracing off. Call from the thread that classifies,
 * before it serves (or between batches).
 */
void nfqlb_lb_set_trace(struct nfqlb_lb* lb, const uint32_t* mask, struct nfqlb_trace_ring* ring,
			struct nfqlb_flows* tflows);

/**
 * nfqlb_lb_set_frag - fragment handling beyond the table: lbshm, the LB-tier
 * table (NULL: no tier), tun_fd for re-injecting stored fragments (-1: none),
 * reassembler (feed fragment offsets to the table's reassembler).
 */
void nfqlb_lb_set_frag(struct nfqlb_lb* lb, const uint8_t* lbshm, int32_t tun_fd, uint32_t reassembler);

/**
 * nfqlb_lb_set_conntrack - consult the connection table mapped at `ct`
 * (ct.c; NULL: none, the default) before Maglev: a live entry whose
 * target is still in the table (active[row] == its fwmark, draining
 * included; or an entry without a row) keeps its fwmark; else Maglev
 * decides and the result is inserted. Non-first fragments are unchanged
 * (fragment table). lb only: ignored by a flowlb classifier, whose tables
 * come with the flows (nfqlb_flows_publish_ct).
 */
void nfqlb_lb_set_conntrack(struct nfqlb_lb* lb, uint8_t* ct);

/** nfqlb_lb_set_tshm - switch to another mapped table (after init replaced it). */
void nfqlb_lb_set_tshm(struct nfqlb_lb* lb, const uint8_t* tshm);

/**
 * nfqlb_lb_set_view - lb: classify with the copy of `view` (tshm_view.c),
 * refreshed by nfqlb_lb_refresh; the previous view is no longer touched once
 * this returns. From the classifying thread, between batches.
 */
void nfqlb_lb_set_view(struct nfqlb_lb* lb, struct nfqlb_tshm_view* view);

/** nfqlb_lb_set_tier_view - the LB-tier table as a view (NULL: no tier); as nfqlb_lb_set_view. */
void nfqlb_lb_set_tier_view(struct nfqlb_lb* lb, struct nfqlb_tshm_view* view);

/**
 * nfqlb_lb_refresh - refresh the views the classifier reads (its own, the
 * tier's, flowlb: those of the current flow set) from their files, before a
 * batch is classified; incidents count in counters (nfqlb_tshm_view_refresh).
 */
void nfqlb_lb_refresh(struct nfqlb_lb* lb, uint64_t* counters);

/** nfqlb_lb_destroy - free the classifier. */
void nfqlb_lb_destroy(struct nfqlb_lb* lb);

/**
 * nfqlb_lb_decide - nfqlb_lb_classify for a copy of `len` bytes of a packet
 * of `orig_len` bytes (NFQUEUE may truncate the copy; a truncated fragment is
 * never stored for re-injection).
 */
int32_t nfqlb_lb_decide(struct nfqlb_lb* lb, uint32_t hw_proto, const uint8_t* pkt, uint32_t len,
			uint32_t orig_len, uint64_t now_ns, uint64_t* counters);

/**
 * nfqlb_lb_classify - fwmark for a packet (>= 0 accept with this mark,
 * < 0 drop). Counts malformed / no-target / dropped fragments in counters[].
 */
int32_t nfqlb_lb_classify(struct nfqlb_lb* lb, uint32_t hw_proto, const uint8_t* pkt, uint32_t len,
			  uint64_t now_ns, uint64_t* counters);

/** nfqlb_lb_prefetches - 1 when nfqlb_lb_prefetch does anything for this classifier, else 0. */
int32_t nfqlb_lb_prefetches(const struct nfqlb_lb* lb);

/**
 * nfqlb_lb_prefetch - when the classifier keeps a connection table
 * (lb, not flowlb): compute the packet's key into key[40] and
 * nfqlb_ct_prefetch it; returns 1 (key holds a key for
 * nfqlb_lb_prefetch_ways), else 0 (nothing to prefetch: no table, a
 * malformed packet or a non-first fragment). nfqlb_queue_serve runs it a
 * few packets ahead of the decision when nfqlb_lb_prefetches(lb) is 1.
 */
int32_t nfqlb_lb_prefetch(struct nfqlb_lb* lb, uint32_t hw_proto, const uint8_t* pkt, uint32_t len, uint8_t* key);

/** nfqlb_lb_prefetch_ways - nfqlb_ct_prefetch_ways on the classifier's table (none: nothing). */
void nfqlb_lb_prefetch_ways(struct nfqlb_lb* lb, const uint8_t* key);

/* ----------------------------------------------------------------------------
 * flows.c - the published flow set of a flowlb, shared by its workers.
 * ------------------------------------------------------------------------- */

struct nfqlb_flowset; /* flowset.c */

/** nfqlb_flows_create - an empty flow set for `nworkers` queue workers. */
struct nfqlb_flows* nfqlb_flows_create(uint32_t nworkers);

/** nfqlb_flows_destroy - free it and every flow set it holds (workers stopped). */
void nfqlb_flows_destroy(struct nfqlb_flows* f);

/**
 * nfqlb_flows_publish_ct - nfqlb_flows_publish where ct[i] (ct may be NULL)
 * is the address of the mapped connection table of flow i's target (0 for
 * none; ignored where tshm[i] is 0). Packets of that flow then use the table
 * as lb does (nfqlb_lb_set_conntrack), with the table's scheduler; each
 * worker's scheduler cache per table is allocated here and freed with the set.
 */
uint32_t nfqlb_flows_publish_ct(struct nfqlb_flows* f, struct nfqlb_flowset* fs, const uint64_t* tshm,
				const uint64_t* ct, uint32_t n);

/**
 * nfqlb_flows_publish - make `fs` (built; ownership passes) current, with
 * tshm[i] = address of flow i's mapped target table (0 for none). The old
 * set is retired. Returns the new generation (0: out of memory, fs kept).
 */
uint32_t nfqlb_flows_publish(struct nfqlb_flows* f, struct nfqlb_flowset* fs, const uint64_t* tshm, uint32_t n);

/**
 * nfqlb_flows_publish_views - nfqlb_flows_publish_ct with views[i] the
 * address of flow i's target table view (tshm_view.c; 0 for none): flow i
 * reads that view's copy, and the workers refresh the set's views before
 * each batch (nfqlb_flows_refresh). A view must outlive every set naming it
 * (retire it as a table: after nfqlb_flows_reclaim returns 0).
 */
uint32_t nfqlb_flows_publish_views(struct nfqlb_flows* f, struct nfqlb_flowset* fs, const uint64_t* views,
				   const uint64_t* ct, uint32_t n);

/**
 * nfqlb_flows_reclaim - free retired sets that no worker can be using any
 * more; returns how many are still retired (0: every target table that the
 * current set does not name may be unmapped). Control thread only.
 */
uint32_t nfqlb_flows_reclaim(struct nfqlb_flows* f);

/** nfqlb_flows_matches - matches_count of flow i of the current set. */
uint32_t nfqlb_flows_matches(const struct nfqlb_flows* f, uint32_t i);

/** nfqlb_flows_enter / nfqlb_flows_leave - worker `slot` starts / ends using the current set. */
void nfqlb_flows_enter(struct nfqlb_flows* f, uint32_t slot);
/** See nfqlb_flows_enter. */
void nfqlb_flows_leave(struct nfqlb_flows* f, uint32_t slot);

struct nfqlb_ct_sched; /* ct_sched.c */

/**
 * nfqlb_flows_pick_ct - nfqlb_flows_pick for worker `slot`, also giving the
 * picked flow's connection table (*ct, NULL: none) and that worker's
 * scheduler cache for it (*sched, NULL: none or no memory, Maglev decides).
 */
const uint8_t* nfqlb_flows_pick_ct(struct nfqlb_flows* f, uint32_t slot, uint32_t hw_proto, const uint8_t* pkt,
				   uint32_t len, uint32_t promiscuous, uint8_t* key, uint8_t* fkey, int32_t* rc,
				   uint8_t** ct, struct nfqlb_ct_sched** sched);

/**
 * nfqlb_flows_pick - the target table of the first matching flow for a
 * packet whose key (udpencap 0) is in key/fkey, or NULL. Re-keys with the
 * flow's UDP encapsulation port when a flow reports one (as upstream's flowlb); *rc
 * then holds the new nfqlb_packet_key result.
 */
const uint8_t* nfqlb_flows_pick(struct nfqlb_flows* f, uint32_t hw_proto, const uint8_t* pkt, uint32_t len,
				uint32_t promiscuous, uint8_t* key, uint8_t* fkey, int32_t* rc);

/**
 * nfqlb_flows_refresh - nfqlb_tshm_view_refresh of every view of the
 * current set, by a worker that has entered (nfqlb_lb_refresh calls it).
 */
void nfqlb_flows_refresh(struct nfqlb_flows* f, uint64_t* counters);

/* ----------------------------------------------------------------------------
 * target_stats.c - packets and bytes accepted per fwmark, by one queue: an
 * open-addressing table in the lb's counters shm (core/counters_shm.ts).
 * ------------------------------------------------------------------------- */

/** ts: Packets and bytes accepted with one fwmark, by one queue (24 bytes, in the counters shm). */
struct nfqlb_target_stat {
	int32_t fwmark;
	uint32_t used;
	uint64_t packets;
	uint64_t bytes;
};

/**
 * nfqlb_target_stats_add - count one accepted packet of `bytes` for `mark`
 * in a per-target table of ntstats (a power of 2) slots; a full table counts
 * NFQLB_C_TARGET_OVERFLOW in counters. Single writer.
 */
void nfqlb_target_stats_add(struct nfqlb_target_stat* tstats, uint32_t ntstats, int32_t mark, uint32_t bytes,
			    uint64_t* counters);

/* ----------------------------------------------------------------------------
 * queue.c - batched NFQUEUE I/O (libmnl, libnetfilter_queue).
 * ------------------------------------------------------------------------- */

/* ts: Flags of nfqlb_queue_open. */
#define NFQLB_QF_FAIL_OPEN 1u /* NFQA_CFG_F_FAIL_OPEN: accept when the queue is full */

struct nfqlb_queue;

/**
 * nfqlb_queue_set_stats - keep this queue's counters (NFQLB_C_COUNT u64) in
 * `counters` from now on (the current values are copied there), and count
 * accepted packets and bytes per fwmark in `tstats` (ntstats slots, a power
 * of 2; NULL: off). Both usually live in the lb's counters shm, so `nfqlb
 * stats --all` and the metrics endpoint read them live. Call before serving.
 */
void nfqlb_queue_set_stats(struct nfqlb_queue* q, uint64_t* counters, struct nfqlb_target_stat* tstats,
			   uint32_t ntstats);

/** nfqlb_queue_close - unbind (when bound) and close. */
void nfqlb_queue_close(struct nfqlb_queue* q);

/**
 * nfqlb_queue_open - the netlink socket and buffers for NFQUEUE `queue_num`,
 * not bound yet (nfqlb_queue_bind): copy `copy_range` bytes per packet (0 or
 * > mtu: mtu; headers are enough unless fragments are stored), queue max
 * length `qlength`, GSO, optional fail-open, NETLINK_NO_ENOBUFS, receive
 * buffer (qlength*mtu/2)&~0xfff (forced when allowed). Receives up to
 * `batch` packets per call. rcvbuf[0] = SO_RCVBUF read back, rcvbuf[1] =
 * requested. On failure returns NULL with -errno in *err.
 */
struct nfqlb_queue* nfqlb_queue_open(uint32_t queue_num, uint32_t mtu, uint32_t copy_range, uint32_t qlength,
				     uint32_t flags, uint32_t batch, int32_t* err, uint32_t* rcvbuf);

/**
 * nfqlb_queue_bind - bind the queue and configure it in one message; from
 * here on the kernel queues packets to us instead of passing them (rule
 * with --queue-bypass) or dropping them, so call it last, right before
 * serving. Packets that come before the kernel's ACK are decided with `lb`
 * (NULL: dropped, counted NFQLB_C_SETUP_DROPPED). 0, or -errno (EPERM: no
 * CAP_NET_ADMIN or bound by another process).
 */
int32_t nfqlb_queue_bind(struct nfqlb_queue* q, struct nfqlb_lb* lb);

/**
 * nfqlb_queue_drain - the hand-over before close: the kernel stops queueing
 * to us (fail-open, then queue length 0: new packets pass unbalanced, as
 * after the unbind with --queue-bypass), and every packet it had queued is
 * decided with `lb`, so the unbind drops nothing. Returns the packets decided
 * meanwhile, or -errno (then close unbinds anyway).
 */
int32_t nfqlb_queue_drain(struct nfqlb_queue* q, struct nfqlb_lb* lb);

/** nfqlb_queue_fd - the netlink socket. */
int32_t nfqlb_queue_fd(const struct nfqlb_queue* q);

/**
 * nfqlb_queue_count - add n to one counter atomically, from a thread other
 * than the queue's (the lb's control thread counting NFQLB_C_TABLE_ERRORS).
 */
void nfqlb_queue_count(struct nfqlb_queue* q, uint32_t counter, uint64_t n);

/** nfqlb_queue_counters - copy up to n counters (enum nfqlb_counter order). */
void nfqlb_queue_counters(const struct nfqlb_queue* q, uint64_t* out, uint32_t n);

/**
 * nfqlb_queue_serve - wait up to timeout_ms for packets, then receive one
 * batch, classify each with `lb` and send all verdicts in one sendto.
 * Returns the number of packets handled (0 on timeout). Never fails: errors
 * are counted in the queue's counters.
 */
int32_t nfqlb_queue_serve(struct nfqlb_queue* q, struct nfqlb_lb* lb, uint32_t timeout_ms);

/* ts: How often nfqlb_queue_serve_until looks at its hand-over request when no packet comes (ms). */
#define NFQLB_SERVE_UNTIL_POLL_MS 2u

/**
 * nfqlb_queue_serve_until - serve the queue (nfqlb_queue_serve with a short
 * timeout) until handover[0] != 0 or for max_ms, then set handover[1] = 1
 * and return the packets handled. lb runs it in a thread of its own (a
 * non-blocking FFI call) from the bind until the queue's Worker has started
 * and takes the queue over: a Worker takes 13-40 ms to start, and the
 * queue must not wait unread meanwhile. The caller uses q and lb again only
 * after seeing handover[1] (release/acquire).
 */
int32_t nfqlb_queue_serve_until(struct nfqlb_queue* q, struct nfqlb_lb* lb, int32_t* handover, uint32_t max_ms);

/* ----------------------------------------------------------------------------
 * flow.c - one flow of a flowlb flow set: its binary spec
 * (core/flow/encode.ts encodes it), parsed and validated, and its match
 * (upstream flowMatch + match.c). flowset.c calls these; none is exported.
 * layout: docs/flows.md#the-flow-spec
 * ------------------------------------------------------------------------- */

/* ts: The spec's header, and the limits of its arrays. */
#define NFQLB_FLOW_SPEC_MAGIC 0x31574c46u /* "FLW1" */
#define NFQLB_FLOW_SPEC_WORDS 9u          /* header words */
#define NFQLB_FLOW_MAX_CIDRS 32u          /* dsts, srcs */
#define NFQLB_FLOW_MAX_RANGES 65536u      /* dports, sports */
#define NFQLB_FLOW_MAX_MATCH 1024u        /* byte-match statements */

/* ts: Spec flags (w1): which criteria a flow has. */
#define NFQLB_FLOW_F_PROTOCOLS 1u
#define NFQLB_FLOW_F_DSTS 2u
#define NFQLB_FLOW_F_SRCS 4u
#define NFQLB_FLOW_F_DPORTS 8u
#define NFQLB_FLOW_F_SPORTS 16u
#define NFQLB_FLOW_F_MATCH 32u
#define NFQLB_FLOW_F_TARGET 64u /* clear: a `#name` udpencap companion flow */

/* ----------------------------------------------------------------------------
 * flowset.c - the flow matcher of `flowlb` (upstream flowLookup), indexed.
 *
 * A flow set holds n flows in priority order (flow 0 first: the caller sorts
 * as upstream, priority descending, ties in insertion order), each given as
 * a spec (flow.c above). Once built, a set is immutable except for its
 * match counters, and any number of threads may match against it at once
 * without locks.
 * ------------------------------------------------------------------------- */

struct nfqlb_flowset;

/* ts: Flows per set. */
#define NFQLB_FLOWSET_MAX (1u << 20)

/** nfqlb_flowset_new - an empty set of nflows slots (<= NFQLB_FLOWSET_MAX); NULL on bad size or no memory. */
struct nfqlb_flowset* nfqlb_flowset_new(uint32_t nflows);

/**
 * nfqlb_flowset_add - define flow i (0 = highest priority) from a spec of
 * speclen bytes. Returns 0, or -1 (bad spec, i out of range, slot already
 * defined, set already built, no memory).
 */
int32_t nfqlb_flowset_add(struct nfqlb_flowset* fs, uint32_t i, const uint8_t* spec, uint32_t speclen);

/** nfqlb_flowset_match_linear - the same result and counting by a plain walk over every flow (reference). */
int32_t nfqlb_flowset_match_linear(const struct nfqlb_flowset* fs, const uint8_t* key, const uint8_t* pkt,
				   uint32_t len, uint32_t promiscuous, uint32_t* udpencap);

/**
 * nfqlb_flowset_build - build the index once every slot is defined. Returns
 * 0 (also when already built) or -1 (a slot is undefined, no memory). An
 * index dimension that would exceed its memory budget is left out (the
 * result is the same, only slower); see flowset.c for the worst cases.
 */
int32_t nfqlb_flowset_build(struct nfqlb_flowset* fs);

/**
 * nfqlb_flowset_match - upstream flowLookup on a built set. Walks the flows
 * in priority order (through the index: only flows that can match are
 * visited) and returns the index of the first flow that matches and has a
 * target (NFQLB_FLOW_F_TARGET), or -1 when there is none (or the set is not
 * built). Every matching flow visited on the way (target-less companions,
 * promiscuous-ping matches, the winner) has its counter incremented.
 * *udpencap (may be NULL) gets, as upstream, the udpencap of the last flow
 * on the walk that matched on all its criteria: the winner's, or when no
 * flow wins, the last matching companion's; 0 when no flow matched on all
 * its criteria (a promiscuous-ping match never sets it). So on -1 with
 * *udpencap != 0 and a UDP key whose dport equals it, the caller re-keys the
 * packet with that UDP-encapsulation port and matches again (as upstream's flowlb;
 * c/flows.c nfqlb_flows_pick does).
 * key: the 40-byte key (nfqlb_packet_key); pkt/len: the IP packet for
 * byte-match statements (len 0: statements are not evaluated, as upstream
 * without packet data); promiscuous: flowlb --promiscuous_ping.
 * Matching (upstream flowMatch): dsts, srcs; then if promiscuous and the key
 * proto is ICMP (1) or ICMPv6 (58) the flow matches; else protocols, dport,
 * sport, byte-match. Byte-match finds the L4 header (IPv4: IHL*4; IPv6:
 * hop-by-hop/routing/dest-opts headers by (len+1)*8; a fragment header
 * never matches), for a UDP packet with an SCTP key skips the 8-byte UDP
 * header and reads it as SCTP, and needs the whole L4 header in the packet
 * (exact bounds, as c/packet.c); statements for another protocol pass.
 */
int32_t nfqlb_flowset_match(const struct nfqlb_flowset* fs, const uint8_t* key, const uint8_t* pkt, uint32_t len,
			    uint32_t promiscuous, uint32_t* udpencap);

/** nfqlb_flowset_matches - matches_count of flow i (0 when out of range). */
uint32_t nfqlb_flowset_matches(const struct nfqlb_flowset* fs, uint32_t i);

/** nfqlb_flowset_set_matches - set the counter of flow i (carry counts over to a rebuilt set). */
void nfqlb_flowset_set_matches(struct nfqlb_flowset* fs, uint32_t i, uint32_t n);

/* ts: Index dimensions, bits of nfqlb_flowset_index_dims. */
#define NFQLB_FLOWIX_DPORT 1u
#define NFQLB_FLOWIX_SPORT 2u
#define NFQLB_FLOWIX_DST 4u
#define NFQLB_FLOWIX_SRC 8u
#define NFQLB_FLOWIX_JOINT 16u /* dport x dst: one lookup gives the flows matching both */

/** nfqlb_flowset_index_dims - which dimensions the built index uses (introspection for tests and bench). */
uint32_t nfqlb_flowset_index_dims(const struct nfqlb_flowset* fs);

/** nfqlb_flowset_index_bytes - heap bytes of the built index (flows not included). */
uint64_t nfqlb_flowset_index_bytes(const struct nfqlb_flowset* fs);

/** nfqlb_flowset_free - free the set (NULL is fine). */
void nfqlb_flowset_free(struct nfqlb_flowset* fs);

/* ----------------------------------------------------------------------------
 * trace.c - per-packet trace records (upstream's trace lines).
 *
 * The classifier checks one u32, the process's trace mask, per packet. It is
 * the union of the masks of the connected trace clients (the control thread
 * sets it; 0 when no client is attached), so with no client the whole cost
 * is that load and a branch; building lb.c with -DNFQLB_NO_TRACE removes even
 * that (the bench compares both). When bits are set, each packet whose lines
 * fall under them leaves one fixed-size record in its queue's ring; the
 * worker copies the ring out after each batch and the control thread turns
 * records into upstream's text lines (dataplane/trace_format.ts). A full
 * ring drops records and counts them: tracing never blocks nor allocates.
 * ------------------------------------------------------------------------- */

/* ts: Trace mask bits (upstream's, `nfqlb trace --selection`). */
#define NFQLB_TRACE_LOG 0x01u
#define NFQLB_TRACE_PACKET 0x02u
#define NFQLB_TRACE_FRAG 0x04u
#define NFQLB_TRACE_FLOW_CONF 0x08u
#define NFQLB_TRACE_SCTP 0x10u
#define NFQLB_TRACE_TARGET 0x20u
#define NFQLB_TRACE_FLOWS 0x40u

/* ts: Record events (what happened to the packet), bits of nfqlb_trace_rec.events. */
#define NFQLB_TEV_MALFORMED 0x0001u     /* no key (rc < 0): dropped */
#define NFQLB_TEV_TIER 0x0002u          /* fragment forwarded to its LB in the tier (fw) */
#define NFQLB_TEV_FRAG_STORED 0x0004u   /* non-first fragment kept until its first */
#define NFQLB_TEV_FRAG_DROPPED 0x0008u  /* non-first fragment lost */
#define NFQLB_TEV_FRAG_LOCAL 0x0010u    /* non-first fragment: its first's fwmark (fw) */
#define NFQLB_TEV_FIRST 0x0020u         /* first fragment: fwmark stored */
#define NFQLB_TEV_FIRST_FAILED 0x0040u  /* first fragment could not be stored: dropped */
#define NFQLB_TEV_INJECT 0x0080u        /* stored fragments re-injected (inject_ok, inject_failed) */
#define NFQLB_TEV_NOLB 0x0100u          /* flowlb: no flow matched (verdict = nolb fwmark) */
#define NFQLB_TEV_NOTARGET 0x0200u      /* the table has no target for the hash (verdict = notargets) */
#define NFQLB_TEV_LB 0x0400u            /* load-balanced: verdict = fw */
#define NFQLB_TEV_UDPENCAP 0x0800u      /* flowlb: SCTP over UDP, re-keyed (udpencap) */
#define NFQLB_TEV_REKEY_FAILED 0x1000u  /* flowlb: the re-key failed: dropped */
#define NFQLB_TEV_NOLB_UDPENCAP 0x2000u /* flowlb: no flow for the re-keyed packet */
#define NFQLB_TEV_TFLOW 0x4000u         /* flowlb: matches trace flow `tflow` */
#define NFQLB_TEV_ICMP 0x8000u          /* an ICMP/ICMPv6 packet: icmp_* are valid */
#define NFQLB_TEV_FLOWLB 0x10000u       /* the classifier is flowlb's */

/** ts: One traced packet, 96 bytes, little-endian fields at fixed offsets. */
struct nfqlb_trace_rec {
	uint32_t events;   /* 0  NFQLB_TEV_* */
	int32_t rc;        /* 4  nfqlb_packet_key result (first key) */
	int32_t fw;        /* 8  the fwmark the lines name (tier, stored, table lookup) */
	int32_t verdict;   /* 12 what the classifier returned (< 0: drop) */
	uint32_t len;      /* 16 packet length (before any NFQUEUE truncation) */
	uint16_t hw_proto; /* 20 0x0800 / 0x86dd */
	uint16_t proto;    /* 22 L4 protocol of the final key (after an SCTP re-key) */
	uint64_t target;   /* 24 flowlb: address of the chosen flow's target table (0: none) */
	uint32_t tflow;    /* 32 trace-flow id (NFQLB_TEV_TFLOW) */
	uint16_t udpencap; /* 36 UDP port of the re-key (NFQLB_TEV_UDPENCAP) */
	uint8_t icmp_type; /* 38 */
	uint8_t icmp_code; /* 39 */
	uint16_t icmp_id;  /* 40 host order */
	uint16_t icmp_seq; /* 42 host order */
	uint32_t icmp_mtu; /* 44 frag-needed / packet-too-big */
	uint8_t key[NFQLB_KEY_LEN]; /* 48 the key flows match on (before an SCTP re-key) */
	uint32_t inject_ok;         /* 88 */
	uint32_t inject_failed;     /* 92 */
};

/* ts: Sizes of a record and of a ring. */
#define NFQLB_TRACE_REC_LEN 96u       /* bytes of a record (sizeof struct nfqlb_trace_rec) */
#define NFQLB_TRACE_RING_HEADER 16u   /* bytes before the records of a ring */
#define NFQLB_TRACE_RING_MAX 65536u   /* records of a ring, at most */

/** A record ring: the header, then cap records. Single thread: filled by classify, emptied by its caller. */
struct nfqlb_trace_ring {
	uint32_t count;   /* records held */
	uint32_t cap;     /* records it can hold */
	uint32_t dropped; /* records lost because it was full (the reader resets it) */
	uint32_t reserved;
	struct nfqlb_trace_rec rec[];
};

/** nfqlb_trace_mask_create - a zeroed trace-mask word (shared by a process's classifiers). NULL: no memory. */
uint32_t* nfqlb_trace_mask_create(void);

/** nfqlb_trace_mask_set - store a new mask (any thread; classifiers see it from their next packet). */
void nfqlb_trace_mask_set(uint32_t* word, uint32_t mask);

/** nfqlb_trace_mask_free - free the word (no classifier may still use it). */
void nfqlb_trace_mask_free(uint32_t* word);

/** nfqlb_trace_ring_create - an empty ring of cap records (1..NFQLB_TRACE_RING_MAX); NULL otherwise. */
struct nfqlb_trace_ring* nfqlb_trace_ring_create(uint32_t cap);

/** nfqlb_trace_ring_free - free it (NULL is fine). */
void nfqlb_trace_ring_free(struct nfqlb_trace_ring* r);

/** nfqlb_trace_commit - append a copy of rec, or count it as dropped when the ring is full. */
void nfqlb_trace_commit(struct nfqlb_trace_ring* r, const struct nfqlb_trace_rec* rec);

/**
 * nfqlb_trace_icmp - when pkt[0..len) is an ICMP (hw_proto 0x0800) or
 * ICMPv6 (0x86dd, after hop-by-hop/routing/dest-opts headers and a first
 * fragment's header) packet with its whole 8-byte header, set
 * NFQLB_TEV_ICMP and the icmp_* fields of rec (type, code; echo id and
 * sequence; the frag-needed / packet-too-big MTU). Returns 1, else 0 and
 * rec is unchanged. Never reads outside pkt[0..len).
 */
int32_t nfqlb_trace_icmp(uint32_t hw_proto, const uint8_t* pkt, uint32_t len, struct nfqlb_trace_rec* rec);

/** nfqlb_trace_categories - the trace bits whose lines a record with these events (and L4 proto) has. */
uint32_t nfqlb_trace_categories(uint32_t events, uint32_t proto);

/* ----------------------------------------------------------------------------
 * ctnl.c - the kernel's conntrack over NETLINK_NETFILTER (control plane).
 * ------------------------------------------------------------------------- */

/**
 * nfqlb_ctnl_set_mark - set the mark of the kernel conntrack entry whose
 * original tuple is the flow of key[0..len) (a 40-byte key of hash.c; IPv4
 * when both addresses are IPv4-mapped), in the caller's network namespace.
 * Updates only (no entry is created). Returns 0, or -errno: -ENOENT no such
 * entry, -EPROTONOSUPPORT a protocol other than TCP/UDP/SCTP, -EINVAL a bad
 * key or len < 40, -EPERM without CAP_NET_ADMIN, -ETIMEDOUT no answer.
 */
int32_t nfqlb_ctnl_set_mark(const uint8_t* key, uint32_t len, uint32_t mark);

/**
 * nfqlb_ctnl_flush_mark - delete every kernel conntrack entry of family
 * (4 or 6) whose mark is exactly mark (not 0), in the caller's network
 * namespace: one request, the kernel walks its table (lb --offload=auto, when
 * a target leaves its table). Returns 0 (also when none matched), or -errno:
 * -EINVAL bad family or mark 0, -EPERM without CAP_NET_ADMIN, -ETIMEDOUT.
 */
int32_t nfqlb_ctnl_flush_mark(uint32_t family, uint32_t mark);

/* ----------------------------------------------------------------------------
 * ct.c - an optional connection table (flow key -> fwmark/row) in a
 * caller-provided region, normally a shm file beside the target table, shared
 * by every queue worker thread and the CLI process. Used by lb when the file
 * exists (nfqlb_lb_set_conntrack), by flowlb per flow target
 * (nfqlb_flows_publish_ct). See docs/conntrack.md.
 * layout: docs/conntrack.md#layout-version-2-little-endian
 *
 * Keys are the 40-byte keys of hash.c; byte 35 (the high byte of the
 * little-endian proto) must be 0 (every IP protocol fits one byte): the
 * stored copy keeps the entry's flags there. Keys with byte 35 != 0 are
 * refused (insert/set/delete -1, lookup a miss).
 *
 * Time: now_ns is CLOCK_MONOTONIC in ns (nfqlb_ct_admin_clock_ns); entries keep
 * milliseconds mod 2^32, so ages and idle times are exact to the ms and wrap
 * after 49.7 days. An entry expires when its idle time is strictly greater
 * than its lifetime (per protocol: TCP 6, UDP 17, other; or set per entry);
 * pinned entries never expire and are never recycled. Expired entries are
 * reclaimed lazily (when their bucket is searched for a free way, when a
 * lookup finds one, when listed).
 *
 * Concurrency: any number of threads and processes may call any function at
 * once; a bucket spinlock serialises the work on one bucket (8 entries). A
 * lock word holds its owner's kernel tid; a waiter that spun for a while asks
 * whether that thread still exists and takes the lock over if not (counted in
 * NFQLB_CT_STAT_LOCK_STEALS), so a crashed process never leaves the table
 * locked. All users must share a PID namespace.
 * ------------------------------------------------------------------------- */

/* ts: The connection table's file, and its limits. */
#define NFQLB_CT_MAGIC 0x5843514eu /* "NQCX" */
#define NFQLB_CT_VERSION 2u /* 2: scheduler id, rr position, per-row counts */
#define NFQLB_CT_OFF_VERSION 4u           /* u16 version in the header (ct_internal.h asserts it) */
#define NFQLB_CT_ENTRY_BYTES 64u
#define NFQLB_CT_CTX_MAX 256u             /* bytes of opaque context per entry */
#define NFQLB_CT_MAX_CAPACITY (1u << 28)  /* entries (16 GiB) */
#define NFQLB_CT_MAX_CTX (1u << 24)       /* context records */
#define NFQLB_CT_MAX_TTL_MS 0x7fffffffu   /* lifetime of a protocol */
#define NFQLB_CT_MAX_LIFETIME_MS 32767000u /* lifetime of one entry (32767 s; pin for longer) */

/* ts: Entry flags (nfqlb_ct_record.flags). */
#define NFQLB_CT_F_PINNED 1u    /* fwmark set by the operator: never expires, never recycled */
#define NFQLB_CT_F_OFFLOADED 2u /* the flow is handled elsewhere (informational for now) */
#define NFQLB_CT_F_CTX 4u       /* the entry has a context (record only) */

/* ts: Counters, indexes into nfqlb_ct_admin_stats' output. */
enum nfqlb_ct_stat {
	NFQLB_CT_STAT_ENTRIES = 0,  /* live entries (expired ones count until reclaimed) */
	NFQLB_CT_STAT_INSERTS,      /* new entries */
	NFQLB_CT_STAT_HITS,         /* lookups that found a live entry */
	NFQLB_CT_STAT_MISSES,
	NFQLB_CT_STAT_RECYCLES,     /* live entries dropped to make room (closest to expiry first) */
	NFQLB_CT_STAT_FLOOD_SKIPS,  /* inserts skipped by the flood guard */
	NFQLB_CT_STAT_EXPIRATIONS,  /* expired entries reclaimed */
	NFQLB_CT_STAT_DELETES,      /* nfqlb_ct_admin_delete */
	NFQLB_CT_STAT_LOCK_STEALS,  /* locks taken over from a dead thread */
	NFQLB_CT_STAT_CAPACITY,
	NFQLB_CT_STAT_CTX_SLOTS,
	NFQLB_CT_STAT_CTX_USED,
	NFQLB_CT_STAT_FLOOD_PER_S,
	NFQLB_CT_STAT_TTL_TCP,
	NFQLB_CT_STAT_TTL_UDP,
	NFQLB_CT_STAT_TTL_OTHER,
	NFQLB_CT_STAT_BYTES,        /* file size */
	NFQLB_CT_STATS_ALL
};

/**
 * nfqlb_ct_lookup - the fwmark of the live entry for key[40], or -1. A hit
 * refreshes its last-seen time and counts one packet of `bytes`; *row (may
 * be NULL) gets its row or -1. A matching expired entry is reclaimed. Hot path.
 */
int32_t nfqlb_ct_lookup(uint8_t* base, const uint8_t* key, uint64_t now_ns, uint32_t bytes, int32_t* row);

/**
 * nfqlb_ct_prefetch - hash key[40] and prefetch its bucket descriptor and
 * home way, changing nothing: a later lookup/insert of the key then finds
 * them in cache (the dataplane calls it for a whole batch of packets before
 * deciding them). A bad key is ignored.
 */
void nfqlb_ct_prefetch(uint8_t* base, const uint8_t* key);

/**
 * nfqlb_ct_prefetch_ways - the second stage after nfqlb_ct_prefetch (call
 * it a few keys later, when the descriptor has arrived): prefetch the
 * entries whose tag matches key[40]'s, and when none does and the bucket
 * is full, every entry (the insert that follows a miss reads them all to
 * choose one to recycle). Changes nothing; a bad key is ignored.
 */
void nfqlb_ct_prefetch_ways(uint8_t* base, const uint8_t* key);

/**
 * nfqlb_ct_lookup_batch - nfqlb_ct_lookup of the n keys at keys[40 * i],
 * pipelined (VPP's flowtable, DPDK's lookup_bulk): per round of up to 64
 * keys, hash them all and prefetch each bucket descriptor and home way,
 * then prefetch the other ways whose tag matches, then look each up in
 * order under its bucket lock. So the memory latencies of a round overlap
 * instead of adding up. Results as n single lookups in order with the same
 * now_ns (a key twice in a batch: the second finds the first's refresh):
 * fw_out[i] (fwmark or -1), row_out[i]; bytes[i] is counted on a hit (bytes
 * NULL: 0). Returns the hits. The hit/miss counters of a round go to one
 * stats shard (their sums are what nfqlb_ct_admin_stats reports).
 */
uint32_t nfqlb_ct_lookup_batch(uint8_t* base, const uint8_t* keys, uint32_t n, uint64_t now_ns,
			       const uint32_t* bytes, int32_t* fw_out, int32_t* row_out);

/**
 * nfqlb_ct_insert_batch - nfqlb_ct_insert of the n keys at keys[40 * i] with
 * fwmarks[i], rows[i], pipelined as nfqlb_ct_lookup_batch (a full bucket
 * also has all its ways prefetched: recycling reads them). rc_out[i] (may
 * be NULL) is each insert's result; returns how many were 0.
 */
uint32_t nfqlb_ct_insert_batch(uint8_t* base, const uint8_t* keys, uint32_t n, const int32_t* fwmarks,
			       const int32_t* rows, uint64_t now_ns, int32_t* rc_out);

/**
 * nfqlb_ct_insert - remember fwmark/row for key[40]. Returns 0 (inserted;
 * or the key was live: its fwmark/row are replaced unless pinned, last-seen
 * refreshed), 1 when skipped by the flood guard (a new key over the limit of
 * its second), -1 on a bad key or when all 8 entries of the key's bucket are
 * pinned. A full bucket first drops its expired entries, then recycles the
 * live entry closest to expiry (NFQLB_CT_STAT_RECYCLES).
 */
int32_t nfqlb_ct_insert(uint8_t* base, const uint8_t* key, int32_t fwmark, int32_t row, uint64_t now_ns);

/**
 * nfqlb_ct_insert_admitted - nfqlb_ct_insert without the flood guard, for a
 * new flow already admitted by nfqlb_ct_flood_take (the lb's schedulers).
 */
int32_t nfqlb_ct_insert_admitted(uint8_t* base, const uint8_t* key, int32_t fwmark, int32_t row, uint64_t now_ns);

/**
 * nfqlb_ct_flood_take - the flood guard alone: 0 when one more new flow may
 * be inserted in now_ns's second (and counts it), 1 when over the limit
 * (counted in NFQLB_CT_STAT_FLOOD_SKIPS). Always 0 without a limit.
 */
int32_t nfqlb_ct_flood_take(uint8_t* base, uint64_t now_ns);

/**
 * nfqlb_ct_sweep - reclaim the expired entries among about n entries (whole
 * buckets: at least one, at most the table) from entry index *cursor on;
 * *cursor moves past them and wraps to 0 at the end. Keeps the per-row counts
 * from staying inflated by expired entries nobody touches. Returns the number
 * reclaimed (counted as expirations). Locks one bucket at a time.
 */
uint32_t nfqlb_ct_sweep(uint8_t* base, uint32_t* cursor, uint32_t n, uint64_t now_ns);

/** nfqlb_ct_row_count - the count of one row (0 for row >= 65535). */
uint32_t nfqlb_ct_row_count(const uint8_t* base, uint32_t row);

/** nfqlb_ct_position_next - fetch-and-increment the table's shared scheduler position. */
uint64_t nfqlb_ct_position_next(uint8_t* base);

/** nfqlb_ct_scheduler - the table's scheduler id (enum nfqlb_sched). */
uint32_t nfqlb_ct_scheduler(const uint8_t* base);

/* ----------------------------------------------------------------------------
 * ct_admin.c - the control plane of the connection table (the CLI, through
 * core/conntrack_shm.ts): size, format and check a table; list, get, set and
 * delete entries; counters, per-row counts, the scheduler id, the clock.
 * ------------------------------------------------------------------------- */

/* ts: What nfqlb_ct_admin_set changes (bits). */
#define NFQLB_CT_SET_FWMARK 1u     /* fwmark and row */
#define NFQLB_CT_SET_PIN 2u
#define NFQLB_CT_CLEAR_PIN 4u      /* also restarts the idle time */
#define NFQLB_CT_SET_OFFLOAD 8u
#define NFQLB_CT_CLEAR_OFFLOAD 16u
#define NFQLB_CT_SET_LIFETIME 32u  /* lifetime_ms (0 = by protocol again); restarts the idle time */
#define NFQLB_CT_SET_CTX 64u       /* ctx[0..ctx_len) */
#define NFQLB_CT_CLEAR_CTX 128u
#define NFQLB_CT_SET_CREATE 256u   /* create a missing entry (fwmark, row), without the flood guard */

/** ts: One listed entry (nfqlb_ct_admin_list / nfqlb_ct_admin_get), 344 bytes, fixed offsets. */
struct nfqlb_ct_record {
	uint8_t key[NFQLB_KEY_LEN]; /* 0   byte 35 is 0 */
	int32_t fwmark;             /* 40 */
	int32_t row;                /* 44  -1: none */
	uint32_t flags;             /* 48  NFQLB_CT_F_* */
	uint32_t lifetime_ms;       /* 52  effective lifetime; 0 when pinned */
	uint32_t age_ms;            /* 56  since created */
	uint32_t idle_ms;           /* 60  since last seen */
	uint64_t packets;           /* 64  saturates at 2^24-1 */
	uint64_t bytes;             /* 72  saturates at 2^40-1 */
	uint32_t slot;              /* 80  entry index */
	uint32_t ctx_len;           /* 84 */
	uint8_t ctx[NFQLB_CT_CTX_MAX]; /* 88 */
};
/* ts: Bytes of a record (sizeof struct nfqlb_ct_record). */
#define NFQLB_CT_RECORD_BYTES 344u

/**
 * nfqlb_ct_admin_bytes - size of a table of `capacity` entries (rounded up to a
 * multiple of 8) and `ctx_slots` context records; 0 when capacity is 0 or
 * above NFQLB_CT_MAX_CAPACITY, or ctx_slots above NFQLB_CT_MAX_CTX.
 */
uint64_t nfqlb_ct_admin_bytes(uint32_t capacity, uint32_t ctx_slots);

/**
 * nfqlb_ct_admin_format - write an empty table into base[0..size). ttl_ms: the
 * lifetimes of TCP, UDP and other flows (each <= NFQLB_CT_MAX_TTL_MS);
 * flood_per_s: max new entries per second (of now_ns) by nfqlb_ct_insert,
 * 0 = no limit. The hash seed is random. Returns 0, or -1 (bad sizes).
 */
int32_t nfqlb_ct_admin_format(uint8_t* base, uint64_t size, uint32_t capacity, uint32_t ctx_slots,
			      const uint32_t* ttl_ms, uint32_t flood_per_s);

/** nfqlb_ct_admin_check - validate a mapped table of `size` bytes: 0 or NFQLB_ETRUNC/EMAGIC/EVERSION/ELAYOUT. */
int32_t nfqlb_ct_admin_check(const uint8_t* base, uint64_t size);

/** nfqlb_ct_admin_delete - remove the entry of key[40] (live or not). 0, or -1 when there is none. */
int32_t nfqlb_ct_admin_delete(uint8_t* base, const uint8_t* key);

/**
 * nfqlb_ct_admin_set - change the entry of key[40]; `what` is NFQLB_CT_SET_* bits:
 * fwmark/row, pin, offload, lifetime_ms (< 32768 exact in ms, else rounded up
 * to seconds, at most 32767 s; longer: pin), context ctx[0..ctx_len) with
 * ctx_len <= NFQLB_CT_CTX_MAX. With NFQLB_CT_SET_CREATE a missing entry is
 * created first (room made as by insert). Returns 0; -1 bad arguments or no
 * such entry; -2 no room (bucket all pinned, or no free context record; the
 * entry is then left unchanged).
 */
int32_t nfqlb_ct_admin_set(uint8_t* base, const uint8_t* key, uint32_t what, int32_t fwmark, int32_t row,
		     uint32_t lifetime_ms, const uint8_t* ctx, uint32_t ctx_len, uint64_t now_ns);

/**
 * nfqlb_ct_admin_list - copy up to `max` live entries, from entry index *cursor
 * on, into out[]; *cursor moves past them (start at 0; done when it reaches
 * the capacity or the call returns 0). Expired entries met are reclaimed.
 * Returns the number of records written.
 */
uint32_t nfqlb_ct_admin_list(uint8_t* base, uint32_t* cursor, uint64_t now_ns, struct nfqlb_ct_record* out,
			     uint32_t max);

/** nfqlb_ct_admin_next - nfqlb_ct_admin_list of one record: 1 with *out filled, 0 at the end. */
int32_t nfqlb_ct_admin_next(uint8_t* base, uint32_t* cursor, uint64_t now_ns, struct nfqlb_ct_record* out);

/** nfqlb_ct_admin_get - the record of key[40]'s live entry: 0, or -1 when there is none. */
int32_t nfqlb_ct_admin_get(uint8_t* base, const uint8_t* key, uint64_t now_ns, struct nfqlb_ct_record* out);

/** nfqlb_ct_admin_stats - copy the first n of the NFQLB_CT_STATS_ALL values (enum nfqlb_ct_stat order). */
void nfqlb_ct_admin_stats(uint8_t* base, uint64_t* out, uint32_t n);

/**
 * nfqlb_ct_admin_count_by_row - counts[r] = live entries with row r, for r < n
 * (zeroed first; for least-connection schedulers). Returns all live entries
 * (with or without a row). Locks each bucket in turn: O(capacity).
 */
uint32_t nfqlb_ct_admin_count_by_row(uint8_t* base, uint32_t* counts, uint32_t n, uint64_t now_ns);

/**
 * nfqlb_ct_admin_row_counts - counts[r] = entries with row r (r < n; rows >= 65535
 * get 0), kept up to date by every change: O(n), no lock. Unlike
 * nfqlb_ct_admin_count_by_row, expired entries count until they are reclaimed.
 */
void nfqlb_ct_admin_row_counts(uint8_t* base, uint32_t* counts, uint32_t n);

/** nfqlb_ct_admin_set_scheduler - set the scheduler id (enum nfqlb_sched): 0, or -1 when unknown. */
int32_t nfqlb_ct_admin_set_scheduler(uint8_t* base, uint32_t scheduler);

/** nfqlb_ct_admin_clock_ns - CLOCK_MONOTONIC in ns, the dataplane's now_ns (for the CLI). */
uint64_t nfqlb_ct_admin_clock_ns(void);

/** nfqlb_ct_admin_record_bytes - sizeof(struct nfqlb_ct_record) (NFQLB_CT_RECORD_BYTES). */
uint32_t nfqlb_ct_admin_record_bytes(void);

/* ----------------------------------------------------------------------------
 * ct_sched.c - who gets a new flow when lb uses the connection table: the
 * table's scheduler (its header; set by `init --scheduler`). Maglev is the
 * hash as without the table; the others are LVS's, over the eligible rows of
 * the target table's current buffer (active[row] >= 0 and weight > 0, row <
 * 65535): rr in row order, wrr interleaved (LVS), lc fewest entries (the
 * table's per-row counts), wlc fewest entries per weight. rr/wrr advance the
 * position shared in the table, so every worker of every lb on one table
 * follows one sequence; lc/wlc rotate their first candidate with it so ties
 * spread. Per-lb state (struct nfqlb_ct_sched) caches the eligible rows and
 * the wrr sequence and rebuilds them when the target table changes; nothing
 * is allocated per packet. See docs/conntrack.md "Schedulers".
 * ------------------------------------------------------------------------- */

/* ts: Scheduler ids (the table's header; init --scheduler). */
enum nfqlb_sched {
	NFQLB_SCHED_MAGLEV = 0,
	NFQLB_SCHED_RR,
	NFQLB_SCHED_WRR,
	NFQLB_SCHED_LC,
	NFQLB_SCHED_WLC,
	NFQLB_SCHED_COUNT
};

/* ts: Limits of the schedulers. */
#define NFQLB_SCHED_ROWS 65535u   /* rows a connection table can store */
#define NFQLB_SCHED_WRR_MAX 65536u /* longest wrr sequence; larger weight sums are scaled */

struct nfqlb_ct_sched;

/** nfqlb_ct_sched_create - scheduler state sized for `rows` rows (grows when needed). NULL: no memory. */
struct nfqlb_ct_sched* nfqlb_ct_sched_create(uint32_t rows);

/** nfqlb_ct_sched_destroy - free it (NULL is fine). */
void nfqlb_ct_sched_destroy(struct nfqlb_ct_sched* s);

/** nfqlb_ct_sched_reset - forget the cached rows (the lb switched tables); rebuilt at the next pick. */
void nfqlb_ct_sched_reset(struct nfqlb_ct_sched* s);

/**
 * nfqlb_ct_sched_pick - the fwmark for a new flow by `scheduler` over target
 * table tshm, its row in *row; -1 when no row is eligible, for
 * NFQLB_SCHED_MAGLEV or an unknown id (the caller uses Maglev), or when the
 * state cannot grow for a larger table. ct: the connection table (shared
 * position, per-row counts).
 */
int32_t nfqlb_ct_sched_pick(struct nfqlb_ct_sched* s, uint8_t* ct, const uint8_t* tshm, uint32_t scheduler,
			    int32_t* row);

/**
 * nfqlb_ct_sched_eligible - after a pick (or refresh): the eligible rows, in
 * order, into rows[0..max); returns their number. For tests and tools.
 */
uint32_t nfqlb_ct_sched_eligible(struct nfqlb_ct_sched* s, const uint8_t* tshm, int32_t* rows, uint32_t max);

/**
 * nfqlb_ct_sched_wrr - the wrr sequence (rows) of tshm's current buffer into
 * out[0..max); returns its full length (0: no eligible row).
 */
uint32_t nfqlb_ct_sched_wrr(struct nfqlb_ct_sched* s, const uint8_t* tshm, int32_t* out, uint32_t max);

#endif
