/*
 * The journal (genserver/journal.h) on its own, with a toy server whose state
 * is a number and whose records add to it: the file and record format, replay,
 * a torn tail, a foreign journal, a stale one, the background snapshot, the
 * handover, and a disk that says no (through the fault seam). Also the time to
 * replay 1,000,000 records, printed, not asserted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "cnode/buf.h"
#include "cnode/log.h"
#include "genserver/journal.h"
#include "genserver/statefile.h"

typedef struct toy {
    int64_t value;
    uint64_t replayed;
    int loaded;
} toy;

static int toy_save(void *data, cn_buf *out)
{
    return cn_buf_put_u64(out, (uint64_t)((toy *)data)->value);
}

static int toy_load(void *data, const char *image, size_t len, int legacy)
{
    (void)legacy;
    toy *t = data;
    if (len != 8)
        return -EINVAL;
    t->value = (int64_t)cn_get_u64(image);
    t->loaded = 1;
    return 0;
}

/* A record is one signed byte to add. */
static int toy_replay(void *data, const char *rec, size_t len)
{
    toy *t = data;
    if (len != 1)
        return -EINVAL;
    t->value += (signed char)rec[0];
    t->replayed++;
    return 0;
}

static const gs_journal_ops toy_ops = {.schema = 7, .save = toy_save, .load = toy_load, .replay = toy_replay};

typedef struct fx {
    uv_loop_t loop;
    char dir[64];
    gs_handover handover;
    toy t;
    gs_journal *j;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    strcpy(f->dir, "/tmp/test_journal.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    cn_log_threshold = CN_LOG_ERROR + 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    gs_journal_set_fault(NULL);
    gs_journal_set_slow_sync(GS_JOURNAL_SLOW_SYNC_NS);
    if (f->j)
        gs_journal_close(f->j, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    gs_handover_free(&f->handover);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    cn_log_threshold = CN_LOG_INFO;
    return 0;
}

/* Opens the journal on a fresh toy: recovery runs into f->t. */
static void open_j(fx *f, gs_durability mode, uint64_t snapshot_bytes)
{
    memset(&f->t, 0, sizeof f->t);
    gs_journal_config c = {.dir = f->dir, .name = "toy", .mode = mode, .snapshot_bytes = snapshot_bytes,
                           .handover = &f->handover};
    assert_int_equal(gs_journal_open(&f->loop, &c, &toy_ops, &f->t, &f->j), 0);
}

/* Runs the loop until the background snapshot (a start-up one, or a compaction) is done, bounded. */
static void await_snapshot(fx *f)
{
    for (int i = 0; i < 400 && gs_journal_snapshotting(f->j); i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_false(gs_journal_snapshotting(f->j));
}

/* A crash: the journal is dropped without a snapshot (what is committed stays on disk). */
static void crash(fx *f)
{
    assert_int_equal(gs_journal_close(f->j, 0), 0);
    f->j = NULL;
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void add(fx *f, signed char by)
{
    f->t.value += by;
    gs_journal_append(f->j, &by, 1);
}

static void journal_path(fx *f, uint64_t gen, char *out, size_t size)
{
    snprintf(out, size, "%s/toy.journal.%016llx", f->dir, (unsigned long long)gen);
}

static void read_all(const char *path, cn_buf *b)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    fstat(fd, &st);
    cn_buf_reserve(b, (size_t)st.st_size);
    assert_int_equal(read(fd, b->data, (size_t)st.st_size), st.st_size);
    b->len = (size_t)st.st_size;
    close(fd);
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static void the_file_and_record_format(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(gs_journal_generation(f->j), 1);
    add(f, 5);
    assert_true(gs_journal_holding(f->j));
    assert_int_equal(gs_journal_commit(f->j), 0);
    assert_false(gs_journal_holding(f->j));
    char path[128];
    journal_path(f, 1, path, sizeof path);
    cn_buf b;
    cn_buf_init(&b);
    read_all(path, &b);
    const unsigned char *p = (const unsigned char *)b.data;
    assert_int_equal(b.len, GS_JOURNAL_HEADER_LEN + 8 + 1);
    assert_memory_equal(p, "CNJL", 4);
    assert_int_equal(cn_get_u16(p + 4), GS_JOURNAL_FORMAT);
    assert_int_equal(cn_get_u16(p + 6), 7);
    assert_int_equal(cn_get_u64(p + 16), 1);
    assert_int_equal(cn_get_u32(p + 32), (uint32_t)crc32(0, p, 32));
    const unsigned char *r = p + GS_JOURNAL_HEADER_LEN;
    assert_int_equal(cn_get_u32(r), 1);
    assert_int_equal(cn_get_u32(r + 4), (uint32_t)crc32(crc32(0, r, 4), r + 8, 1));
    assert_int_equal(r[8], 5);
    /* The snapshot: lineage, generation 1, then the toy's image (0 at the start). */
    cn_buf s;
    cn_buf_init(&s);
    assert_int_equal(gs_state_load(f->dir, "toy", 7, &s), 0);
    assert_int_equal(s.len, 24);
    assert_memory_equal(s.data, p + 8, 8);
    assert_int_equal(cn_get_u64(s.data + 8), 1);
    assert_int_equal(cn_get_u64(s.data + 16), 0);
    cn_buf_free(&s);
    cn_buf_free(&b);
}

static void a_crash_replays_every_committed_record(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 0);
    for (int i = 0; i < 100; i++) {
        add(f, i % 2 ? 3 : -1);
        if (i % 10 == 9)
            assert_int_equal(gs_journal_commit(f->j), 0);
    }
    crash(f);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 50 * 3 - 50);
    assert_int_equal(f->t.replayed, 100);
    /* The start-up snapshot (forked: the disk has the state) covers them: generation 2, and journal 1 goes. */
    assert_true(gs_journal_snapshotting(f->j));
    await_snapshot(f);
    char path[128];
    journal_path(f, 1, path, sizeof path);
    assert_false(exists(path));
    assert_int_equal(gs_journal_generation(f->j), 2);
    crash(f);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 100);
    assert_int_equal(f->t.replayed, 0);
}

/* Killed while its start-up snapshot is still being written: the chain on disk has everything. */
static void a_crash_during_the_start_up_snapshot_loses_nothing(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 0);
    add(f, 5);
    assert_int_equal(gs_journal_commit(f->j), 0);
    crash(f);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_true(gs_journal_snapshotting(f->j));
    add(f, 7);
    assert_int_equal(gs_journal_commit(f->j), 0);
    crash(f); /* kills the child before it could finish, or just after */
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 12);
    await_snapshot(f);
}

/*
 * A clean stop leaves a snapshot and no journal; the next start continues with
 * a journal of the snapshot's own generation, so a kill right after loses nothing.
 */
static void a_kill_after_a_clean_stop_and_a_start_loses_nothing(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 0);
    add(f, 2);
    assert_int_equal(gs_journal_commit(f->j), 0);
    assert_int_equal(gs_journal_close(f->j, 1), 0);
    f->j = NULL;
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 2);
    assert_false(gs_journal_snapshotting(f->j));
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), 0);
    crash(f);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 3);
    assert_int_equal(f->t.replayed, 1);
    await_snapshot(f);
}

/*
 * Journals ten increments and then `last`, crashes, and appends half a record
 * to the journal (at path): its size before that is returned.
 */
static off_t crash_with_torn_tail(fx *f, signed char last, char *path, size_t cap)
{
    open_j(f, GS_DURABLE_CRASH, 0);
    for (int i = 0; i < 10; i++)
        add(f, 1);
    if (last != 0)
        add(f, last);
    assert_int_equal(gs_journal_commit(f->j), 0);
    crash(f);
    journal_path(f, 1, path, cap);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    FILE *fp = fopen(path, "ab");
    fwrite("\0\0\0\x09\1\2", 1, 6, fp);
    fclose(fp);
    return st.st_size;
}

static void a_torn_tail_is_cut_off(void **state)
{
    fx *f = *state;
    char path[128];
    struct stat st;
    /* Half a record, then (another case) a record whose CRC is wrong. */
    off_t whole = crash_with_torn_tail(f, 0, path, sizeof path);
    /* Terminate mode reads the chain without the start-up snapshot, so the file stays to look at. */
    open_j(f, GS_DURABLE_TERMINATE, 0);
    assert_int_equal(f->t.value, 10);
    stat(path, &st);
    assert_int_equal(st.st_size, whole);
    gs_journal_close(f->j, 0);
    f->j = NULL;
    FILE *fp = fopen(path, "ab");
    fwrite("\0\0\0\x01\0\0\0\0\x05", 1, 9, fp);
    fclose(fp);
    open_j(f, GS_DURABLE_TERMINATE, 0);
    assert_int_equal(f->t.value, 10);
    stat(path, &st);
    assert_int_equal(st.st_size, whole);
}

static int mmap_refusals;

static int fail_mmap(const char *op)
{
    if (strcmp(op, "mmap") != 0)
        return 0;
    mmap_refusals++;
    return -ENODEV;
}

/* Where a journal cannot be mapped it is read: the same records replay, and a torn tail is cut. */
static void a_journal_that_cannot_be_mapped_is_read(void **state)
{
    fx *f = *state;
    char path[128];
    struct stat st;
    off_t whole = crash_with_torn_tail(f, -3, path, sizeof path);
    mmap_refusals = 0;
    gs_journal_set_fault(fail_mmap);
    open_j(f, GS_DURABLE_TERMINATE, 0);
    gs_journal_set_fault(NULL);
    assert_true(mmap_refusals > 0);
    assert_int_equal(f->t.value, 7);
    stat(path, &st);
    assert_int_equal(st.st_size, whole);
}

static void a_foreign_journal_is_moved_aside_and_not_replayed(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 0);
    add(f, 9);
    assert_int_equal(gs_journal_commit(f->j), 0);
    crash(f);
    char path[128], keep[160], snap[160];
    journal_path(f, 1, path, sizeof path);
    snprintf(keep, sizeof keep, "%s/other", f->dir);
    assert_int_equal(rename(path, keep), 0);
    /* Without its snapshot and journal the directory starts another lineage. */
    snprintf(snap, sizeof snap, "%s/toy.state", f->dir);
    assert_int_equal(unlink(snap), 0);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 0);
    crash(f);
    /* The journal of the first lineage, under the name of the second's current generation. */
    char cur[128];
    journal_path(f, 1, cur, sizeof cur);
    assert_int_equal(rename(keep, cur), 0);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 0);
    assert_int_equal(f->t.replayed, 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q 'toy.journal.0000000000000001.foreign-'", f->dir);
    assert_int_equal(system(cmd), 0);
}

static void a_journal_without_its_generation_before_it_is_foreign(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 0);
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), 0);
    crash(f);
    /* Snapshot 1 and journal 1, which becomes journal 3, header and name: generation 2 is missing. */
    char one[128], three[128];
    journal_path(f, 1, one, sizeof one);
    journal_path(f, 3, three, sizeof three);
    int fd = open(one, O_RDWR);
    unsigned char h[GS_JOURNAL_HEADER_LEN];
    assert_int_equal(pread(fd, h, sizeof h, 0), sizeof h);
    h[23] = 3;
    cn_set_u32(h + 32, (uint32_t)crc32(0, h, 32));
    assert_int_equal(pwrite(fd, h, sizeof h, 0), sizeof h);
    close(fd);
    assert_int_equal(rename(one, three), 0);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.replayed, 0);
    assert_false(exists(three));
}

static int fail_writes(const char *op)
{
    return strcmp(op, "write") == 0 ? -ENOSPC : 0;
}

static int fail_syncs(const char *op)
{
    return strcmp(op, "fdatasync") == 0 ? -EIO : 0;
}

static int fail_all(const char *op)
{
    (void)op;
    return -EROFS;
}

/* Runs the loop until the journal accepts again (its retry snapshot succeeded), bounded. */
static void await_accepting(fx *f)
{
    for (int i = 0; i < 400 && gs_journal_ready(f->j) != 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(gs_journal_ready(f->j), 0);
}

static void a_failed_write_refuses_until_a_snapshot_succeeds(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 0);
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), 0);
    gs_journal_set_fault(fail_writes);
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), -ENOSPC);
    assert_int_equal(gs_journal_ready(f->j), -ENOSPC);
    /* Refusing: nothing is held, and appends are not kept (the snapshot takes the memory). */
    add(f, 1);
    assert_false(gs_journal_holding(f->j));
    assert_int_equal(gs_journal_commit(f->j), -ENOSPC);
    gs_journal_set_fault(NULL);
    await_accepting(f);
    /* The retry snapshot holds all three, in memory when it was taken. */
    crash(f);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 3);
}

typedef struct synced_log {
    int calls;
    uint64_t synced;
    int status;
} synced_log;

static void log_sync(void *arg, uint64_t synced, int status)
{
    synced_log *l = arg;
    l->calls++;
    l->synced = synced;
    l->status = status;
}

/* Runs the loop until the sync callback has been called `calls` times, bounded. */
static void await_syncs(fx *f, synced_log *l, int calls)
{
    for (int i = 0; i < 1000 && l->calls < calls; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(l->calls >= calls);
}

/* Power mode: commits are written at once and made durable by one sync at a time, in the background. */
static void power_mode_syncs_in_the_background_and_in_order(void **state)
{
    fx *f = *state;
    synced_log l = {0};
    open_j(f, GS_DURABLE_POWER, 0);
    gs_journal_on_sync(f->j, log_sync, &l);
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), GS_JOURNAL_SYNCING);
    assert_int_equal(gs_journal_seq(f->j), 1);
    assert_true(gs_journal_holding(f->j));
    /* The second and third commits are written while the first sync runs; one later sync covers both. */
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), GS_JOURNAL_SYNCING);
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), GS_JOURNAL_SYNCING);
    while (gs_journal_synced(f->j) < 3)
        await_syncs(f, &l, l.calls + 1);
    assert_true(l.calls <= 3);
    assert_int_equal(l.status, 0);
    assert_false(gs_journal_holding(f->j));
    crash(f);
    open_j(f, GS_DURABLE_POWER, 0);
    assert_int_equal(f->t.value, 3);
}

static void a_failed_fdatasync_in_power_mode_refuses(void **state)
{
    fx *f = *state;
    synced_log l = {0};
    open_j(f, GS_DURABLE_POWER, 0);
    gs_journal_on_sync(f->j, log_sync, &l);
    gs_journal_set_fault(fail_syncs);
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), GS_JOURNAL_SYNCING);
    await_syncs(f, &l, 1);
    assert_int_equal(l.status, -EIO);
    assert_int_equal(l.synced, 0);
    assert_int_equal(gs_journal_ready(f->j), -EIO);
    gs_journal_set_fault(NULL);
    await_accepting(f);
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), GS_JOURNAL_SYNCING);
    assert_int_equal(gs_journal_sync_now(f->j), 0);
    assert_int_equal(gs_journal_synced(f->j), gs_journal_seq(f->j));
    crash(f);
    open_j(f, GS_DURABLE_POWER, 0);
    assert_int_equal(f->t.value, 2);
}

/* A power-mode journal whose sync callback logs into l. */
static void open_power(fx *f, synced_log *l)
{
    open_j(f, GS_DURABLE_POWER, 0);
    gs_journal_on_sync(f->j, log_sync, l);
}

/* One power-mode turn that adds by: written, then synced as where asks; the sync's result. */
static int power_turn(fx *f, signed char by, gs_sync_where where)
{
    add(f, by);
    assert_int_equal(gs_journal_write(f->j), GS_JOURNAL_SYNCING);
    return gs_journal_sync(f->j, where);
}

/* A power-mode commit in two steps, synced in the loop: durable on return, no callback, no wake. */
static void an_inline_sync_makes_the_turn_durable_before_it_returns(void **state)
{
    fx *f = *state;
    synced_log l = {0};
    open_power(f, &l);
    add(f, 5);
    assert_int_equal(gs_journal_write(f->j), GS_JOURNAL_SYNCING);
    assert_true(gs_journal_needs_sync(f->j));
    assert_true(gs_journal_inline_ok(f->j));
    assert_int_equal(gs_journal_sync(f->j, GS_SYNC_INLINE), 0);
    assert_int_equal(gs_journal_synced(f->j), 1);
    assert_false(gs_journal_needs_sync(f->j));
    assert_false(gs_journal_holding(f->j));
    assert_int_equal(l.calls, 0);
    /* Nothing new: nothing to sync, and still durable. */
    assert_int_equal(gs_journal_write(f->j), 0);
    assert_int_equal(gs_journal_sync(f->j, GS_SYNC_INLINE), 0);
    crash(f);
    open_j(f, GS_DURABLE_POWER, 0);
    assert_int_equal(f->t.value, 5);
}

/* A journal with a sync running on the pool does not sync in the loop: its next sync goes there too. */
static void a_running_pool_sync_keeps_the_next_one_on_the_pool(void **state)
{
    fx *f = *state;
    synced_log l = {0};
    open_power(f, &l);
    assert_int_equal(power_turn(f, 1, GS_SYNC_POOL), GS_JOURNAL_SYNCING);
    /* The loop has not run: the first sync's end is not known yet. */
    assert_false(gs_journal_inline_ok(f->j));
    assert_int_equal(power_turn(f, 1, GS_SYNC_INLINE), GS_JOURNAL_SYNCING);
    /* Both syncs end (in either order): then the loop may sync again. */
    await_syncs(f, &l, 2);
    assert_int_equal(gs_journal_synced(f->j), 2);
    assert_true(gs_journal_inline_ok(f->j));
    assert_int_equal(l.status, 0);
}

/*
 * A slow sync in the loop sends the syncs to the pool; they come back once a
 * sync there is quick. The threshold is set, not timed: 0 makes every sync
 * slow, UINT64_MAX every one quick.
 */
static void a_slow_inline_sync_moves_the_syncs_to_the_pool_until_one_is_quick(void **state)
{
    fx *f = *state;
    synced_log l = {0};
    open_power(f, &l);
    gs_journal_set_slow_sync(0);
    /* The slow sync still made the turn durable. */
    assert_int_equal(power_turn(f, 1, GS_SYNC_INLINE), 0);
    assert_int_equal(gs_journal_synced(f->j), 1);
    assert_false(gs_journal_inline_ok(f->j));
    /* On the pool now, and a sync there that is slow too keeps them there. */
    assert_int_equal(power_turn(f, 1, GS_SYNC_INLINE), GS_JOURNAL_SYNCING);
    await_syncs(f, &l, 1);
    assert_int_equal(l.synced, 2);
    assert_false(gs_journal_inline_ok(f->j));
    /* A quick sync on the pool brings them back to the loop. */
    gs_journal_set_slow_sync(UINT64_MAX);
    assert_int_equal(power_turn(f, 1, GS_SYNC_INLINE), GS_JOURNAL_SYNCING);
    await_syncs(f, &l, 2);
    assert_int_equal(l.synced, 3);
    assert_true(gs_journal_inline_ok(f->j));
    assert_int_equal(power_turn(f, 1, GS_SYNC_INLINE), 0);
    assert_int_equal(l.calls, 2);
    crash(f);
    open_j(f, GS_DURABLE_POWER, 0);
    assert_int_equal(f->t.value, 4);
}

/* A failed fdatasync in the loop refuses at once, as one on the pool does when it ends. */
static void a_failed_inline_fdatasync_refuses(void **state)
{
    fx *f = *state;
    synced_log l = {0};
    open_power(f, &l);
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), GS_JOURNAL_SYNCING);
    await_syncs(f, &l, 1);
    gs_journal_set_fault(fail_syncs);
    assert_int_equal(power_turn(f, 1, GS_SYNC_INLINE), -EIO);
    assert_int_equal(gs_journal_ready(f->j), -EIO);
    assert_int_equal(gs_journal_synced(f->j), 1);
    assert_false(gs_journal_holding(f->j));
    assert_false(gs_journal_needs_sync(f->j));
    assert_int_equal(l.calls, 1);
    /* While refusing, appends are not kept and a commit answers the refusal. */
    add(f, 1);
    assert_int_equal(gs_journal_write(f->j), -EIO);
    assert_int_equal(gs_journal_sync(f->j, GS_SYNC_INLINE), -EIO);
    gs_journal_set_fault(NULL);
    await_accepting(f);
    assert_int_equal(power_turn(f, 1, GS_SYNC_INLINE), 0);
    crash(f);
    open_j(f, GS_DURABLE_POWER, 0);
    assert_int_equal(f->t.value, 4);
}

static void a_failed_final_save_fills_the_handover(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 0);
    add(f, 42);
    assert_int_equal(gs_journal_commit(f->j), 0);
    gs_journal_set_fault(fail_all);
    add(f, 1);
    assert_int_equal(gs_journal_close(f->j, 1), -EROFS);
    f->j = NULL;
    assert_true(f->handover.full);
    gs_journal_set_fault(NULL);
    /* The next incarnation takes it, not the older files (which say 42). */
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_false(f->handover.full);
    assert_int_equal(f->t.value, 43);
    assert_int_equal(f->t.replayed, 0);
    crash(f);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 43);
}

static void a_start_up_snapshot_that_fails_refuses(void **state)
{
    fx *f = *state;
    gs_journal_set_fault(fail_all);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(gs_journal_ready(f->j), -EROFS);
    gs_journal_set_fault(NULL);
    await_accepting(f);
}

static void a_background_snapshot_compacts_the_journal(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 4096);
    /* 9 bytes a record: past 4096 after 456 of them. */
    for (int i = 0; i < 500; i++) {
        add(f, 1);
        assert_int_equal(gs_journal_commit(f->j), 0);
    }
    assert_int_equal(gs_journal_generation(f->j), 2);
    await_snapshot(f);
    char path[128];
    journal_path(f, 1, path, sizeof path);
    assert_false(exists(path));
    crash(f);
    open_j(f, GS_DURABLE_CRASH, 4096);
    assert_int_equal(f->t.value, 500);
    assert_true(f->t.replayed < 500);
}

/*
 * A write fails while a background snapshot forked before it runs: that
 * snapshot's success must not end the refusal (it lacks the failed turn, and
 * the journal after it may be torn); the retry's snapshot does.
 */
static void a_snapshot_forked_before_a_failure_does_not_end_it(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 4096);
    int i = 0;
    while (!gs_journal_snapshotting(f->j) && i++ < 1000) {
        add(f, 1);
        assert_int_equal(gs_journal_commit(f->j), 0);
    }
    assert_true(gs_journal_snapshotting(f->j));
    gs_journal_set_fault(fail_writes);
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), -ENOSPC);
    for (int k = 0; k < 400 && gs_journal_snapshotting(f->j); k++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_false(gs_journal_snapshotting(f->j));
    assert_int_equal(gs_journal_ready(f->j), -ENOSPC);
    gs_journal_set_fault(NULL);
    await_accepting(f);
    int64_t value = f->t.value;
    add(f, 1);
    assert_int_equal(gs_journal_commit(f->j), 0);
    crash(f);
    open_j(f, GS_DURABLE_CRASH, 4096);
    assert_int_equal(f->t.value, value + 1);
}

/* A crash between a snapshot and the removal of the journal it covers: the stale journal goes. */
static void a_stale_journal_is_removed_not_replayed(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, 0);
    add(f, 4);
    assert_int_equal(gs_journal_commit(f->j), 0);
    crash(f);
    char one[128], keep[160];
    journal_path(f, 1, one, sizeof one);
    snprintf(keep, sizeof keep, "%s/keep", f->dir);
    assert_int_equal(link(one, keep), 0);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 4);
    await_snapshot(f);
    crash(f);
    assert_int_equal(rename(keep, one), 0);
    open_j(f, GS_DURABLE_CRASH, 0);
    assert_int_equal(f->t.value, 4);
    assert_int_equal(f->t.replayed, 0);
    assert_false(exists(one));
}

static void a_terminate_mode_writes_no_journal(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_TERMINATE, 0);
    add(f, 2);
    assert_false(gs_journal_holding(f->j));
    assert_int_equal(gs_journal_commit(f->j), 0);
    assert_int_equal(gs_journal_close(f->j, 1), 0);
    f->j = NULL;
    open_j(f, GS_DURABLE_TERMINATE, 0);
    assert_int_equal(f->t.value, 2);
    char path[128];
    journal_path(f, 1, path, sizeof path);
    assert_false(exists(path));
}

static double seconds_since(const struct timespec *a)
{
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a->tv_sec) + (double)(b.tv_nsec - a->tv_nsec) / 1e9;
}

/* The figure the issue asks for: printed, never asserted (machines are noisy). */
static void replaying_a_million_records(void **state)
{
    fx *f = *state;
    open_j(f, GS_DURABLE_CRASH, UINT64_MAX);
    for (int i = 0; i < 1000000; i++) {
        add(f, 1);
        if (i % 1000 == 999)
            assert_int_equal(gs_journal_commit(f->j), 0);
    }
    crash(f);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    open_j(f, GS_DURABLE_TERMINATE, 0);
    double s = seconds_since(&t0);
    assert_int_equal(f->t.replayed, 1000000);
    printf("replayed 1,000,000 records (9 MB) in %.3f s\n", s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(the_file_and_record_format, setup, teardown),
        cmocka_unit_test_setup_teardown(a_crash_replays_every_committed_record, setup, teardown),
        cmocka_unit_test_setup_teardown(a_crash_during_the_start_up_snapshot_loses_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(a_kill_after_a_clean_stop_and_a_start_loses_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(a_torn_tail_is_cut_off, setup, teardown),
        cmocka_unit_test_setup_teardown(a_journal_that_cannot_be_mapped_is_read, setup, teardown),
        cmocka_unit_test_setup_teardown(a_foreign_journal_is_moved_aside_and_not_replayed, setup, teardown),
        cmocka_unit_test_setup_teardown(a_journal_without_its_generation_before_it_is_foreign, setup, teardown),
        cmocka_unit_test_setup_teardown(a_failed_write_refuses_until_a_snapshot_succeeds, setup, teardown),
        cmocka_unit_test_setup_teardown(power_mode_syncs_in_the_background_and_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(a_failed_fdatasync_in_power_mode_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(an_inline_sync_makes_the_turn_durable_before_it_returns, setup, teardown),
        cmocka_unit_test_setup_teardown(a_running_pool_sync_keeps_the_next_one_on_the_pool, setup, teardown),
        cmocka_unit_test_setup_teardown(a_slow_inline_sync_moves_the_syncs_to_the_pool_until_one_is_quick, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_failed_inline_fdatasync_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(a_failed_final_save_fills_the_handover, setup, teardown),
        cmocka_unit_test_setup_teardown(a_start_up_snapshot_that_fails_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(a_background_snapshot_compacts_the_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(a_snapshot_forked_before_a_failure_does_not_end_it, setup, teardown),
        cmocka_unit_test_setup_teardown(a_stale_journal_is_removed_not_replayed, setup, teardown),
        cmocka_unit_test_setup_teardown(a_terminate_mode_writes_no_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(replaying_a_million_records, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
