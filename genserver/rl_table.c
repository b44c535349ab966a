#include "genserver/rl_table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The Makefile does not link libxxhash, so the hash is compiled in from the header. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cnode/error.h"
#include "cnode/term.h"
#include "genserver/term_key.h"

/* Smallest table; a power of two, as every size is, so a mask finds the bucket. */
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
 * One client, in one allocation: this header, the canonical key, padding to
 * 8 bytes, then `cap` timestamps used as a ring. The `count` stamps from `head` on
 * are in ascending order, so expiry only ever drops from the head.
 */
typedef struct rl_client {
    uint32_t key_len;
    uint32_t cap;
    uint32_t head;
    uint32_t count;
    unsigned char key[];
} rl_client;

/*
 * Linear probing over two parallel arrays. A probe compares the 32-bit tags, which
 * sit densely in one array, and touches a client only when its tag matches. The
 * tag is the low half of XXH3 of the key and also gives the home bucket, so
 * neither growing nor deleting needs to hash a key again (a table past 2^32 slots
 * would need more tag bits). An empty slot is NULL.
 */
struct rl_table {
    uint32_t max_requests;
    int64_t window_ms;
    rl_client **slot;
    uint32_t *tag;
    size_t mask;
    size_t count;
    size_t cursor;
    cn_buf scratch;
};

/* ---- one client ---- */

static size_t ring_offset(uint32_t key_len)
{
    const size_t align = _Alignof(int64_t);
    return (sizeof(rl_client) + key_len + align - 1) & ~(align - 1);
}

static int64_t *ring(const rl_client *c)
{
    return (int64_t *)((char *)c + ring_offset(c->key_len));
}

static size_t ring_at(const rl_client *c, uint32_t i)
{
    size_t k = (size_t)c->head + i;
    return k >= c->cap ? k - c->cap : k;
}

/*
 * How many stamps to give a client that needs `want` (want <= max). glibc serves a
 * request from a chunk of a multiple of 16 bytes with 8 bytes of overhead, so the
 * stamps that fit in the rounding come free. With another allocator this only makes
 * the request a little larger.
 */
static uint32_t fit_slots(uint32_t key_len, uint32_t want, uint32_t max)
{
    size_t off = ring_offset(key_len);
    size_t bytes = off + (size_t)want * sizeof(int64_t);
    size_t usable = ((bytes + 8 + 15) & ~(size_t)15) - 8;
    size_t slots = (usable - off) / sizeof(int64_t);
    return slots > max ? max : (uint32_t)slots;
}

static rl_client *client_new(const unsigned char *key, uint32_t key_len, uint32_t cap)
{
    rl_client *c = malloc(ring_offset(key_len) + (size_t)cap * sizeof(int64_t));
    if (c == NULL)
        return NULL;
    c->key_len = key_len;
    c->cap = cap;
    c->head = 0;
    c->count = 0;
    memcpy(c->key, key, key_len);
    return c;
}

/* Moves the client to an allocation with `cap` stamps (cap >= count), unrolling the
 * ring. Returns the new client, or NULL with the old one untouched. */
static rl_client *client_resize(rl_client *c, uint32_t cap)
{
    rl_client *n = client_new(c->key, c->key_len, cap);
    if (n == NULL)
        return NULL;
    const int64_t *from = ring(c);
    int64_t *to = ring(n);
    for (uint32_t i = 0; i < c->count; i++)
        to[i] = from[ring_at(c, i)];
    n->count = c->count;
    free(c);
    return n;
}

/* Drops the stamps that no longer count: those at least window_ms old. */
static void expire(rl_client *c, int64_t now, int64_t window)
{
    const int64_t *r = ring(c);
    while (c->count > 0 && now - r[c->head] >= window) {
        c->head = c->head + 1 == c->cap ? 0 : c->head + 1;
        c->count--;
    }
}

/* Appends a stamp; the caller has made room. A clock that steps back (a broken
 * promise, or a load that met a newer stamp) is held at the newest stamp, so the
 * ring stays sorted. */
static void push(rl_client *c, int64_t now)
{
    int64_t *r = ring(c);
    if (c->count > 0 && now < r[ring_at(c, c->count - 1)])
        now = r[ring_at(c, c->count - 1)];
    r[ring_at(c, c->count)] = now;
    c->count++;
}

/* ---- the index ---- */

/* Returns the slot holding the key (and sets *found), or the empty slot where it
 * belongs (and sets *found to NULL). The load factor keeps an empty slot around. */
static size_t find(const rl_table *t, const unsigned char *key, size_t len, uint32_t tag,
                   rl_client **found)
{
    for (size_t i = tag & t->mask;; i = (i + 1) & t->mask) {
        rl_client *c = t->slot[i];
        if (c == NULL || (t->tag[i] == tag && c->key_len == len &&
                          memcmp(c->key, key, len) == 0)) {
            *found = c;
            return i;
        }
    }
}

static size_t find_empty(const rl_table *t, uint32_t tag)
{
    size_t i = tag & t->mask;
    while (t->slot[i] != NULL)
        i = (i + 1) & t->mask;
    return i;
}

/*
 * Rebuilds the index with `slots` slots. The sweep cursor is scaled with it, so a
 * sweep under way carries on at about the same place; clients that landed behind
 * the cursor wait for the next sweep. Returns 0 or -ENOMEM (table unchanged).
 */
static int table_resize(rl_table *t, size_t slots)
{
    if (slots > SIZE_MAX / sizeof(rl_client *))
        return -ENOMEM;
    rl_client **slot = calloc(slots, sizeof *slot);
    uint32_t *tag = malloc(slots * sizeof *tag);
    if (slot == NULL || tag == NULL) {
        free(slot);
        free(tag);
        return -ENOMEM;
    }
    size_t old = t->mask + 1, mask = slots - 1;
    for (size_t i = 0; i < old; i++) {
        if (t->slot[i] == NULL)
            continue;
        size_t j = t->tag[i] & mask;
        while (slot[j] != NULL)
            j = (j + 1) & mask;
        slot[j] = t->slot[i];
        tag[j] = t->tag[i];
    }
    free(t->slot);
    free(t->tag);
    t->slot = slot;
    t->tag = tag;
    t->mask = mask;
    t->cursor = slots >= old ? t->cursor * (slots / old) : t->cursor / (old / slots);
    return 0;
}

/* Makes room for one more client: the load stays at most three quarters, which
 * keeps linear probes short. */
static int table_reserve_one(rl_table *t)
{
    size_t slots = t->mask + 1;
    if ((t->count + 1) * 4 <= slots * 3)
        return 0;
    if (slots > SIZE_MAX / 2)
        return -ENOMEM;
    return table_resize(t, slots * 2);
}

/*
 * Empties slot `hole` by backward-shift deletion: each later client of the probe
 * run moves back into the hole unless its home bucket lies between the hole and
 * itself, so every remaining client stays reachable from its home without
 * tombstones. The caller has freed the client.
 */
static void remove_at(rl_table *t, size_t hole)
{
    size_t j = hole;
    for (;;) {
        j = (j + 1) & t->mask;
        if (t->slot[j] == NULL)
            break;
        size_t home = t->tag[j] & t->mask;
        if (((j - home) & t->mask) >= ((j - hole) & t->mask)) {
            t->slot[hole] = t->slot[j];
            t->tag[hole] = t->tag[j];
            hole = j;
        }
    }
    t->slot[hole] = NULL;
    t->count--;
}

static void clear(rl_table *t)
{
    for (size_t i = 0; i <= t->mask; i++) {
        free(t->slot[i]);
        t->slot[i] = NULL;
    }
    t->count = 0;
    t->cursor = 0;
}

/* ---- public ---- */

rl_table *rl_table_new(uint32_t max_requests, int64_t window_ms)
{
    if (max_requests == 0 || window_ms <= 0)
        return NULL;
    rl_table *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->max_requests = max_requests;
    t->window_ms = window_ms;
    t->slot = calloc(MIN_SLOTS, sizeof *t->slot);
    t->tag = malloc(MIN_SLOTS * sizeof *t->tag);
    t->mask = MIN_SLOTS - 1;
    cn_buf_init(&t->scratch);
    if (t->slot == NULL || t->tag == NULL) {
        rl_table_free(t);
        return NULL;
    }
    return t;
}

void rl_table_free(rl_table *t)
{
    if (t == NULL)
        return;
    if (t->slot != NULL)
        clear(t);
    free(t->slot);
    free(t->tag);
    cn_buf_free(&t->scratch);
    free(t);
}

size_t rl_client_count(const rl_table *t)
{
    return t->count;
}

/* A client seen for the first time. Its ring starts with the slots that cost
 * nothing extra, so a client with one request pays for one or two stamps. */
static int admit_new(rl_table *t, const unsigned char *key, uint32_t len, uint32_t tag,
                     size_t i, int64_t now, uint32_t *remaining)
{
    rl_client *c = client_new(key, len, fit_slots(len, 1, t->max_requests));
    if (c == NULL)
        return -ENOMEM;
    size_t slots = t->mask + 1;
    int rc = table_reserve_one(t);
    if (rc < 0) {
        free(c);
        return rc;
    }
    if (t->mask + 1 != slots)
        i = find_empty(t, tag);
    push(c, now);
    t->slot[i] = c;
    t->tag[i] = tag;
    t->count++;
    *remaining = t->max_requests - 1;
    return 1;
}

/* The decision for the canonical key in t->scratch. */
static int check_key(rl_table *t, int64_t now, uint32_t *remaining)
{
    const unsigned char *key = (const unsigned char *)t->scratch.data;
    size_t len = t->scratch.len;
    if (len > UINT32_MAX)
        return CN_EDECODE;
    uint32_t tag = (uint32_t)XXH3_64bits(key, len);
    rl_client *c;
    size_t i = find(t, key, len, tag, &c);
    if (c == NULL)
        return admit_new(t, key, (uint32_t)len, tag, i, now, remaining);
    expire(c, now, t->window_ms);
    if (c->count >= t->max_requests) {
        *remaining = 0;
        return 0;
    }
    if (c->count == c->cap) {
        /* Doubling keeps the copies amortised; the cap stops at max_requests. */
        uint64_t want = (uint64_t)c->cap * 2;
        if (want > t->max_requests)
            want = t->max_requests;
        rl_client *n = client_resize(c, fit_slots(c->key_len, (uint32_t)want,
                                                  t->max_requests));
        if (n == NULL)
            return -ENOMEM;
        t->slot[i] = c = n;
    }
    push(c, now);
    *remaining = t->max_requests - c->count;
    return 1;
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

/* A ring that is at most a quarter full after a burst goes back to twice its use,
 * never below the starting size; allocation failure just keeps the larger ring. */
static void shrink_ring(rl_table *t, size_t i)
{
    rl_client *c = t->slot[i];
    uint32_t floor = fit_slots(c->key_len, 1, t->max_requests);
    if (c->cap <= floor || c->count > c->cap / 4)
        return;
    uint32_t cap = fit_slots(c->key_len, c->count > 0 ? c->count * 2 : 1, t->max_requests);
    if (cap >= c->cap)
        return;
    rl_client *n = client_resize(c, cap);
    if (n != NULL)
        t->slot[i] = n;
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
    (void)table_resize(t, want);
}

int rl_sweep(rl_table *t, int64_t now_ms, size_t budget)
{
    for (; budget > 0 && t->cursor <= t->mask; budget--) {
        size_t i = t->cursor;
        rl_client *c = t->slot[i];
        if (c == NULL) {
            t->cursor++;
            continue;
        }
        expire(c, now_ms, t->window_ms);
        if (c->count == 0) {
            free(c);
            remove_at(t, i);
            /* The slot is looked at again: a later client may have shifted into it. */
            continue;
        }
        shrink_ring(t, i);
        t->cursor++;
    }
    if (t->cursor <= t->mask)
        return 0;
    t->cursor = 0;
    shrink_table(t);
    return 1;
}

/* ---- save and load ---- */

/* The index of the client's first stamp that still counts at `now`. */
static uint32_t first_live(const rl_client *c, int64_t now, int64_t window)
{
    const int64_t *r = ring(c);
    uint32_t k = 0;
    while (k < c->count && now - r[ring_at(c, k)] >= window)
        k++;
    return k;
}

static int save_client(const rl_client *c, uint32_t first, int64_t now, int64_t now_wall,
                       cn_buf *out)
{
    const int64_t *r = ring(c);
    int rc = cn_buf_reserve(out, 8 + c->key_len + 8 * (size_t)(c->count - first));
    if (rc < 0)
        return rc;
    cn_buf_put_u32(out, c->key_len);
    cn_buf_append(out, c->key, c->key_len);
    cn_buf_put_u32(out, c->count - first);
    for (uint32_t k = first; k < c->count; k++) {
        /* Unsigned arithmetic wraps instead of overflowing; the result is exact
         * whenever the wall-clock time fits in 64 bits. */
        uint64_t age = (uint64_t)now - (uint64_t)r[ring_at(c, k)];
        cn_buf_put_u64(out, (uint64_t)now_wall - age);
    }
    return 0;
}

static int save_all(const rl_table *t, int64_t now, int64_t now_wall, cn_buf *out,
                    uint64_t *saved)
{
    int rc = 0;
    for (size_t i = 0; i <= t->mask && rc == 0; i++) {
        const rl_client *c = t->slot[i];
        if (c == NULL)
            continue;
        uint32_t first = first_live(c, now, t->window_ms);
        if (first == c->count)
            continue;
        rc = save_client(c, first, now, now_wall, out);
        (*saved)++;
    }
    return rc;
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
        rc = save_all(t, now_ms, now_wall_ms, out, &saved);
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
 * times, converted to the monotonic clock. */
static int load_insert(rl_table *t, const unsigned char *key, uint32_t len,
                       const unsigned char *stamps, uint32_t first, uint32_t n, int64_t now,
                       int64_t now_wall)
{
    uint32_t tag = (uint32_t)XXH3_64bits(key, len);
    rl_client *c;
    find(t, key, len, tag, &c);
    if (c != NULL)
        return CN_ECORRUPT;
    int rc = table_reserve_one(t);
    if (rc < 0)
        return rc;
    c = client_new(key, len, fit_slots(len, n - first, t->max_requests));
    if (c == NULL)
        return -ENOMEM;
    for (uint32_t k = first; k < n; k++) {
        int64_t age = wall_age(now_wall, (int64_t)cn_get_u64(stamps + 8 * (size_t)k));
        push(c, age < 0 ? now : now - age);
    }
    size_t i = find_empty(t, tag);
    t->slot[i] = c;
    t->tag[i] = tag;
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
