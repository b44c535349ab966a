/*
 * Private to genserver/journal*.c: the journal's struct and what the writer
 * (journal.c) and recovery (journal_recover.c) share.
 */
#ifndef GS_JOURNAL_INT_H
#define GS_JOURNAL_INT_H

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "cnode/buf.h"
#include "genserver/journal.h"

/*
 * fdatasyncs in flight at once. With one, a turn written while a sync runs
 * waits for it and then for its own (up to two syncs of latency); one at a
 * time was measured slower than four in the durability bench's power cells
 * (README, Durability), and eight no better than four.
 */
#define GS__SYNCS 4

/* One fdatasync on the thread pool. */
typedef struct gs__sync {
    uv_work_t work;
    struct gs_journal *j;
    int busy, fd, rc;
    uint64_t target;
    uint64_t started;           /* uv_hrtime() when queued: the sync's latency for the metrics */
    uint64_t took;              /* ns the fdatasync itself took (the slow-disk test, not the wakes) */
} gs__sync;

struct gs_journal {
    char *dir, *name;
    gs_durability mode;
    uint64_t snapshot_bytes;
    gs_handover *handover;
    const gs_journal_ops *ops;
    void *data;
    uint64_t lineage;       /* of every file this server writes here */
    uint64_t gen;           /* of the journal being written (fd) */
    uint64_t next_gen;      /* the generation the next snapshot takes */
    uint64_t oldest_gen;    /* the oldest journal that may still be on disk */
    int fd;                 /* the current journal, or -1 */
    uint64_t file_len;      /* where the next record goes */
    uint64_t since_snap;    /* journal bytes written since the last snapshot started */
    cn_buf pending;         /* the turn's records, not yet written */
    int failed;             /* 0, or the error that makes the journal refuse */
    pid_t child;            /* a background snapshot's process, or 0 */
    uint64_t child_gen;
    int child_failed;       /* the journal was refusing when the child was forked */
    uv_timer_t *retry;      /* while refusing: try a snapshot every RETRY_MS */
    uv_timer_t *poll;       /* while a child runs: reap it */
    /*
     * Power mode's pipelined fdatasync: commits are numbered; written_seq is
     * the last one written, synced_seq the last one known durable. Up to
     * GS__SYNCS syncs run on libuv's thread pool, each on a dup of the
     * journal's fd and covering everything written before it started (its
     * target), so each turn's commit can start its own while earlier ones run.
     */
    uv_loop_t *loop;
    uint64_t written_seq, synced_seq, sync_started;
    gs__sync syncs[GS__SYNCS];
    int syncs_busy;
    gs_journal_sync_cb sync_cb;
    void *sync_arg;
    int closing;            /* closed while a sync ran: freed when it ends */
    /*
     * An inline sync took GS_JOURNAL_SLOW_SYNC_NS or more: syncs go to the
     * pool until one there is quicker. next_switch_log: the loop's time
     * (ms) before which a switch is logged at debug level, not info.
     */
    int on_pool;
    uint64_t next_switch_log;
};

/* The fault seam (gs_journal_set_fault): 0, or the -errno the operation must fail with. */
int gs__journal_fault(const char *op);
uint32_t gs__journal_crc(const void *len4, const void *p, size_t n);
void gs__journal_header(unsigned char *h, uint16_t schema, uint64_t lineage, uint64_t gen);
int gs__journal_path(const gs_journal *j, uint64_t gen, char *buf, size_t size);
gs_journal *gs__journal_new(uv_loop_t *loop, const gs_journal_config *cfg, const gs_journal_ops *ops,
                            void *data);
/* Starts writing journal gen (none may exist), which follows snapshot gen-1's chain or snapshot gen. */
int gs__journal_continue(gs_journal *j, uint64_t gen);
/* A background snapshot (fork) at next_gen with a fresh journal: 0 when the child runs. */
int gs__journal_start_snapshot(gs_journal *j);
/* A snapshot written in the loop, at next_gen; with new_journal, a fresh journal for it. */
int gs__journal_snapshot_now(gs_journal *j, int new_journal);
/* Refuses state changes from now on (logged once) and retries. */
void gs__journal_refuse(gs_journal *j, int rc, const char *what);

#endif
