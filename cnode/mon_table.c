/*
 * The table of remote monitors by (connection, reference) (node_int.h).
 *
 * A gen:call from a peer adds a monitor (MONITOR_P) and removes it soon after
 * (DEMONITOR_P), so with many callers this table is on every call's path, and
 * the uthash tables it used to be cost a sixth of the node's time with 64
 * caller nodes: two hashes of a 32-byte key per operation, a bucket chain of
 * scattered entries, a handle of 56 bytes in each monitor.
 *
 * Here each of CN__MONITOR_SHARDS shards is an array of (hash, monitor) slots
 * with linear probing: a lookup reads one or two adjacent slots and compares
 * a 64-bit hash before it touches a monitor; a removal shifts the slots after
 * it back (no tombstones, so a table of calls in flight never degrades); no
 * monitor is allocated or freed here (proc.c recycles them).
 *
 * A shard doubles when half full, rehashing its own entries only, from the
 * hashes kept in its slots: a peer's million monitors are 64 shards of about
 * 16 000, so no insertion moves more than that (the reason for the shards,
 * issue 9: a single table doubling under half a million held the loop 183
 * ms). A shard shrinks when an eighth full, so the room a million monitors
 * took goes back as they go, a batch per turn (cn__proc_reclaim).
 *
 * The hash is keyed with a random seed per table: a peer chooses its
 * references, and must not be able to choose them to collide.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/mem.h"
#include "cnode/node_int.h"

/* The smallest shard, each allocated with the table and kept: calls in flight allocate nothing. */
#define SHARD_MIN 16
/* log2 of CN__MONITOR_SHARDS: the shard is the top bits of the hash, the slot its low bits. */
#define SHARD_BITS 6

_Static_assert(CN__MONITOR_SHARDS == 1u << SHARD_BITS, "SHARD_BITS matches CN__MONITOR_SHARDS");

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t key_hash(const cn_mon_table *t, const cn_monitor_key *k)
{
    uint64_t h = t->seed ^ (uint64_t)(uintptr_t)k->conn;
    for (uint32_t i = 0; i < k->len; i++)
        h = (h ^ k->n[i]) * 0x9e3779b97f4a7c15ull;
    return mix(h ^ k->len);
}

/* Keys are whole structs with unused words zeroed (cn__monitor_key). */
static int key_eq(const cn_monitor_key *a, const cn_monitor_key *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

static cn_mon_shard *shard_of(cn_mon_table *t, uint64_t h)
{
    return &t->shards[h >> (64 - SHARD_BITS)];
}

/* The slot holding key k (hash h), or the empty slot that ends its probe. */
static size_t probe(const cn_mon_shard *s, uint64_t h, const cn_monitor_key *k)
{
    size_t i = (size_t)h & s->mask;
    while (s->slots[i].m != NULL && (s->slots[i].h != h || !key_eq(&s->slots[i].m->key, k)))
        i = (i + 1) & s->mask;
    return i;
}

/* The shard with room for cap slots (a power of two), its entries moved over. */
static void resize(cn_mon_shard *s, size_t cap)
{
    cn_mon_slot *old = s->slots;
    size_t old_cap = s->mask + 1;
    assert(cap >= SHARD_MIN && s->count < cap / 2 + 1);
    s->slots = cn_calloc(cap, sizeof *s->slots);
    s->mask = cap - 1;
    for (size_t j = 0; j < old_cap; j++) {
        if (old[j].m == NULL)
            continue;
        size_t i = (size_t)old[j].h & s->mask;
        while (s->slots[i].m != NULL)
            i = (i + 1) & s->mask;
        s->slots[i] = old[j];
    }
    free(old);
}

void cn__monitor_key(cn_monitor_key *k, cn_conn *c, const erlang_ref *ref)
{
    memset(k, 0, sizeof *k);
    k->conn = c;
    k->len = ref->len > 5 ? 5 : (uint32_t)ref->len;
    memcpy(k->n, ref->n, k->len * sizeof k->n[0]);
}

void cn__mon_table_init(cn_mon_table *t, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->seed = seed;
    for (unsigned i = 0; i < CN__MONITOR_SHARDS; i++) {
        t->shards[i].slots = cn_calloc(SHARD_MIN, sizeof(cn_mon_slot));
        t->shards[i].mask = SHARD_MIN - 1;
    }
}

void cn__mon_table_free(cn_mon_table *t)
{
    for (unsigned i = 0; i < CN__MONITOR_SHARDS; i++) {
        assert(t->shards[i].count == 0);
        free(t->shards[i].slots);
    }
    memset(t->shards, 0, sizeof t->shards);
}

cn_monitor *cn__mon_table_find(cn_mon_table *t, const cn_monitor_key *k)
{
    uint64_t h = key_hash(t, k);
    cn_mon_shard *s = shard_of(t, h);
    return s->slots[probe(s, h, k)].m;
}

void cn__mon_table_add(cn_mon_table *t, cn_monitor *m)
{
    uint64_t h = key_hash(t, &m->key);
    cn_mon_shard *s = shard_of(t, h);
    if (2 * (s->count + 1) > s->mask + 1)
        resize(s, 2 * (s->mask + 1));
    size_t i = probe(s, h, &m->key);
    assert(s->slots[i].m == NULL);  /* the caller looked it up first: keys are unique */
    s->slots[i] = (cn_mon_slot){h, m};
    s->count++;
}

/* Is slot k's home h & mask outside the cyclic range (hole, j]? Then it may move into the hole. */
static int may_fill(size_t hole, size_t j, size_t home)
{
    return hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
}

void cn__mon_table_del(cn_mon_table *t, cn_monitor *m)
{
    uint64_t h = key_hash(t, &m->key);
    cn_mon_shard *s = shard_of(t, h);
    size_t hole = probe(s, h, &m->key);
    assert(s->slots[hole].m == m);
    /* Backward shift: each later slot of the run that may sit earlier moves into the hole. */
    for (size_t j = (hole + 1) & s->mask; s->slots[j].m != NULL; j = (j + 1) & s->mask) {
        if (may_fill(hole, j, (size_t)s->slots[j].h & s->mask)) {
            s->slots[hole] = s->slots[j];
            hole = j;
        }
    }
    s->slots[hole].m = NULL;
    s->count--;
    size_t cap = s->mask + 1;
    if (cap > SHARD_MIN && s->count < cap / 8)
        resize(s, cap / 2);
}
