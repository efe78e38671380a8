/*
 * ct_sched.c - who gets a new flow when lb keeps a connection table
 * (docs/conntrack.md "Schedulers"): rr, wrr, lc, wlc as in LVS, over the
 * eligible rows of the target table's current buffer (active[row] >= 0 and
 * weight > 0). Maglev needs none of this: lb.c hashes as before.
 *
 * Each lb (one per queue worker) owns a struct nfqlb_ct_sched: a copy of the
 * eligible rows, their fwmarks and weights, and the wrr sequence. They are
 * rebuilt when the target table's current buffer changes (nfqlb_tshm_stamp),
 * so a pick costs O(1) for rr/wrr and O(eligible) for lc/wlc. The position
 * that rr/wrr advance lives in the connection table (nfqlb_ct_position_next),
 * so the workers of one lb, and lbs sharing the table, follow one sequence
 * together. Memory grows only when a larger table shows up (at a rebuild,
 * never per packet).
 */
#include "nfqlb.h"
#include <stdlib.h>
#include <string.h>

struct nfqlb_ct_sched {
	const uint8_t* tshm; /* the table the cache was built from */
	uint32_t stamp;      /* its nfqlb_tshm_stamp then */
	uint32_t valid;
	uint32_t ncap;   /* size of active/weight (the table's N) */
	int32_t* active; /* snapshot of the current buffer */
	uint32_t* weight;
	uint32_t ecap;  /* size of the eligible arrays: min(N, NFQLB_SCHED_ROWS) */
	uint32_t n;     /* eligible rows */
	int32_t* rows;  /* eligible rows, in row order */
	int32_t* fw;    /* their fwmarks */
	uint32_t* w;    /* their weights */
	uint32_t* tmp;  /* wrr: reduced weights */
	uint32_t seq_ok; /* the wrr sequence matches the eligible rows */
	uint32_t seq_cap, seq_len;
	uint16_t* seq;  /* wrr: indexes into rows[] */
};

static int grow(struct nfqlb_ct_sched* s, uint32_t N)
{
	if (N > s->ncap) {
		int32_t* a = realloc(s->active, (size_t)N * sizeof(*a));
		if (!a)
			return -1;
		s->active = a;
		uint32_t* w = realloc(s->weight, (size_t)N * sizeof(*w));
		if (!w)
			return -1;
		s->weight = w;
		s->ncap = N;
	}
	uint32_t e = N < NFQLB_SCHED_ROWS ? N : NFQLB_SCHED_ROWS;
	if (e > s->ecap) {
		int32_t* r = realloc(s->rows, (size_t)e * sizeof(*r));
		if (!r)
			return -1;
		s->rows = r;
		int32_t* f = realloc(s->fw, (size_t)e * sizeof(*f));
		if (!f)
			return -1;
		s->fw = f;
		uint32_t* w = realloc(s->w, (size_t)e * sizeof(*w));
		if (!w)
			return -1;
		s->w = w;
		uint32_t* t = realloc(s->tmp, (size_t)e * sizeof(*t));
		if (!t)
			return -1;
		s->tmp = t;
		s->ecap = e;
	}
	return 0;
}

struct nfqlb_ct_sched* nfqlb_ct_sched_create(uint32_t rows)
{
	struct nfqlb_ct_sched* s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (rows > 0 && grow(s, rows) != 0) {
		nfqlb_ct_sched_destroy(s);
		return NULL;
	}
	return s;
}

void nfqlb_ct_sched_destroy(struct nfqlb_ct_sched* s)
{
	if (!s)
		return;
	free(s->active);
	free(s->weight);
	free(s->rows);
	free(s->fw);
	free(s->w);
	free(s->tmp);
	free(s->seq);
	free(s);
}

void nfqlb_ct_sched_reset(struct nfqlb_ct_sched* s)
{
	if (s)
		s->valid = 0;
}

/* Rebuild the eligible rows when tshm's current buffer is not the one cached. 0, or -1: no memory. */
static int refresh(struct nfqlb_ct_sched* s, const uint8_t* tshm)
{
	uint32_t N;
	uint32_t st = nfqlb_tshm_stamp(tshm, &N);
	if (s->valid && s->tshm == tshm && s->stamp == st)
		return 0;
	if (grow(s, N) != 0)
		return -1;
	/* a snapshot between two equal stamps is that buffer's; a commit meanwhile: read again (bounded) */
	uint32_t stable = 0;
	for (int tries = 0; tries < 8 && !stable; tries++) {
		nfqlb_tshm_read(tshm, NULL, 0, s->active, s->weight);
		uint32_t st2 = nfqlb_tshm_stamp(tshm, NULL);
		stable = st2 == st;
		st = st2;
	}
	uint32_t e = N < NFQLB_SCHED_ROWS ? N : NFQLB_SCHED_ROWS, n = 0;
	for (uint32_t r = 0; r < e; r++) {
		if (s->active[r] >= 0 && s->weight[r] > 0) {
			s->rows[n] = (int32_t)r;
			s->fw[n] = s->active[r];
			s->w[n] = s->weight[r];
			n++;
		}
	}
	s->n = n;
	s->tshm = tshm;
	s->stamp = st;
	s->valid = stable; /* not stable (a storm of commits): use it once, look again next time */
	s->seq_ok = 0;
	return 0;
}

static uint32_t gcd(uint32_t a, uint32_t b)
{
	while (b) {
		uint32_t t = a % b;
		a = b;
		b = t;
	}
	return a;
}

/*
 * LVS's interleaved wrr as one precomputed cycle: in rounds cw = max .. 1,
 * every row (in row order) whose weight is >= cw is picked. Weights are
 * divided by their gcd first. A cycle longer than NFQLB_SCHED_WRR_MAX is
 * scaled down proportionally (every row keeps at least 1), so very uneven or
 * huge weight sums get approximate shares; below it the shares are exact.
 * Rounds between two distinct weights repeat the same picks, so they are
 * copied: O(n * distinct weights + length), and distinct weights are few
 * (their sum is at most the cap).
 */
static int build_wrr(struct nfqlb_ct_sched* s)
{
	uint32_t n = s->n, g = 0;
	for (uint32_t i = 0; i < n; i++)
		g = gcd(s->w[i], g);
	uint64_t sum = 0;
	for (uint32_t i = 0; i < n; i++) {
		s->tmp[i] = s->w[i] / g;
		sum += s->tmp[i];
	}
	if (sum > NFQLB_SCHED_WRR_MAX) {
		/* n <= 65535 < the cap: each row gets floor(w * (cap - n) / sum) >= 0, then at least 1 */
		uint64_t room = NFQLB_SCHED_WRR_MAX - n, s2 = 0;
		g = 0;
		for (uint32_t i = 0; i < n; i++) {
			uint64_t v = (uint64_t)s->tmp[i] * room / sum;
			s->tmp[i] = v == 0 ? 1 : (uint32_t)v;
			g = gcd(s->tmp[i], g);
		}
		for (uint32_t i = 0; i < n; i++) {
			s->tmp[i] /= g;
			s2 += s->tmp[i];
		}
		sum = s2;
	}
	if (sum > s->seq_cap) {
		uint16_t* q = realloc(s->seq, (size_t)sum * sizeof(*q));
		if (!q)
			return -1;
		s->seq = q;
		s->seq_cap = (uint32_t)sum;
	}
	uint32_t cw = 0, len = 0;
	for (uint32_t i = 0; i < n; i++)
		if (s->tmp[i] > cw)
			cw = s->tmp[i];
	while (cw > 0) {
		uint32_t start = len, next = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (s->tmp[i] >= cw)
				s->seq[len++] = (uint16_t)i;
			else if (s->tmp[i] > next)
				next = s->tmp[i];
		}
		uint32_t chunk = len - start;
		for (uint32_t r = cw - 1; r > next; r--, len += chunk)
			memcpy(s->seq + len, s->seq + start, (size_t)chunk * sizeof(*s->seq));
		cw = next;
	}
	s->seq_len = len;
	s->seq_ok = 1;
	return 0;
}

/* lc/wlc: the eligible index with the fewest entries (per weight), scanning from `start`: first wins ties. */
static uint32_t least(const struct nfqlb_ct_sched* s, const uint8_t* ct, uint32_t start, int weighted)
{
	uint32_t n = s->n, best = start;
	uint64_t bc = nfqlb_ct_row_count(ct, (uint32_t)s->rows[start]);
	for (uint32_t k = 1; k < n; k++) {
		uint32_t i = start + k < n ? start + k : start + k - n;
		uint64_t c = nfqlb_ct_row_count(ct, (uint32_t)s->rows[i]);
		/* c/w < bc/wb without division: c*wb < bc*w (64-bit: counts and weights are u32) */
		if (weighted ? c * s->w[best] < bc * s->w[i] : c < bc) {
			best = i;
			bc = c;
		}
	}
	return best;
}

int32_t nfqlb_ct_sched_pick(struct nfqlb_ct_sched* s, uint8_t* ct, const uint8_t* tshm, uint32_t scheduler,
			    int32_t* row)
{
	*row = -1;
	if (scheduler == NFQLB_SCHED_MAGLEV || scheduler >= NFQLB_SCHED_COUNT || refresh(s, tshm) != 0 || s->n == 0)
		return -1;
	if (scheduler == NFQLB_SCHED_WRR && !s->seq_ok && build_wrr(s) != 0)
		return -1;
	uint64_t p = nfqlb_ct_position_next(ct);
	uint32_t i;
	switch (scheduler) {
	case NFQLB_SCHED_RR:
		i = (uint32_t)(p % s->n);
		break;
	case NFQLB_SCHED_WRR:
		i = s->seq[p % s->seq_len];
		break;
	case NFQLB_SCHED_LC:
		i = least(s, ct, (uint32_t)(p % s->n), 0);
		break;
	default: /* NFQLB_SCHED_WLC */
		i = least(s, ct, (uint32_t)(p % s->n), 1);
		break;
	}
	*row = s->rows[i];
	return s->fw[i];
}

uint32_t nfqlb_ct_sched_eligible(struct nfqlb_ct_sched* s, const uint8_t* tshm, int32_t* rows, uint32_t max)
{
	if (refresh(s, tshm) != 0)
		return 0;
	for (uint32_t i = 0; i < s->n && i < max; i++)
		rows[i] = s->rows[i];
	return s->n;
}

uint32_t nfqlb_ct_sched_wrr(struct nfqlb_ct_sched* s, const uint8_t* tshm, int32_t* out, uint32_t max)
{
	if (refresh(s, tshm) != 0 || s->n == 0 || (!s->seq_ok && build_wrr(s) != 0))
		return 0;
	for (uint32_t i = 0; i < s->seq_len && i < max; i++)
		out[i] = s->rows[s->seq[i]];
	return s->seq_len;
}
