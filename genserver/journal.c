/*
 * The journal (genserver/journal.h): the record format, group commit, the
 * refusing state when the disk says no, and the snapshots that compact it.
 * Recovery (reading the chain of journals back) is in journal_recover.c; the
 * two share journal_int.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/metrics.h"
#include "cnode/mem.h"
#include "genserver/journal_int.h"
#include "genserver/statefile.h"

/* How often a refusing journal tries a snapshot, and a running child is looked at. */
#define RETRY_MS 1000
#define CHILD_POLL_MS 10
/* A journal's switches between loop and pool logged at info level at most this often. */
#define SWITCH_LOG_MS 60000

static gs_journal_fault_fn fault_fn;
static uint64_t slow_sync_ns = GS_JOURNAL_SLOW_SYNC_NS;

void gs_journal_set_fault(gs_journal_fault_fn fn) { fault_fn = fn; }
void gs_journal_set_slow_sync(uint64_t ns) { slow_sync_ns = ns; }

int gs__journal_fault(const char *op)
{
    return fault_fn ? fault_fn(op) : 0;
}

int gs_durability_parse(const char *text, gs_durability *out)
{
    static const char *names[] = {"terminate", "crash", "power"};
    for (int i = 0; i < 3; i++) {
        if (text != NULL && strcmp(text, names[i]) == 0) {
            *out = (gs_durability)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *gs_durability_name(gs_durability d)
{
    return d == GS_DURABLE_TERMINATE ? "terminate" : d == GS_DURABLE_CRASH ? "crash" : "power";
}

void gs_handover_free(gs_handover *h)
{
    cn_buf_free(&h->image);
    h->full = 0;
}

uint32_t gs__journal_crc(const void *len4, const void *p, size_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, len4, 4);
    if (n > 0)
        c = crc32_z(c, p, n);
    return (uint32_t)c;
}

void gs__journal_header(unsigned char *h, uint16_t schema, uint64_t lineage, uint64_t gen)
{
    memset(h, 0, GS_JOURNAL_HEADER_LEN);
    memcpy(h, GS_JOURNAL_MAGIC, 4);
    h[4] = GS_JOURNAL_FORMAT >> 8;
    h[5] = GS_JOURNAL_FORMAT & 0xff;
    h[6] = (unsigned char)(schema >> 8);
    h[7] = (unsigned char)schema;
    cn_set_u32(h + 8, (uint32_t)(lineage >> 32));
    cn_set_u32(h + 12, (uint32_t)lineage);
    cn_set_u32(h + 16, (uint32_t)(gen >> 32));
    cn_set_u32(h + 20, (uint32_t)gen);
    cn_set_u32(h + 32, (uint32_t)crc32(crc32(0L, Z_NULL, 0), h, 32));
}

int gs__journal_path(const gs_journal *j, uint64_t gen, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s/%s.journal.%016llx", j->dir, j->name, (unsigned long long)gen);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Writes all of p at offset off, through the fault seam. Returns 0 or -errno; *done says how much went. */
static int pwrite_all(int fd, const char *p, size_t n, off_t off, size_t *done)
{
    *done = 0;
    int rc = gs__journal_fault("write");
    if (rc < 0)
        return rc;
    while (*done < n) {
        ssize_t w = pwrite(fd, p + *done, n - *done, off + (off_t)*done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        *done += (size_t)w;
    }
    return 0;
}

static int sync_data(int fd)
{
    int rc = gs__journal_fault("fdatasync");
    if (rc < 0)
        return rc;
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 && errno != EINVAL ? -errno : 0;
    close(fd);
    return rc;
}

/* ---- Appending and committing ---- */

int gs_journal_ready(const gs_journal *j)
{
    return j->failed;
}

int gs_journal_holding(const gs_journal *j)
{
    return (j->pending.len > 0 || j->written_seq > j->synced_seq) && j->failed == 0;
}

uint64_t gs_journal_seq(const gs_journal *j) { return j->written_seq; }
uint64_t gs_journal_synced(const gs_journal *j) { return j->synced_seq; }

void gs_journal_on_sync(gs_journal *j, gs_journal_sync_cb cb, void *arg)
{
    j->sync_cb = cb;
    j->sync_arg = arg;
}

/*
 * While the journal refuses, nothing is kept: the snapshot that ends the
 * refusal is taken from the state in memory, which has every change.
 */
void gs_journal_append(gs_journal *j, const void *rec, size_t len)
{
    if (j->mode == GS_DURABLE_TERMINATE || j->failed != 0)
        return;
    cn_buf_reserve(&j->pending, GS_JOURNAL_RECORD_HEADER + len);
    unsigned char *h = (unsigned char *)j->pending.data + j->pending.len;
    cn_set_u32(h, (uint32_t)len);
    cn_set_u32(h + 4, gs__journal_crc(h, rec, len));
    memcpy(h + GS_JOURNAL_RECORD_HEADER, rec, len);
    j->pending.len += GS_JOURNAL_RECORD_HEADER + len;
}

static void start_retry(gs_journal *j);

/* The disk said no: refuse from now on and retry. Logged once per change of state. */
void gs__journal_refuse(gs_journal *j, int rc, const char *what)
{
    if (j->failed != 0)
        return;
    j->failed = rc;
    CN_ERROR("journal", "%s/%s: %s failed: %s; state changes are refused ({error, not_durable}) until a "
             "snapshot succeeds (retried every %d ms)", j->dir, j->name, what, cn_strerror(rc), RETRY_MS);
    start_retry(j);
}

static void accept_again(gs_journal *j)
{
    if (j->failed == 0)
        return;
    j->failed = 0;
    uv_timer_stop(j->retry);
    CN_WARN("journal", "%s/%s: the disk accepts writes again; state changes are accepted", j->dir, j->name);
}

static void maybe_snapshot(gs_journal *j);
static void kick_sync(gs_journal *j);

static void notify(gs_journal *j, int status)
{
    if (j->sync_cb != NULL)
        j->sync_cb(j->sync_arg, j->synced_seq, status);
}

/* On the thread pool: the sync, on its own descriptor (the loop may move to a new journal meanwhile). */
static void sync_work(uv_work_t *w)
{
    gs__sync *y = w->data;
    uint64_t t0 = uv_hrtime();
    y->rc = sync_data(y->fd);
    y->took = uv_hrtime() - t0;
    close(y->fd);
}

/*
 * A journal's syncs move between the loop and the pool (on_pool). A disk whose
 * latency hovers around the threshold would switch often: only the first
 * switch in SWITCH_LOG_MS is logged at info level.
 */
static void switch_sync(gs_journal *j, int on_pool, uint64_t took)
{
    j->on_pool = on_pool;
    uint64_t now = uv_now(j->loop);
    cn_log_level level = now >= j->next_switch_log ? CN_LOG_INFO : CN_LOG_DEBUG;
    if (level == CN_LOG_INFO)
        j->next_switch_log = now + SWITCH_LOG_MS;
    if (on_pool)
        cn_log(level, "journal", "%s/%s: an fdatasync in the loop took %.1f ms (%.1f ms or more is slow): "
               "syncs run on the thread pool until one there is quicker", j->dir, j->name, took / 1e6,
               slow_sync_ns / 1e6);
    else
        cn_log(level, "journal", "%s/%s: an fdatasync took %.1f ms: syncs run in the loop again", j->dir,
               j->name, took / 1e6);
}

static void free_journal(gs_journal *j);

/*
 * Back in the loop: an fdatasync makes durable whatever was written before it
 * started, so syncs may end in any order; the journal refuses if one failed.
 */
static void sync_done(uv_work_t *w, int status)
{
    (void)status;
    gs__sync *y = w->data;
    gs_journal *j = y->j;
    y->busy = 0;
    j->syncs_busy--;
    /* From queueing to back in the loop: what a power-mode reply waits for this sync. */
    cn_metrics_observe(&cn_metrics_journal_sync, uv_hrtime() - y->started);
    if (j->closing) {
        if (j->syncs_busy == 0)
            free_journal(j);
        return;
    }
    /* After a failed fdatasync the kernel may have dropped the pages: only a snapshot is trusted. */
    if (y->rc < 0)
        gs__journal_refuse(j, y->rc, "fdatasync of the journal");
    else if (y->target > j->synced_seq)
        j->synced_seq = y->target;
    if (y->rc == 0 && j->on_pool && y->took < slow_sync_ns)
        switch_sync(j, 0, y->took);
    notify(j, j->failed);
    kick_sync(j);
}

/* Starts a sync for what no running one covers, while a slot is free. */
static void kick_sync(gs_journal *j)
{
    if (j->failed != 0 || j->sync_started >= j->written_seq || j->syncs_busy == GS__SYNCS)
        return;
    gs__sync *y = j->syncs;
    while (y->busy)
        y++;
    y->fd = dup(j->fd);
    if (y->fd < 0) {
        (void)gs_journal_sync_now(j);
        notify(j, j->failed);
        return;
    }
    y->busy = 1;
    y->j = j;
    y->target = j->sync_started = j->written_seq;
    y->work.data = y;
    y->started = uv_hrtime();
    j->syncs_busy++;
    uv_queue_work(j->loop, &y->work, sync_work, sync_done);
}

/* An fdatasync in the loop; *took says how long it took. 0, or the error (the journal refuses from now on). */
static int sync_in_loop(gs_journal *j, uint64_t *took)
{
    uint64_t t0 = uv_hrtime();
    int rc = sync_data(j->fd);
    *took = uv_hrtime() - t0;
    cn_metrics_observe(&cn_metrics_journal_sync, *took);
    if (rc < 0) {
        gs__journal_refuse(j, rc, "fdatasync of the journal");
        return rc;
    }
    j->synced_seq = j->sync_started = j->written_seq;
    return 0;
}

int gs_journal_sync_now(gs_journal *j)
{
    if (j->failed != 0 || j->synced_seq == j->written_seq)
        return j->failed;
    uint64_t took;
    return sync_in_loop(j, &took);
}

/* What gs_journal_commit returns: the refusal, 0 when all written is durable, else GS_JOURNAL_SYNCING. */
static int commit_status(const gs_journal *j)
{
    return j->failed != 0 ? j->failed : j->synced_seq == j->written_seq ? 0 : GS_JOURNAL_SYNCING;
}

int gs_journal_needs_sync(const gs_journal *j)
{
    return j->mode == GS_DURABLE_POWER && j->failed == 0 && j->sync_started < j->written_seq;
}

int gs_journal_inline_ok(const gs_journal *j)
{
    return j->syncs_busy == 0 && !j->on_pool;
}

/*
 * Inline, the sync replaces the two wakes a pool sync costs (the worker's, then
 * the loop's) with a wait in the loop; with no sync of the journal running,
 * everything written before is durable already, so this one covers it all.
 */
int gs_journal_sync(gs_journal *j, gs_sync_where where)
{
    if (!gs_journal_needs_sync(j))
        return commit_status(j);
    if (where == GS_SYNC_POOL || !gs_journal_inline_ok(j)) {
        kick_sync(j);
        return commit_status(j);
    }
    uint64_t took;
    int rc = sync_in_loop(j, &took);
    if (rc == 0 && took >= slow_sync_ns)
        switch_sync(j, 1, took);
    return rc;
}

int gs_journal_commit(gs_journal *j)
{
    int rc = gs_journal_write(j);
    return rc == GS_JOURNAL_SYNCING ? gs_journal_sync(j, GS_SYNC_POOL) : rc;
}

int gs_journal_write(gs_journal *j)
{
    if (j->pending.len == 0 || j->mode == GS_DURABLE_TERMINATE)
        return commit_status(j);
    if (j->failed != 0)
        return j->failed;
    size_t done;
    int rc = pwrite_all(j->fd, j->pending.data, j->pending.len, (off_t)j->file_len, &done);
    /* A partial write leaves a torn record: recovery truncates it, and so does the next snapshot. */
    j->file_len += done;
    j->since_snap += done;
    cn_buf_reset(&j->pending);
    if (rc < 0) {
        gs__journal_refuse(j, rc, "writing the journal");
        return rc;
    }
    cn_buf_shrink(&j->pending, CN_BUF_KEEP);
    j->written_seq++;
    if (j->mode == GS_DURABLE_CRASH)
        j->synced_seq = j->sync_started = j->written_seq;
    /* In power mode a snapshot starting here syncs the old journal in the loop first: nothing left to start. */
    maybe_snapshot(j);
    return commit_status(j);
}

/* ---- Snapshots ---- */

/* The snapshot payload: [lineage][generation][image]. 0 or the save's error. */
static int build_snapshot(gs_journal *j, uint64_t gen, cn_buf *out)
{
    cn_buf_put_u64(out, j->lineage);
    cn_buf_put_u64(out, gen);
    return j->ops->save(j->data, out);
}

/* Writes snapshot gen from the state as it is now; 0 or a negative error (nothing logged). */
int gs__journal_write_snapshot(gs_journal *j, uint64_t gen)
{
    cn_buf b;
    cn_buf_init(&b);
    int rc = build_snapshot(j, gen, &b);
    if (rc == 0)
        rc = gs__journal_fault("snapshot");
    if (rc == 0)
        rc = gs_state_save(j->dir, j->name, j->ops->schema, b.data, b.len);
    cn_buf_free(&b);
    return rc;
}

/* Removes the journals older than gen: snapshot gen covers them. Best effort. */
static void remove_older(gs_journal *j, uint64_t gen)
{
    for (uint64_t g = j->oldest_gen; g < gen; g++) {
        char path[4096];
        if (gs__journal_path(j, g, path, sizeof path) == 0 && unlink(path) < 0 && errno != ENOENT)
            CN_WARN("journal", "cannot remove %s: %s", path, strerror(errno));
    }
    if (gen > j->oldest_gen)
        j->oldest_gen = gen;
}

/*
 * Creates journal gen with its header; in power mode the file and its
 * directory entry are synced before any record in it may be acknowledged.
 * Returns the fd or a negative error; nothing is left behind on error.
 */
static int create_journal(gs_journal *j, uint64_t gen)
{
    char path[4096];
    int rc = gs__journal_path(j, gen, path, sizeof path);
    if (rc < 0)
        return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    unsigned char h[GS_JOURNAL_HEADER_LEN];
    gs__journal_header(h, j->ops->schema, j->lineage, gen);
    size_t done;
    rc = pwrite_all(fd, (const char *)h, sizeof h, 0, &done);
    if (rc == 0 && j->mode == GS_DURABLE_POWER && (rc = sync_data(fd)) == 0)
        rc = sync_dir(j->dir);
    if (rc < 0) {
        close(fd);
        unlink(path);
        return rc;
    }
    return fd;
}

static void use_journal(gs_journal *j, int fd, uint64_t gen)
{
    if (j->fd >= 0)
        close(j->fd);
    j->fd = fd;
    j->gen = gen;
    j->file_len = GS_JOURNAL_HEADER_LEN;
    j->since_snap = 0;
}

int gs__journal_continue(gs_journal *j, uint64_t gen)
{
    int fd = create_journal(j, gen);
    if (fd < 0)
        return fd;
    use_journal(j, fd, gen);
    j->next_gen = gen + 1;
    return 0;
}

/*
 * A snapshot in the loop: the journals it covers go, and (unless the server is
 * stopping) a fresh journal starts for it. Used at start-up and in terminate,
 * where the loop is not serving anyway. 0 or a negative error, logged by the caller.
 */
int gs__journal_snapshot_now(gs_journal *j, int new_journal)
{
    uint64_t gen = j->next_gen;
    int rc = gs__journal_write_snapshot(j, gen);
    if (rc < 0)
        return rc;
    j->next_gen = gen + 1;
    remove_older(j, gen);
    cn_buf_reset(&j->pending);
    if (!new_journal) {
        remove_older(j, gen + 1);
        return 0;
    }
    int fd = create_journal(j, gen);
    if (fd < 0)
        return fd;
    use_journal(j, fd, gen);
    return 0;
}

static void child_poll(uv_timer_t *t);

/*
 * In the child: the snapshot from the copy-on-write image, then _exit, touching
 * nothing of the parent's. It closes every inherited descriptor first: a child
 * holding the node's sockets would keep its connections and its port open
 * after the node itself died. And it dies with the node: an orphan finishing
 * its snapshot after the next incarnation had written a newer one would put an
 * older state back under the file's name.
 */
static void run_child(gs_journal *j, uint64_t gen, pid_t parent)
{
    close_range(3, ~0u, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    int rc = gs__journal_write_snapshot(j, gen);
    if (rc < 0)
        CN_ERROR("journal", "%s/%s: snapshot %llu failed: %s", j->dir, j->name, (unsigned long long)gen,
                 cn_strerror(rc));
    _exit(rc < 0 ? 1 : 0);
}

/*
 * Starts a background snapshot: a new journal for the generation, then fork.
 * The records that were pending are in the child's image, so they are dropped
 * (they were either written already or are what a refusing journal retries).
 * 0 when the child runs; else a negative error (a journal that cannot be
 * created also makes the journal refuse).
 */
int gs__journal_start_snapshot(gs_journal *j)
{
    uint64_t gen = j->next_gen;
    int rc;
    /* What the old journal holds must be durable before the syncs move to the new one. */
    if (j->mode == GS_DURABLE_POWER && j->fd >= 0 && j->failed == 0 && (rc = gs_journal_sync_now(j)) < 0)
        return rc;
    int fd = create_journal(j, gen);
    if (fd < 0) {
        gs__journal_refuse(j, fd, "creating a journal");
        return fd;
    }
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) {
        rc = -errno;
        char path[4096];
        close(fd);
        if (gs__journal_path(j, gen, path, sizeof path) == 0)
            unlink(path);
        CN_ERROR("journal", "%s/%s: cannot fork for a snapshot: %s", j->dir, j->name, cn_strerror(rc));
        return rc;
    }
    if (pid == 0)
        run_child(j, gen, parent);
    j->next_gen = gen + 1;
    use_journal(j, fd, gen);
    cn_buf_reset(&j->pending);
    j->child = pid;
    j->child_gen = gen;
    j->child_failed = j->failed != 0;
    uv_timer_start(j->poll, child_poll, CHILD_POLL_MS, CHILD_POLL_MS);
    return 0;
}

static void child_done(gs_journal *j, int ok)
{
    uv_timer_stop(j->poll);
    uint64_t gen = j->child_gen;
    j->child = 0;
    if (!ok) {
        /* The journals stay: recovery replays the chain. A refusing journal retries on its timer. */
        if (j->failed == 0)
            CN_WARN("journal", "%s/%s: background snapshot %llu failed; the journals it would replace stay",
                    j->dir, j->name, (unsigned long long)gen);
        j->since_snap = 0;
        return;
    }
    CN_DEBUG("journal", "%s/%s: snapshot %llu written", j->dir, j->name, (unsigned long long)gen);
    remove_older(j, gen);
    /*
     * Only a snapshot forked while refusing ends the refusal: one forked before
     * a write failed does not hold that turn's change, and the journal after it
     * may hold a torn record that later records must not follow.
     */
    if (j->child_failed)
        accept_again(j);
}

static void child_poll(uv_timer_t *t)
{
    gs_journal *j = t->data;
    int status;
    pid_t r = waitpid(j->child, &status, WNOHANG);
    if (r == 0)
        return;
    child_done(j, r == j->child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void maybe_snapshot(gs_journal *j)
{
    if (j->child == 0 && j->since_snap >= j->snapshot_bytes)
        (void)gs__journal_start_snapshot(j);
}

static void retry(uv_timer_t *t)
{
    gs_journal *j = t->data;
    if (j->failed != 0 && j->child == 0)
        (void)gs__journal_start_snapshot(j);
}

static void start_retry(gs_journal *j)
{
    uv_timer_start(j->retry, retry, RETRY_MS, RETRY_MS);
}

/* ---- Life ---- */

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

gs_journal *gs__journal_new(uv_loop_t *loop, const gs_journal_config *cfg, const gs_journal_ops *ops, void *data)
{
    gs_journal *j = cn_calloc(1, sizeof *j);
    j->dir = cn_strdup(cfg->dir);
    j->name = cn_strdup(cfg->name);
    j->mode = cfg->mode;
    j->snapshot_bytes = cfg->snapshot_bytes ? cfg->snapshot_bytes : GS_JOURNAL_SNAPSHOT_BYTES;
    j->handover = cfg->handover;
    j->ops = ops;
    j->data = data;
    j->fd = -1;
    j->loop = loop;
    cn_buf_init(&j->pending);
    j->retry = cn_malloc(sizeof *j->retry);
    j->poll = cn_malloc(sizeof *j->poll);
    uv_timer_init(loop, j->retry);
    uv_timer_init(loop, j->poll);
    j->retry->data = j->poll->data = j;
    return j;
}

/* The state goes to the handover, for the next incarnation. */
static int hand_over(gs_journal *j, int err)
{
    if (j->handover == NULL)
        return err;
    cn_buf_reset(&j->handover->image);
    if (j->ops->save(j->data, &j->handover->image) == 0) {
        j->handover->full = 1;
        CN_WARN("journal", "%s/%s: the state that could not be saved is kept for the next start", j->dir,
                j->name);
    }
    return err;
}

static void kill_child(gs_journal *j)
{
    if (j->child == 0)
        return;
    kill(j->child, SIGKILL);
    while (waitpid(j->child, NULL, 0) < 0 && errno == EINTR)
        ;
    j->child = 0;
}

int gs_journal_close(gs_journal *j, int save)
{
    kill_child(j);
    int rc = 0;
    if (save) {
        (void)gs_journal_commit(j);
        rc = gs__journal_snapshot_now(j, 0);
        if (rc < 0) {
            CN_ERROR("journal", "%s/%s: the final snapshot failed: %s", j->dir, j->name, cn_strerror(rc));
            hand_over(j, rc);
        }
    } else if ((rc = gs_journal_commit(j)) < 0 || (rc = gs_journal_sync_now(j)) < 0) {
        hand_over(j, rc);
    }
    if (j->fd >= 0)
        close(j->fd);
    j->fd = -1;
    j->sync_cb = NULL;
    uv_close((uv_handle_t *)j->retry, timer_closed);
    uv_close((uv_handle_t *)j->poll, timer_closed);
    /* A sync still running holds j: the last sync_done frees it. */
    if (j->syncs_busy > 0)
        j->closing = 1;
    else
        free_journal(j);
    return rc;
}

static void free_journal(gs_journal *j)
{
    cn_buf_free(&j->pending);
    free(j->dir);
    free(j->name);
    free(j);
}

uint64_t gs_journal_generation(const gs_journal *j) { return j->gen; }
int gs_journal_snapshotting(const gs_journal *j) { return j->child != 0; }
