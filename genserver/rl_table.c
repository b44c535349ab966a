#include "genserver/rl_table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <ei.h>

/* The Makefile does not link libxxhash, so the hash is compiled in from the header. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cnode/error.h"
#include "cnode/mem.h"
#include "cnode/term.h"
#include "genserver/term_key.h"

/* Smallest index; a power of two, as every size is, so a mask finds the bucket. */
#define MIN_SLOTS 16
/* A scratch buffer grown past this by one huge id is released after the call. */
#define SCRATCH_KEEP (64 * 1024)

/* Image layout, all integers big endian:
 *   "RLT" version(1) | max_requests u32 | window_ms u64 | clients u64
 *   per client: key_len u32 | canonical key | n u32 | n wall-clock stamps u64
 *   XXH3-64 of everything before it, u64 */
#define IMG_MAGIC "RLT"
#define IMG_VERSION 1
#define IMG_HEADER 24
#define IMG_CLIENTS_AT 16
#define IMG_TRAILER 8

/*
 * The arena. Clients live in segments of SEG_SIZE bytes mapped from the kernel, so
 * a segment that compaction empties goes back to the system at once and a page
 * nobody touched costs no RSS. A reference is 32 bits: the segment number above
 * REF_OFF_BITS bits of offset counted in 4-byte units, which addresses 8192
 * segments (16 GiB). Reference 0 means an empty index slot: every segment's first
 * unit is left unused so that no client is ever at segment 0, offset 0.
 */
#define SEG_BITS 21
#define SEG_SIZE ((size_t)1 << SEG_BITS)
#define UNIT 4
#define REF_OFF_BITS (SEG_BITS - 2)
#define MAX_SEGS ((uint32_t)1 << (32 - REF_OFF_BITS))
/* The longest stored key; canonical keys of ids within RL_MAX_ID_BYTES are far shorter. */
#define MAX_KEY (SEG_SIZE / 4)

/*
 * One entry, at a 4-byte aligned place in a segment:
 *
 *   stamp u32 | header varint | key bytes | ring pointer (RING only) | padding to 4
 *
 * header = key_len << 3 | flags. Without RING the client has exactly one stamp,
 * `stamp`, which counts while it is younger than the window: the common client
 * with one request costs no second allocation. With RING the stamps are in a
 * separately allocated ring and `stamp` is unused. BIN marks a key stored without
 * its first five bytes: a canonical binary is BINARY_EXT, its length, its bytes,
 * and the length is implied by the stored one. DEAD marks an entry whose client
 * has gone; its bytes are garbage until compaction moves the segment's live
 * entries away. DEAD is in the header's first byte, so setting it never changes
 * the entry's size.
 */
#define E_RING 1u
#define E_BIN 2u
#define E_DEAD 4u
#define E_FLAG_BITS 3

/*
 * Time: stamps are the monotonic milliseconds modulo 2^32, and an age is the
 * signed 32-bit difference now - stamp. The age is right while the true age is
 * below 2^31 ms (24.8 days). A stamp lives at most window_ms (at most
 * RL_MAX_WINDOW_MS) before a check or a sweep drops it, so the wrap rule is: every
 * client is visited by a sweep at least once every 2^31 - RL_MAX_WINDOW_MS ms
 * (12.4 days), which the rate limiter's cleanup, a pass every window, does.
 */
static inline uint32_t stamp_of(int64_t now)
{
    return (uint32_t)(uint64_t)now;
}

static inline int32_t age_of(uint32_t now32, uint32_t stamp)
{
    return (int32_t)(now32 - stamp);
}

/* A ring of stamps for a client with more than one: `count` stamps from `head`,
 * ascending, so expiry only ever drops from the head. */
typedef struct rl_ring {
    uint32_t cap;
    uint32_t head;
    uint32_t count;
    uint32_t st[];
} rl_ring;

typedef struct seg {
    unsigned char *mem; /* NULL for a free segment number */
    uint32_t used;      /* bump position */
    uint32_t live;      /* bytes of entries not DEAD */
} seg;

/*
 * The index: linear probing over 64-bit slots, a 32-bit tag (the low half of
 * XXH3 of the stored key) above a 32-bit arena reference. A probe compares tags in
 * one dense array and touches the arena only when a tag matches. The tag also
 * gives the home bucket, so neither growing nor deleting hashes a key again.
 */
struct rl_table {
    uint32_t max_requests;
    int64_t window_ms;
    uint64_t *slot;
    size_t mask;
    size_t count;
    size_t cursor;
    seg *segs;
    uint32_t nsegs;  /* segment numbers in use or free below this */
    uint32_t tail;   /* the segment new entries go to */
    int64_t victim;  /* segment being evacuated, or -1 */
    uint32_t vpos;   /* evacuation position in the victim */
    cn_buf scratch;
};

/* A key as stored: the canonical bytes, or a binary's bytes alone under E_BIN. */
typedef struct pkey {
    const unsigned char *p;
    size_t len;
    uint32_t bin;
} pkey;

/* A decoded entry. */
typedef struct ent {
    unsigned char *base;
    uint32_t flags;
    pkey key;
    size_t size;
} ent;

/* ---- keys ---- */

static pkey pack(const unsigned char *key, size_t len)
{
    if (len >= 5 && key[0] == ERL_BINARY_EXT && cn_get_u32(key + 1) == len - 5)
        return (pkey){key + 5, len - 5, E_BIN};
    return (pkey){key, len, 0};
}

static uint32_t key_tag(pkey k)
{
    return (uint32_t)XXH3_64bits_withSeed(k.p, k.len, k.bin);
}

static int key_eq(pkey a, pkey b)
{
    return a.bin == b.bin && a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

/* The canonical bytes of a stored key: its length, then the bytes into out. */
static size_t unpacked_len(pkey k)
{
    return k.bin ? k.len + 5 : k.len;
}

static void put_unpacked(cn_buf *out, pkey k)
{
    if (k.bin) {
        cn_buf_put_u8(out, ERL_BINARY_EXT);
        cn_buf_put_u32(out, (uint32_t)k.len);
    }
    cn_buf_append(out, k.p, k.len);
}

/* ---- entries ---- */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t entry_size(size_t key_len, uint32_t flags)
{
    uint64_t h = (uint64_t)key_len << E_FLAG_BITS | flags;
    size_t n = 4 + varint_len(h) + key_len + ((flags & E_RING) ? sizeof(rl_ring *) : 0);
    return (n + UNIT - 1) & ~(size_t)(UNIT - 1);
}

static unsigned char *ref_ptr(const rl_table *t, uint32_t ref)
{
    return t->segs[ref >> REF_OFF_BITS].mem + (size_t)(ref & ((1u << REF_OFF_BITS) - 1)) * UNIT;
}

static ent ent_at(const rl_table *t, uint32_t ref)
{
    ent e;
    e.base = ref_ptr(t, ref);
    const unsigned char *p = e.base + 4;
    uint64_t h = 0;
    for (unsigned shift = 0;; shift += 7) {
        h |= (uint64_t)(*p & 0x7f) << shift;
        if (!(*p++ & 0x80))
            break;
    }
    e.flags = (uint32_t)(h & ((1u << E_FLAG_BITS) - 1));
    e.key = (pkey){p, (size_t)(h >> E_FLAG_BITS), e.flags & E_BIN};
    e.size = entry_size(e.key.len, e.flags & ~E_DEAD);
    return e;
}

static uint32_t ent_stamp(const ent *e)
{
    uint32_t s;
    memcpy(&s, e->base, 4);
    return s;
}

static void ent_set_stamp(ent *e, uint32_t s)
{
    memcpy(e->base, &s, 4);
}

static rl_ring *ent_ring(const ent *e)
{
    rl_ring *r;
    memcpy(&r, e->key.p + e->key.len, sizeof r);
    return r;
}

static void ent_set_ring(ent *e, rl_ring *r)
{
    memcpy((unsigned char *)e->key.p + e->key.len, &r, sizeof r);
}

/* Maps a fresh segment under a free number. Mapping failure is out of memory. */
static uint32_t seg_new(rl_table *t)
{
    uint32_t i = 0;
    while (i < t->nsegs && t->segs[i].mem != NULL)
        i++;
    if (i == MAX_SEGS)
        cn_oom(SEG_SIZE);
    if (i == t->nsegs) {
        t->segs = cn_realloc(t->segs, ((size_t)i + 1) * sizeof *t->segs);
        t->nsegs++;
    }
    void *m = mmap(NULL, SEG_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        cn_oom(SEG_SIZE);
    t->segs[i] = (seg){m, UNIT, 0};
    return i;
}

static void seg_free(rl_table *t, uint32_t i)
{
    munmap(t->segs[i].mem, SEG_SIZE);
    t->segs[i] = (seg){NULL, 0, 0};
}

/* Bump-allocates `size` bytes (size <= SEG_SIZE - UNIT) and returns the reference. */
static uint32_t arena_alloc(rl_table *t, size_t size)
{
    if (t->nsegs == 0 || t->segs[t->tail].used + size > SEG_SIZE)
        t->tail = seg_new(t);
    seg *s = &t->segs[t->tail];
    uint32_t ref = t->tail << REF_OFF_BITS | s->used / UNIT;
    s->used += (uint32_t)size;
    s->live += (uint32_t)size;
    return ref;
}

/* Writes a new entry and returns its reference. The ring pointer is NULL for RING. */
static uint32_t ent_new(rl_table *t, pkey k, uint32_t flags, uint32_t stamp)
{
    flags = (flags & E_RING) | k.bin;
    uint32_t ref = arena_alloc(t, entry_size(k.len, flags));
    unsigned char *p = ref_ptr(t, ref);
    memcpy(p, &stamp, 4);
    p += 4;
    uint64_t h = (uint64_t)k.len << E_FLAG_BITS | flags;
    while (h >= 0x80) {
        *p++ = (unsigned char)(h | 0x80);
        h >>= 7;
    }
    *p++ = (unsigned char)h;
    memcpy(p, k.p, k.len);
    if (flags & E_RING)
        memset(p + k.len, 0, sizeof(rl_ring *));
    return ref;
}

/* Marks the entry garbage; its ring, if any, is the caller's. */
static void ent_kill(rl_table *t, uint32_t ref)
{
    ent e = ent_at(t, ref);
    e.base[4] |= E_DEAD;
    t->segs[ref >> REF_OFF_BITS].live -= (uint32_t)e.size;
}

/* ---- rings ---- */

static rl_ring *ring_new(uint32_t cap)
{
    rl_ring *r = cn_malloc(sizeof *r + (size_t)cap * sizeof r->st[0]);
    r->cap = cap;
    r->head = 0;
    r->count = 0;
    return r;
}

static uint32_t ring_at(const rl_ring *r, uint32_t i)
{
    uint32_t k = r->head + i;
    return k >= r->cap ? k - r->cap : k;
}

static uint32_t ring_newest(const rl_ring *r)
{
    return r->st[ring_at(r, r->count - 1)];
}

/* A copy of the ring with `cap` stamps (cap >= count), unrolled; frees the old. */
static rl_ring *ring_resize(rl_ring *r, uint32_t cap)
{
    rl_ring *n = ring_new(cap);
    for (uint32_t i = 0; i < r->count; i++)
        n->st[i] = r->st[ring_at(r, i)];
    n->count = r->count;
    free(r);
    return n;
}

static void ring_expire(rl_ring *r, uint32_t now32, int64_t window)
{
    while (r->count > 0 && age_of(now32, r->st[r->head]) >= window) {
        r->head = r->head + 1 == r->cap ? 0 : r->head + 1;
        r->count--;
    }
}

/* Appends a stamp; the caller has made room. A clock that steps back (a broken
 * promise, or a load that met a newer stamp) is held at the newest stamp, so the
 * ring stays sorted. */
static void ring_push(rl_ring *r, uint32_t now32)
{
    if (r->count > 0 && age_of(now32, ring_newest(r)) < 0)
        now32 = ring_newest(r);
    r->st[ring_at(r, r->count)] = now32;
    r->count++;
}

/* ---- the index ---- */

static uint64_t slot_of(uint32_t tag, uint32_t ref)
{
    return (uint64_t)tag << 32 | ref;
}

static uint32_t slot_ref(uint64_t s)
{
    return (uint32_t)s;
}

static uint32_t slot_tag(uint64_t s)
{
    return (uint32_t)(s >> 32);
}

/* Returns the slot holding the key (and sets *ref), or the empty slot where it
 * belongs (and sets *ref to 0). The load factor keeps an empty slot around. */
static size_t find(const rl_table *t, pkey k, uint32_t tag, uint32_t *ref)
{
    for (size_t i = tag & t->mask;; i = (i + 1) & t->mask) {
        uint64_t s = t->slot[i];
        if (slot_ref(s) == 0 || (slot_tag(s) == tag && key_eq(ent_at(t, slot_ref(s)).key, k))) {
            *ref = slot_ref(s);
            return i;
        }
    }
}

/* The slot that refers to `ref`, which is in the index. */
static size_t find_ref(const rl_table *t, uint32_t tag, uint32_t ref)
{
    size_t i = tag & t->mask;
    while (slot_ref(t->slot[i]) != ref)
        i = (i + 1) & t->mask;
    return i;
}

static size_t find_empty(const rl_table *t, uint32_t tag)
{
    size_t i = tag & t->mask;
    while (t->slot[i] != 0)
        i = (i + 1) & t->mask;
    return i;
}

/*
 * A large index is mapped from the kernel too: glibc raises its mmap threshold
 * after the first large free, after which every doubling would leave the old
 * array resident in the heap's free lists. Small ones come from malloc.
 */
#define INDEX_MAP_BYTES ((size_t)64 * 1024)

static uint64_t *index_alloc(size_t slots)
{
    size_t bytes = slots * sizeof(uint64_t);
    if (bytes < INDEX_MAP_BYTES)
        return cn_calloc(slots, sizeof(uint64_t));
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        cn_oom(bytes);
    return m;
}

static void index_free(uint64_t *slot, size_t slots)
{
    size_t bytes = slots * sizeof(uint64_t);
    if (bytes < INDEX_MAP_BYTES)
        free(slot);
    else if (slot != NULL)
        munmap(slot, bytes);
}

/*
 * Rebuilds the index with `slots` slots. The sweep cursor is scaled with it, so a
 * sweep under way carries on at about the same place; clients that landed behind
 * the cursor wait for the next sweep.
 */
static void table_resize(rl_table *t, size_t slots)
{
    uint64_t *slot = index_alloc(slots);
    size_t old = t->mask + 1, mask = slots - 1;
    for (size_t i = 0; i < old; i++) {
        uint64_t s = t->slot[i];
        if (s == 0)
            continue;
        size_t j = slot_tag(s) & mask;
        while (slot[j] != 0)
            j = (j + 1) & mask;
        slot[j] = s;
    }
    index_free(t->slot, old);
    t->slot = slot;
    t->mask = mask;
    t->cursor = slots >= old ? t->cursor * (slots / old) : t->cursor / (old / slots);
}

/* Makes room for one more client: the load stays at most three quarters, which
 * keeps linear probes short. */
static int table_reserve_one(rl_table *t)
{
    size_t slots = t->mask + 1;
    if ((t->count + 1) * 4 <= slots * 3)
        return 0;
    if (slots > ((size_t)1 << 31))
        return -ENOMEM;
    table_resize(t, slots * 2);
    return 0;
}

/*
 * Empties slot `hole` by backward-shift deletion: each later client of the probe
 * run moves back into the hole unless its home bucket lies between the hole and
 * itself, so every remaining client stays reachable from its home without
 * tombstones.
 */
static void remove_at(rl_table *t, size_t hole)
{
    size_t j = hole;
    for (;;) {
        j = (j + 1) & t->mask;
        if (t->slot[j] == 0)
            break;
        size_t home = slot_tag(t->slot[j]) & t->mask;
        if (((j - home) & t->mask) >= ((j - hole) & t->mask)) {
            t->slot[hole] = t->slot[j];
            hole = j;
        }
    }
    t->slot[hole] = 0;
    t->count--;
}

/* Drops the client in slot i: its ring, its entry, its slot. */
static void remove_client(rl_table *t, size_t i)
{
    uint32_t ref = slot_ref(t->slot[i]);
    ent e = ent_at(t, ref);
    if (e.flags & E_RING)
        free(ent_ring(&e));
    ent_kill(t, ref);
    remove_at(t, i);
}

/* Moves the client in slot i to a new entry with `flags` and `stamp`, carrying
 * the ring pointer `r` when flags has E_RING; returns the new entry. */
static ent relocate(rl_table *t, size_t i, uint32_t flags, uint32_t stamp, rl_ring *r)
{
    uint32_t old = slot_ref(t->slot[i]);
    ent e = ent_at(t, old);
    uint32_t ref = ent_new(t, e.key, flags, stamp);
    ent n = ent_at(t, ref);
    if (flags & E_RING)
        ent_set_ring(&n, r);
    ent_kill(t, old);
    t->slot[i] = slot_of(slot_tag(t->slot[i]), ref);
    return n;
}

static void clear(rl_table *t)
{
    for (size_t i = 0; i <= t->mask; i++) {
        uint32_t ref = slot_ref(t->slot[i]);
        if (ref != 0) {
            ent e = ent_at(t, ref);
            if (e.flags & E_RING)
                free(ent_ring(&e));
        }
        t->slot[i] = 0;
    }
    for (uint32_t s = 0; s < t->nsegs; s++)
        if (t->segs[s].mem != NULL)
            seg_free(t, s);
    free(t->segs);
    t->segs = NULL;
    t->nsegs = 0;
    t->tail = 0;
    t->victim = -1;
    t->count = 0;
    t->cursor = 0;
}

/* ---- public ---- */

rl_table *rl_table_new(uint32_t max_requests, int64_t window_ms)
{
    if (max_requests == 0 || window_ms <= 0 || window_ms > RL_MAX_WINDOW_MS)
        return NULL;
    rl_table *t = cn_calloc(1, sizeof *t);
    t->max_requests = max_requests;
    t->window_ms = window_ms;
    t->slot = index_alloc(MIN_SLOTS);
    t->mask = MIN_SLOTS - 1;
    t->victim = -1;
    cn_buf_init(&t->scratch);
    return t;
}

void rl_table_free(rl_table *t)
{
    if (t == NULL)
        return;
    clear(t);
    index_free(t->slot, t->mask + 1);
    cn_buf_free(&t->scratch);
    free(t);
}

size_t rl_client_count(const rl_table *t)
{
    return t->count;
}

/*
 * How many stamps to give a ring that needs `want` (want <= max). glibc serves a
 * request from a chunk of a multiple of 16 bytes with 8 bytes of overhead, so the
 * stamps that fit in the rounding come free. With another allocator this only makes
 * the request a little larger.
 */
static uint32_t fit_cap(uint32_t want, uint32_t max)
{
    size_t bytes = sizeof(rl_ring) + (size_t)want * sizeof(uint32_t);
    size_t usable = ((bytes + 8 + 15) & ~(size_t)15) - 8;
    size_t cap = (usable - sizeof(rl_ring)) / sizeof(uint32_t);
    return cap > max ? max : (uint32_t)cap;
}

/* A client seen for the first time: one entry with its one stamp inline. */
static int admit_new(rl_table *t, pkey k, uint32_t tag, int64_t now, uint32_t *remaining)
{
    int rc = table_reserve_one(t);
    if (rc < 0)
        return rc;
    uint32_t ref = ent_new(t, k, 0, stamp_of(now));
    t->slot[find_empty(t, tag)] = slot_of(tag, ref);
    t->count++;
    *remaining = t->max_requests - 1;
    return 1;
}

/* A request from a client with one stamp inline. A second stamp inside the window
 * moves the client to an entry with a ring. */
static int check_single(rl_table *t, size_t i, ent *e, uint32_t now32, uint32_t *remaining)
{
    uint32_t s = ent_stamp(e);
    if (age_of(now32, s) >= t->window_ms) {
        ent_set_stamp(e, now32);
        *remaining = t->max_requests - 1;
        return 1;
    }
    if (t->max_requests == 1) {
        *remaining = 0;
        return 0;
    }
    rl_ring *r = ring_new(fit_cap(2, t->max_requests));
    r->st[0] = s;
    r->count = 1;
    ring_push(r, now32);
    relocate(t, i, E_RING, 0, r);
    *remaining = t->max_requests - 2;
    return 1;
}

static int check_ring(rl_table *t, ent *e, uint32_t now32, uint32_t *remaining)
{
    rl_ring *r = ent_ring(e);
    ring_expire(r, now32, t->window_ms);
    if (r->count >= t->max_requests) {
        *remaining = 0;
        return 0;
    }
    if (r->count == r->cap) {
        /* Doubling keeps the copies amortised; the cap stops at max_requests. */
        uint64_t want = (uint64_t)r->cap * 2;
        if (want > t->max_requests)
            want = t->max_requests;
        r = ring_resize(r, fit_cap((uint32_t)want, t->max_requests));
        ent_set_ring(e, r);
    }
    ring_push(r, now32);
    *remaining = t->max_requests - r->count;
    return 1;
}

/* The decision for the canonical key in t->scratch. */
static int check_key(rl_table *t, int64_t now, uint32_t *remaining)
{
    pkey k = pack((const unsigned char *)t->scratch.data, t->scratch.len);
    if (k.len > MAX_KEY)
        return CN_EDECODE;
    uint32_t tag = key_tag(k), ref;
    size_t i = find(t, k, tag, &ref);
    if (ref == 0)
        return admit_new(t, k, tag, now, remaining);
    ent e = ent_at(t, ref);
    if (e.flags & E_RING)
        return check_ring(t, &e, stamp_of(now), remaining);
    return check_single(t, i, &e, stamp_of(now), remaining);
}

/* The check for an id known to occupy buf[index, end). An id above the limit is
 * refused before anything is decoded or stored. */
static int check_span(rl_table *t, const char *buf, size_t index, size_t end, int64_t now_ms,
                      uint32_t *remaining)
{
    if (end - index > RL_MAX_ID_BYTES)
        return CN_EDECODE;
    int i = (int)index;
    cn_buf_reset(&t->scratch);
    int rc = tk_canonical_n(buf, end, &i, &t->scratch);
    if (rc == 0)
        rc = check_key(t, now_ms, remaining);
    if (t->scratch.cap > SCRATCH_KEEP)
        cn_buf_free(&t->scratch);
    return rc;
}

int rl_check_n(rl_table *t, const char *buf, size_t len, int index, int64_t now_ms,
               uint32_t *remaining)
{
    size_t end = (size_t)index;
    if (index < 0 || cn_term_skip(buf, len, &end) < 0)
        return CN_EDECODE;
    return check_span(t, buf, (size_t)index, end, now_ms, remaining);
}

int rl_check(rl_table *t, const char *buf, int index, int64_t now_ms, uint32_t *remaining)
{
    int end = index;
    if (index < 0 || cn_term_skip_trusted(buf, &end) < 0)
        return CN_EDECODE;
    return check_span(t, buf, (size_t)index, (size_t)end, now_ms, remaining);
}

/* ---- cleanup ---- */

/*
 * Visits the client in slot i: drops its expired stamps, removes it when none is
 * left (returns 1: the slot must be looked at again, a later client may have
 * shifted into it), moves a ring down to one inline stamp, and halves a ring that
 * is at most a quarter full after a burst.
 */
static int sweep_one(rl_table *t, size_t i, uint32_t now32)
{
    ent e = ent_at(t, slot_ref(t->slot[i]));
    if (!(e.flags & E_RING)) {
        if (age_of(now32, ent_stamp(&e)) < t->window_ms)
            return 0;
        remove_client(t, i);
        return 1;
    }
    rl_ring *r = ent_ring(&e);
    ring_expire(r, now32, t->window_ms);
    if (r->count == 0) {
        remove_client(t, i);
        return 1;
    }
    if (r->count == 1) {
        uint32_t s = r->st[r->head];
        free(r);
        relocate(t, i, 0, s, NULL);
        return 0;
    }
    uint32_t floor = fit_cap(2, t->max_requests);
    if (r->cap > floor && r->count <= r->cap / 4) {
        uint32_t cap = fit_cap(r->count * 2, t->max_requests);
        if (cap < r->cap)
            ent_set_ring(&e, ring_resize(r, cap));
    }
    return 0;
}

/* After a sweep, a table below one-eighth load shrinks to a load between a quarter
 * and a half, far from the growth threshold so that it does not oscillate. */
static void shrink_table(rl_table *t)
{
    size_t slots = t->mask + 1, want = slots;
    if (slots <= MIN_SLOTS || t->count * 8 >= slots)
        return;
    while (want > MIN_SLOTS && t->count * 4 < want)
        want /= 2;
    table_resize(t, want);
}

/* Chooses the segment, other than the one being filled, with the least live data
 * if that is under half of what it holds. Returns 1 when one was chosen. */
static int pick_victim(rl_table *t)
{
    int64_t best = -1;
    for (uint32_t s = 0; s < t->nsegs; s++) {
        const seg *g = &t->segs[s];
        if (g->mem == NULL || s == t->tail || (size_t)g->live * 2 >= g->used)
            continue;
        if (best < 0 || g->live < t->segs[best].live)
            best = s;
    }
    t->victim = best;
    t->vpos = UNIT;
    return best >= 0;
}

/* Moves the live entry `ref` to the segment being filled and points its slot there. */
static void evacuate(rl_table *t, uint32_t ref, const ent *e)
{
    size_t i = find_ref(t, key_tag(e->key), ref);
    relocate(t, i, e->flags, ent_stamp(e), (e->flags & E_RING) ? ent_ring(e) : NULL);
}

/*
 * Compaction, a slice at a time: moves up to `budget` entries of the victim
 * segment to the tail; an emptied victim is unmapped. A segment becomes a victim
 * when more than half of it is garbage, so moving costs at most one byte per byte
 * freed, and total arena use stays within about twice the live data.
 */
static void compact(rl_table *t, size_t budget)
{
    if (budget == 0 || (t->victim < 0 && !pick_victim(t)))
        return;
    uint32_t v = (uint32_t)t->victim;
    for (; budget > 0 && t->vpos < t->segs[v].used; budget--) {
        uint32_t ref = v << REF_OFF_BITS | t->vpos / UNIT;
        ent e = ent_at(t, ref);
        t->vpos += (uint32_t)e.size;
        if (!(e.flags & E_DEAD))
            evacuate(t, ref, &e);
    }
    if (t->vpos < t->segs[v].used)
        return;
    seg_free(t, v);
    t->victim = -1;
}

int rl_sweep(rl_table *t, int64_t now_ms, size_t budget)
{
    if (budget == 0)
        return 0;
    uint32_t now32 = stamp_of(now_ms);
    for (size_t n = budget; n > 0 && t->cursor <= t->mask; n--) {
        if (t->slot[t->cursor] == 0 || !sweep_one(t, t->cursor, now32))
            t->cursor++;
    }
    compact(t, budget);
    if (t->cursor <= t->mask || t->victim >= 0)
        return 0;
    t->cursor = 0;
    shrink_table(t);
    return 1;
}

/* ---- save and load ---- */

/* The client's stamps that still count at now32, oldest first, into st; returns
 * how many. st has room for max(1, ring count). */
static uint32_t live_stamps(const rl_table *t, const ent *e, uint32_t now32, const uint32_t **st,
                            uint32_t *one)
{
    if (!(e->flags & E_RING)) {
        *one = ent_stamp(e);
        *st = one;
        return age_of(now32, *one) < t->window_ms ? 1 : 0;
    }
    const rl_ring *r = ent_ring(e);
    uint32_t k = 0;
    while (k < r->count && age_of(now32, r->st[ring_at(r, k)]) >= t->window_ms)
        k++;
    *st = NULL;
    *one = k;
    return r->count - k;
}

static uint32_t nth_live(const ent *e, const uint32_t *st, uint32_t first, uint32_t k)
{
    if (st != NULL)
        return st[k];
    const rl_ring *r = ent_ring(e);
    return r->st[ring_at(r, first + k)];
}

static int save_client(const rl_table *t, const ent *e, uint32_t now32, int64_t now_wall,
                       cn_buf *out, uint64_t *saved)
{
    const uint32_t *st;
    uint32_t first;
    uint32_t n = live_stamps(t, e, now32, &st, &first);
    if (n == 0)
        return 0;
    size_t klen = unpacked_len(e->key);
    int rc = cn_buf_reserve(out, 8 + klen + 8 * (size_t)n);
    if (rc < 0)
        return rc;
    cn_buf_put_u32(out, (uint32_t)klen);
    put_unpacked(out, e->key);
    cn_buf_put_u32(out, n);
    for (uint32_t k = 0; k < n; k++) {
        /* Unsigned arithmetic wraps instead of overflowing; the result is exact
         * whenever the wall-clock time fits in 64 bits. */
        int64_t age = age_of(now32, nth_live(e, st, first, k));
        cn_buf_put_u64(out, (uint64_t)now_wall - (uint64_t)age);
    }
    (*saved)++;
    return 0;
}

int rl_save(const rl_table *t, int64_t now_ms, int64_t now_wall_ms, cn_buf *out)
{
    size_t mark = out->len;
    uint64_t saved = 0;
    int rc = cn_buf_reserve(out, IMG_HEADER);
    if (rc == 0) {
        cn_buf_append(out, IMG_MAGIC, 3);
        cn_buf_put_u8(out, IMG_VERSION);
        cn_buf_put_u32(out, t->max_requests);
        cn_buf_put_u64(out, (uint64_t)t->window_ms);
        cn_buf_put_u64(out, 0);
    }
    for (size_t i = 0; i <= t->mask && rc == 0; i++) {
        if (t->slot[i] == 0)
            continue;
        ent e = ent_at(t, slot_ref(t->slot[i]));
        rc = save_client(t, &e, stamp_of(now_ms), now_wall_ms, out, &saved);
    }
    if (rc == 0) {
        char *at = out->data + mark + IMG_CLIENTS_AT;
        cn_set_u32(at, (uint32_t)(saved >> 32));
        cn_set_u32(at + 4, (uint32_t)saved);
        rc = cn_buf_put_u64(out, XXH3_64bits(out->data + mark, out->len - mark));
    }
    if (rc < 0)
        out->len = mark;
    return rc;
}

/* How long before now_wall the wall-clock stamp w was taken, saturated at
 * INT64_MAX; -1 for a stamp in the future. */
static int64_t wall_age(int64_t now_wall, int64_t w)
{
    if (w > now_wall)
        return -1;
    if (w < 0 && now_wall > INT64_MAX + w)
        return INT64_MAX;
    return now_wall - w;
}

/* Reading position in an image whose checksum has been verified; `end` excludes
 * the checksum. */
typedef struct img_in {
    const unsigned char *p;
    size_t pos;
    size_t end;
} img_in;

/* The key must be exactly the canonical form of a term, or it could never match a
 * request again; anything else means the image is not what rl_save wrote. */
static int load_key(rl_table *t, const unsigned char *key, uint32_t len)
{
    int index = 0;
    cn_buf_reset(&t->scratch);
    int rc = tk_canonical_n((const char *)key, len, &index, &t->scratch);
    if (rc == -ENOMEM)
        return rc;
    if (rc < 0 || (uint32_t)index != len || t->scratch.len != len ||
        memcmp(t->scratch.data, key, len) != 0)
        return CN_ECORRUPT;
    return 0;
}

/* Inserts a loaded client with the stamps stamps[first..n), given as wall-clock
 * times, converted to the monotonic clock: inline when there is one, else in a ring. */
static int load_insert(rl_table *t, const unsigned char *key, uint32_t len,
                       const unsigned char *stamps, uint32_t first, uint32_t n, int64_t now,
                       int64_t now_wall)
{
    pkey k = pack(key, len);
    if (k.len > MAX_KEY)
        return CN_ECORRUPT;
    uint32_t tag = key_tag(k), ref;
    find(t, k, tag, &ref);
    if (ref != 0)
        return CN_ECORRUPT;
    int rc = table_reserve_one(t);
    if (rc < 0)
        return rc;
    rl_ring *r = n - first > 1 ? ring_new(fit_cap(n - first, t->max_requests)) : NULL;
    uint32_t one = 0;
    for (uint32_t j = first; j < n; j++) {
        int64_t age = wall_age(now_wall, (int64_t)cn_get_u64(stamps + 8 * (size_t)j));
        one = stamp_of(age < 0 ? now : now - age);
        if (r != NULL)
            ring_push(r, one);
    }
    ref = ent_new(t, k, r != NULL ? E_RING : 0, one);
    if (r != NULL) {
        ent e = ent_at(t, ref);
        ent_set_ring(&e, r);
    }
    t->slot[find_empty(t, tag)] = slot_of(tag, ref);
    t->count++;
    return 0;
}

static int load_client(rl_table *t, img_in *in, int64_t now, int64_t now_wall)
{
    if (in->end - in->pos < 4)
        return CN_ECORRUPT;
    uint32_t len = cn_get_u32(in->p + in->pos);
    in->pos += 4;
    if (in->end - in->pos < (size_t)len + 4)
        return CN_ECORRUPT;
    const unsigned char *key = in->p + in->pos;
    in->pos += len;
    uint32_t n = cn_get_u32(in->p + in->pos);
    in->pos += 4;
    if ((in->end - in->pos) / 8 < n)
        return CN_ECORRUPT;
    const unsigned char *stamps = in->p + in->pos;
    in->pos += 8 * (size_t)n;
    int rc = load_key(t, key, len);
    if (rc < 0)
        return rc;
    /* Stamps are saved oldest first; any other order is damage. Ages then never
     * grow, so the expired ones form a prefix. */
    uint32_t first = n;
    for (uint32_t k = 0; k < n; k++) {
        int64_t w = (int64_t)cn_get_u64(stamps + 8 * (size_t)k);
        if (k > 0 && w < (int64_t)cn_get_u64(stamps + 8 * (size_t)(k - 1)))
            return CN_ECORRUPT;
        if (first == n && wall_age(now_wall, w) < t->window_ms)
            first = k;
    }
    if (n - first > t->max_requests)
        first = n - t->max_requests;
    if (first == n)
        return 0;
    return load_insert(t, key, len, stamps, first, n, now, now_wall);
}

static int load_image(rl_table *t, const unsigned char *p, size_t len, int64_t now,
                      int64_t now_wall)
{
    if (len < IMG_HEADER + IMG_TRAILER || memcmp(p, IMG_MAGIC, 3) != 0)
        return CN_ECORRUPT;
    if (p[3] != IMG_VERSION)
        return CN_EVERSION;
    img_in in = {p, IMG_HEADER, len - IMG_TRAILER};
    if (XXH3_64bits(p, in.end) != cn_get_u64(p + in.end))
        return CN_ECORRUPT;
    uint64_t clients = cn_get_u64(p + IMG_CLIENTS_AT);
    for (uint64_t k = 0; k < clients; k++) {
        int rc = load_client(t, &in, now, now_wall);
        if (rc < 0)
            return rc;
    }
    return in.pos == in.end ? 0 : CN_ECORRUPT;
}

int rl_load(rl_table *t, const char *data, size_t len, int64_t now_ms, int64_t now_wall_ms)
{
    if (t->count != 0)
        return -EINVAL;
    int rc = load_image(t, (const unsigned char *)data, len, now_ms, now_wall_ms);
    if (rc < 0)
        clear(t);
    if (t->scratch.cap > SCRATCH_KEEP)
        cn_buf_free(&t->scratch);
    return rc;
}
