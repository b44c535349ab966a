/*
 * A server's journal: the state changes since its last snapshot, so that a
 * kill -9, a segfault or an OOM kill loses no acknowledged operation.
 *
 * Files, in the node's data directory, for a server called NAME:
 *
 *     NAME.state            the snapshot (genserver/statefile.h), its payload
 *                           [u64 lineage][u64 generation][the server's image]
 *     NAME.journal.GEN      the records since snapshot GEN (16 hex digits)
 *
 * A journal file starts with a header and then holds records, all integers
 * big-endian:
 *
 *     header (36 bytes)   "CNJL", u16 format (GS_JOURNAL_FORMAT), u16 the
 *                         server's schema, u64 lineage, u64 generation,
 *                         u64 zero, u32 CRC-32 of the 32 bytes before it
 *     record              u32 length n (1 to GS_JOURNAL_RECORD_MAX), u32 CRC-32
 *                         of the length's 4 bytes and the payload, n bytes of
 *                         payload (the server's, opaque here)
 *
 * The lineage is a random 64-bit id chosen when a server first starts in a
 * directory; every snapshot and journal it writes carries it, and generations
 * only grow within it. Snapshot G holds the state at the start of journal G.
 * When a snapshot fails, the next one starts another journal, so recovery
 * replays a chain: journals G, G+1, ... (consecutive, same lineage) on top of
 * snapshot G. A journal of the lineage older than the snapshot is stale (a
 * crash between a snapshot and the removal of what it replaced) and removed;
 * any other journal (another lineage, a gap, no snapshot at all) does not
 * belong to the snapshot: it is refused, logged and renamed NAME.journal.GEN.
 * foreign-<UTC time>, never deleted. A torn tail (an incomplete record, or one
 * whose CRC fails) is truncated, with a log line saying how many bytes went.
 *
 * Durability modes (--durability):
 *   terminate  the seed's behaviour: the snapshot is written in terminate only;
 *              no journal is written (one left by another mode is replayed).
 *   crash      each loop turn's records are written (one write(2)) before the
 *              turn's replies leave: a killed process loses nothing acknowledged.
 *   power      as crash, plus fdatasync(2) before the replies leave: power loss
 *              loses nothing acknowledged either.
 *
 * Group commit: the server appends records as it changes state
 * (gs_journal_append); genserver.c holds the replies of a server whose journal
 * has records not yet durable, and at the end of the loop turn, before the
 * node flushes its output (cn_node_add_flush_hook), commits them all at once
 * and then releases the replies. In power mode, once all of a node's journals
 * have written the turn's records, one of them syncs in the loop (fdatasync
 * there, as Redis's appendfsync always does): its replies leave with the
 * turn's output, without the two cross-thread wakes a sync on another thread
 * costs. The others sync on libuv's thread pool meanwhile, up to four per
 * journal at a time, and so does a journal whose sync is still running: the
 * replies wait for the sync that covers their records (gs_journal_on_sync),
 * and each sync covers everything written before it started, so the batch
 * grows with the disk's latency. A disk slow enough that one sync in the loop
 * takes GS_JOURNAL_SLOW_SYNC_NS or more would stall every connection of the
 * node: that journal's syncs then go to the pool, until one there is quick again.
 *
 * Snapshots compact the journal in the background: when the current journal
 * passes snapshot_bytes, the server forks; the child writes the snapshot from
 * its copy-on-write image of the state and exits, while the parent goes on
 * serving into a new journal. When the child reports success, the journals the
 * snapshot covers are removed.
 *
 * When the disk says no (a write, an fdatasync or a snapshot fails): the
 * journal is "refusing" (gs_journal_ready returns the error): servers answer
 * state-changing calls with {error, not_durable} and change nothing; the
 * replies held in the turn that failed get the same answer (the change stays in
 * memory). Every second a snapshot is tried; the first that succeeds makes the
 * journal accept again. Each change of state is logged once.
 *
 * Not thread safe: one loop.
 */
#ifndef GS_JOURNAL_H
#define GS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cnode/buf.h"

#define GS_JOURNAL_MAGIC "CNJL"
#define GS_JOURNAL_FORMAT 1
#define GS_JOURNAL_HEADER_LEN 36
#define GS_JOURNAL_RECORD_HEADER 8
#define GS_JOURNAL_RECORD_MAX (1024 * 1024)
/* Bytes of journal after which a background snapshot starts, unless configured. */
#define GS_JOURNAL_SNAPSHOT_BYTES (64ull * 1024 * 1024)
/* The prefix of a snapshot's payload: lineage and generation. */
#define GS_JOURNAL_SNAP_PREFIX 16

typedef enum gs_durability {
    GS_DURABLE_TERMINATE,
    GS_DURABLE_CRASH,
    GS_DURABLE_POWER
} gs_durability;

/* "terminate", "crash" or "power": 0 and *out, or -EINVAL. */
int gs_durability_parse(const char *text, gs_durability *out);
const char *gs_durability_name(gs_durability d);

/*
 * The state a server could not save when it stopped (its final snapshot failed,
 * or it was killed while the disk refused): its image, handed to the next
 * incarnation, which takes it instead of the older files. The supervisor's
 * child argument owns it, so it outlives the server. `full` says it holds one.
 */
typedef struct gs_handover {
    cn_buf image;
    int full;
} gs_handover;

void gs_handover_free(gs_handover *h);

/* What a server tells the journal about its state. data is the server's pointer. */
typedef struct gs_journal_ops {
    uint16_t schema;          /* of the snapshot payload, with the lineage prefix */
    uint16_t legacy_schema;   /* an older payload without the prefix, still read; 0: none */
    /* Appends the whole state's image to out. 0 or a negative error. */
    int (*save)(void *data, cn_buf *out);
    /* Takes an image made by save (or a legacy file's payload) as the state. */
    int (*load)(void *data, const char *image, size_t len, int legacy);
    /* Applies one record, as gs_journal_append got it. < 0: the record is skipped, logged. */
    int (*replay)(void *data, const char *rec, size_t len);
} gs_journal_ops;

typedef struct gs_journal_config {
    const char *dir;            /* the data directory */
    const char *name;           /* the server's file name (statefile.h's rules) */
    gs_durability mode;
    uint64_t snapshot_bytes;    /* 0: GS_JOURNAL_SNAPSHOT_BYTES */
    gs_handover *handover;      /* may be NULL */
} gs_journal_config;

typedef struct gs_journal gs_journal;

/*
 * Recovers the server's state and opens its journal: takes the handover if it
 * is full, else loads the snapshot and replays the chain of journals (both
 * through ops, into data); then, in crash and power modes, opens the journal
 * that continues the chain on disk (forking a snapshot to compact it when it
 * is not empty), or, when the disk lacks the recovered state (a first start,
 * a legacy file, the handover), writes a snapshot in the loop and a fresh
 * journal. A snapshot or journal that cannot be written here leaves the
 * journal refusing (and retrying), not the server failed.
 * cfg's strings are copied; ops and data are borrowed for the journal's life.
 * The caller frees the journal with gs_journal_close. Returns 0; a negative
 * error only for a bad argument (-EINVAL).
 */
int gs_journal_open(uv_loop_t *loop, const gs_journal_config *cfg, const gs_journal_ops *ops, void *data,
                    gs_journal **out);

/* 0 when a state change can be made durable as the mode promises, else the error that refuses it. */
int gs_journal_ready(const gs_journal *j);

/* Appends one record (1 to GS_JOURNAL_RECORD_MAX bytes, copied) to the turn's. Nothing in terminate mode. */
void gs_journal_append(gs_journal *j, const void *rec, size_t len);

/* Are there records the replies must wait for (not yet durable, journal accepting)? */
int gs_journal_holding(const gs_journal *j);

/*
 * Writes the records appended since the last commit and, in power mode,
 * starts a sync on the thread pool for them. 0 when they are as durable as the
 * mode promises; GS_JOURNAL_SYNCING in power mode, where they are durable once
 * gs_journal_synced reaches gs_journal_seq (the sync callback says when); else
 * the journal is refusing from now on and the error is returned.
 * gs_journal_write followed by gs_journal_sync(j, GS_SYNC_POOL).
 */
#define GS_JOURNAL_SYNCING 1
int gs_journal_commit(gs_journal *j);

/*
 * A commit in two steps, for a node that writes all its journals' records
 * before it decides where each sync runs (genserver/gs_hold.c).
 * gs_journal_write writes the records and returns as gs_journal_commit, but
 * starts no sync: in power mode GS_JOURNAL_SYNCING then means that
 * gs_journal_needs_sync is true until gs_journal_sync starts one.
 */
int gs_journal_write(gs_journal *j);
int gs_journal_needs_sync(const gs_journal *j);

/*
 * An inline sync (GS_SYNC_INLINE) runs fdatasync in the loop, when no sync of
 * the journal runs on the pool and its inline syncs have not been found slow
 * (gs_journal_inline_ok); otherwise, and with GS_SYNC_POOL, the sync starts on
 * the thread pool. Returns as gs_journal_commit: 0 when an inline sync made
 * everything written durable (the sync callback is not called for it).
 *
 * An inline sync that takes GS_JOURNAL_SLOW_SYNC_NS or more sends the
 * journal's syncs to the pool, until a sync there takes less: the loop serves
 * every connection of the node, and a slow disk must not hold them all. Each
 * switch is logged at info level (at most once a minute per journal; the
 * others at debug level).
 */
#define GS_JOURNAL_SLOW_SYNC_NS (2ull * 1000 * 1000)
typedef enum gs_sync_where { GS_SYNC_POOL, GS_SYNC_INLINE } gs_sync_where;
int gs_journal_sync(gs_journal *j, gs_sync_where where);
int gs_journal_inline_ok(const gs_journal *j);

/* The number of the last commit that wrote records, and of the last one known durable. */
uint64_t gs_journal_seq(const gs_journal *j);
uint64_t gs_journal_synced(const gs_journal *j);

/*
 * Called from the loop when a sync ends: the commits up to synced are
 * durable; status < 0 means the journal now refuses and no later commit
 * will become durable (answer their callers so). One callback per journal;
 * NULL removes it.
 */
typedef void (*gs_journal_sync_cb)(void *arg, uint64_t synced, int status);
void gs_journal_on_sync(gs_journal *j, gs_journal_sync_cb cb, void *arg);

/* Makes everything written durable now, in the loop (power mode; a server stopping). 0 or the error. */
int gs_journal_sync_now(gs_journal *j);

/*
 * Ends the journal. With save, a final snapshot is written (terminate) and the
 * journals it covers removed; if that fails, or without save while records are
 * not durable, the state goes to the handover and the error is returned.
 * A running snapshot child is killed and reaped (its journals stay). Frees j.
 */
int gs_journal_close(gs_journal *j, int save);

/* The turn's encoded answer to a refused call: {error, not_durable}. */
#define GS_NOT_DURABLE "not_durable"

/* ---- For tests ---- */

/*
 * Replaces write/pwrite and fdatasync for journal and snapshot writes of this
 * process: a function that returns -errno makes that call fail as the disk
 * would. NULL restores the real calls. The ops: "write", "fdatasync",
 * "snapshot", and "mmap" (recovery then reads each journal with read(), as on
 * a file system that cannot map it).
 */
typedef int (*gs_journal_fault_fn)(const char *op);
void gs_journal_set_fault(gs_journal_fault_fn fn);

/*
 * The duration from which a sync counts as slow (GS_JOURNAL_SLOW_SYNC_NS
 * unless set), for this process: 0 makes every inline sync slow, UINT64_MAX
 * every sync quick, so tests drive the switch without timing anything.
 */
void gs_journal_set_slow_sync(uint64_t ns);

/* The generation of the current journal, and whether a snapshot child is running. */
uint64_t gs_journal_generation(const gs_journal *j);
int gs_journal_snapshotting(const gs_journal *j);

#endif
