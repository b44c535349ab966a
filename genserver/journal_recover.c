/*
 * Recovery (genserver/journal.h): the snapshot or the handover, then the chain
 * of journals that belongs to the snapshot, torn tails truncated, journals
 * that do not belong moved aside; then, in crash and power modes, a snapshot
 * of what was recovered and a fresh journal.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "genserver/journal_int.h"
#include "genserver/statefile.h"

#define COMP "journal"
/* Journal files one server may have in its directory that recovery looks at. */
#define MAX_JOURNALS 1024

typedef struct snapshot {
    int found;          /* a snapshot with a lineage prefix */
    int legacy;         /* a file of the legacy schema, without prefix */
    uint64_t lineage, gen;
    uint64_t chain_next; /* the generation a journal continuing the chain takes */
    cn_buf payload;
} snapshot;

static uint64_t new_lineage(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    }
    return v ? v : 1;
}

static void read_snapshot(gs_journal *j, snapshot *s)
{
    memset(s, 0, sizeof *s);
    cn_buf_init(&s->payload);
    uint16_t lo = j->ops->legacy_schema ? j->ops->legacy_schema : j->ops->schema, schema;
    if (gs_state_load_schemas(j->dir, j->name, lo, j->ops->schema, &s->payload, &schema) < 0)
        return; /* missing (a fresh start) or set aside by statefile.c, logged there */
    if (schema != j->ops->schema) {
        s->legacy = 1;
        return;
    }
    if (s->payload.len < GS_JOURNAL_SNAP_PREFIX) {
        CN_WARN(COMP, "%s/%s.state: %zu bytes, too short for a snapshot; starting fresh", j->dir, j->name,
                s->payload.len);
        s->payload.len = 0;
        return;
    }
    s->found = 1;
    s->lineage = cn_get_u64(s->payload.data);
    s->gen = cn_get_u64(s->payload.data + 8);
}

/* "NAME.journal." followed by exactly 16 hex digits: 1 and the generation. */
static int parse_name(const gs_journal *j, const char *file, uint64_t *gen)
{
    size_t n = strlen(j->name);
    if (strncmp(file, j->name, n) != 0 || strncmp(file + n, ".journal.", 9) != 0)
        return 0;
    const char *hex = file + n + 9;
    if (strlen(hex) != 16 || strspn(hex, "0123456789abcdef") != 16)
        return 0;
    *gen = strtoull(hex, NULL, 16);
    return 1;
}

static int cmp_gen(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The generations of this server's journal files, ascending. */
static size_t list_journals(const gs_journal *j, uint64_t *gens, size_t max)
{
    DIR *d = opendir(j->dir);
    if (d == NULL)
        return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        if (parse_name(j, e->d_name, &gens[n]))
            n++;
    }
    closedir(d);
    qsort(gens, n, sizeof *gens, cmp_gen);
    return n;
}

/*
 * A journal file's bytes, mapped: a replay reads every byte once, and a read(2)
 * into the heap cost a copy and, worse in a virtual machine, a page fault for
 * each fresh page of the buffer (a third of a 34 MB replay). MAP_POPULATE maps
 * the page cache in one go. A file that cannot be mapped is read instead.
 */
typedef struct jfile {
    const char *data;
    size_t len;
    void *map;          /* the mapping, or NULL */
    cn_buf copy;        /* the bytes when not mapped */
} jfile;

/* Reads a whole file into b. 0 or -errno. */
static int read_file(int fd, size_t size, cn_buf *b)
{
    cn_buf_reserve(b, size);
    for (;;) {
        cn_buf_reserve(b, 65536);
        ssize_t r = read(fd, b->data + b->len, b->cap - b->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return 0;
        b->len += (size_t)r;
    }
}

static int open_bytes(int fd, jfile *f)
{
    memset(f, 0, sizeof *f);
    cn_buf_init(&f->copy);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    size_t size = (size_t)st.st_size;
    /* Some file systems cannot map a file (and the fault seam says "mmap"): then it is read. */
    void *m = size > 0 && gs__journal_fault("mmap") == 0
                  ? mmap(NULL, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0)
                  : MAP_FAILED;
    if (m != MAP_FAILED) {
        (void)madvise(m, size, MADV_SEQUENTIAL);
        f->map = m;
        f->data = m;
        f->len = size;
        return 0;
    }
    int rc = read_file(fd, size, &f->copy);
    f->data = f->copy.data;
    f->len = f->copy.len;
    return rc;
}

static void close_bytes(jfile *f)
{
    if (f->map != NULL)
        munmap(f->map, f->len);
    cn_buf_free(&f->copy);
}

/* Is the header a journal of this server's schema? Fills lineage and gen. */
static int header_ok(const gs_journal *j, const jfile *b, uint64_t *lineage, uint64_t *gen)
{
    const unsigned char *h = (const unsigned char *)b->data;
    if (b->len < GS_JOURNAL_HEADER_LEN || memcmp(h, GS_JOURNAL_MAGIC, 4) != 0)
        return 0;
    if (cn_get_u32(h + 32) != (uint32_t)crc32(crc32(0L, Z_NULL, 0), h, 32))
        return 0;
    if (cn_get_u16(h + 4) != GS_JOURNAL_FORMAT || cn_get_u16(h + 6) != j->ops->schema)
        return 0;
    *lineage = cn_get_u64(h + 8);
    *gen = cn_get_u64(h + 16);
    return 1;
}

/* Renames a journal that does not belong to NAME.journal.GEN.foreign-<UTC time>. */
static void move_aside(const char *path, const char *why)
{
    char aside[4200], stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(aside, sizeof aside, "%s.foreign-%s", path, stamp);
    for (int i = 1; access(aside, F_OK) == 0 && i < 1000; i++)
        snprintf(aside, sizeof aside, "%s.foreign-%s-%d", path, stamp, i);
    if (rename(path, aside) == 0)
        CN_WARN(COMP, "%s: %s; refused, moved to %s", path, why, aside);
    else
        CN_ERROR(COMP, "%s: %s; refused, and it cannot be moved aside: %s", path, why, strerror(errno));
}

/*
 * Replays the records of one journal (its header checked). A torn tail (an
 * incomplete record or a bad CRC) is cut off the file and logged. Counts the
 * records applied into *applied.
 */
static void replay_file(gs_journal *j, int fd, const char *path, const jfile *b, uint64_t *applied)
{
    size_t off = GS_JOURNAL_HEADER_LEN, skipped = 0;
    const char *why = NULL;
    while (off < b->len) {
        const char *p = b->data + off;
        if (b->len - off < GS_JOURNAL_RECORD_HEADER) {
            why = "an incomplete record header";
            break;
        }
        uint32_t n = cn_get_u32(p);
        if (n == 0 || n > GS_JOURNAL_RECORD_MAX || b->len - off - GS_JOURNAL_RECORD_HEADER < n) {
            why = n == 0 || n > GS_JOURNAL_RECORD_MAX ? "a bad record length" : "an incomplete record";
            break;
        }
        if (gs__journal_crc(p, p + GS_JOURNAL_RECORD_HEADER, n) != cn_get_u32(p + 4)) {
            why = "a record whose CRC fails";
            break;
        }
        if (j->ops->replay(j->data, p + GS_JOURNAL_RECORD_HEADER, n) < 0)
            skipped++;
        else
            (*applied)++;
        off += GS_JOURNAL_RECORD_HEADER + n;
    }
    if (skipped > 0)
        CN_WARN(COMP, "%s: %zu records could not be applied and were skipped", path, skipped);
    if (why == NULL)
        return;
    CN_WARN(COMP, "%s: torn tail: %zu bytes dropped at offset %zu (%s)", path, b->len - off, off, why);
    if (ftruncate(fd, (off_t)off) < 0)
        CN_ERROR(COMP, "%s: cannot truncate the torn tail: %s", path, strerror(errno));
}

/* What one journal file is to the snapshot. */
enum { J_CHAIN, J_STALE, J_FOREIGN };

static int classify(const gs_journal *j, const snapshot *s, const jfile *b, uint64_t named, uint64_t expect,
                    const char **why)
{
    uint64_t lineage, gen;
    if (!header_ok(j, b, &lineage, &gen) || gen != named) {
        *why = "not a journal of this server (bad header, or not the generation of its name)";
        return J_FOREIGN;
    }
    if (!s->found) {
        *why = "there is no snapshot it could follow";
        return J_FOREIGN;
    }
    if (lineage != s->lineage) {
        *why = "it belongs to another snapshot (another lineage)";
        return J_FOREIGN;
    }
    if (gen < s->gen)
        return J_STALE;
    if (gen != expect) {
        *why = "it does not follow the snapshot (a generation is missing)";
        return J_FOREIGN;
    }
    return J_CHAIN;
}

/* One file of the directory listing: replayed, removed or moved aside. */
static void recover_file(gs_journal *j, const snapshot *s, uint64_t gen, int replay, uint64_t *expect,
                         uint64_t *applied)
{
    char path[4096];
    if (gs__journal_path(j, gen, path, sizeof path) < 0)
        return;
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        CN_ERROR(COMP, "%s: cannot open: %s", path, strerror(errno));
        return;
    }
    jfile b;
    const char *why = "unreadable";
    int kind = open_bytes(fd, &b) < 0 ? J_FOREIGN : classify(j, s, &b, gen, *expect, &why);
    if (kind == J_CHAIN) {
        if (replay)
            replay_file(j, fd, path, &b, applied);
        (*expect)++;
    }
    close_bytes(&b);
    close(fd);
    if (kind == J_STALE) {
        CN_INFO(COMP, "%s: older than the snapshot, which covers it; removed", path);
        unlink(path);
    } else if (kind == J_FOREIGN) {
        move_aside(path, why);
    }
}

/* The server's state: the handover, or the snapshot and its journals. 1 when it was the handover. */
static int recover(gs_journal *j, snapshot *s)
{
    int from_handover = j->handover != NULL && j->handover->full;
    if (from_handover) {
        j->ops->load(j->data, j->handover->image.data, j->handover->image.len, 0);
        gs_handover_free(j->handover);
        CN_INFO(COMP, "%s/%s: took the state the previous incarnation could not save", j->dir, j->name);
    } else if (s->found || s->legacy) {
        size_t skip = s->found ? GS_JOURNAL_SNAP_PREFIX : 0;
        if (j->ops->load(j->data, s->payload.data + skip, s->payload.len - skip, s->legacy) < 0)
            CN_WARN(COMP, "%s/%s.state: the server could not take the snapshot", j->dir, j->name);
    }
    uint64_t *gens = cn_malloc(MAX_JOURNALS * sizeof *gens);
    size_t n = list_journals(j, gens, MAX_JOURNALS);
    uint64_t expect = s->gen, applied = 0;
    for (size_t i = 0; i < n; i++)
        recover_file(j, s, gens[i], !from_handover, &expect, &applied);
    free(gens);
    if (applied > 0)
        CN_INFO(COMP, "%s/%s: replayed %llu journal records", j->dir, j->name, (unsigned long long)applied);
    j->lineage = s->found ? s->lineage : new_lineage();
    j->oldest_gen = s->found ? s->gen : 1;
    j->next_gen = s->found && expect > s->gen ? expect : (s->found ? s->gen + 1 : 1);
    s->chain_next = expect;
    return from_handover;
}

/*
 * Where the new incarnation writes. When the files on disk already hold the
 * state (a snapshot of this lineage and its chain), the new journal continues
 * the chain: the snapshot's own generation when the chain is empty (nothing to
 * compact), else the next one, with a snapshot forked as later ones are.
 * Otherwise (a fresh start, a legacy file, a handover: state the disk does not
 * have) nothing may be acknowledged before a snapshot is durable, so it is
 * written here, in the loop, with a fresh journal.
 */
static void first_snapshot(gs_journal *j, const snapshot *s, int disk_has_it)
{
    if (disk_has_it && s->chain_next == s->gen) {
        int rc = gs__journal_continue(j, s->gen);
        if (rc < 0)
            gs__journal_refuse(j, rc, "creating a journal");
        return;
    }
    if (disk_has_it && gs__journal_start_snapshot(j) == 0)
        return;
    if (j->failed != 0)
        return;
    int rc = gs__journal_snapshot_now(j, 1);
    if (rc < 0)
        gs__journal_refuse(j, rc, "the start-up snapshot");
}

int gs_journal_open(uv_loop_t *loop, const gs_journal_config *cfg, const gs_journal_ops *ops, void *data,
                    gs_journal **out)
{
    if (loop == NULL || cfg == NULL || cfg->dir == NULL || cfg->name == NULL || ops == NULL || ops->save == NULL ||
        ops->load == NULL || ops->replay == NULL || out == NULL)
        return -EINVAL;
    gs_journal *j = gs__journal_new(loop, cfg, ops, data);
    snapshot s;
    read_snapshot(j, &s);
    int from_handover = recover(j, &s);
    cn_buf_free(&s.payload);
    if (j->mode != GS_DURABLE_TERMINATE)
        first_snapshot(j, &s, s.found && !from_handover);
    *out = j;
    return 0;
}
