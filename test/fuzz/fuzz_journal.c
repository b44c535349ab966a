/*
 * Fuzz target: journal recovery (genserver/journal_recover.c), the records after a
 * journal's header as found on disk after any crash. Each input becomes the body of
 * journal 1 beside a valid snapshot 1 of the same lineage; recovery replays it into
 * a toy server whose state is a sum. The first byte chooses whether the harness fixes
 * every record's CRC first, so the fuzzer also reaches what lies behind them (lengths,
 * the replay of odd payloads). Recovery must never read past the file, and must leave
 * the file cut at the end of the last whole record. Terminate mode, so recovery writes
 * no snapshot of its own: the directory is emptied after every input.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cnode/buf.h"
#include "cnode/log.h"
#include "genserver/journal.h"
#include "genserver/statefile.h"

#define NAME "toy"
#define SCHEMA 7
#define LINEAGE 0x1122334455667788ull

static char dir[64];
static uv_loop_t loop;
static int64_t sum;

static int toy_save(void *data, cn_buf *out)
{
    (void)data;
    return cn_buf_put_u64(out, (uint64_t)sum);
}

static int toy_load(void *data, const char *image, size_t len, int legacy)
{
    (void)data;
    (void)legacy;
    if (len != 8)
        abort(); /* the snapshot is the harness's own, always 8 bytes */
    sum = (int64_t)cn_get_u64(image);
    return 0;
}

static int toy_replay(void *data, const char *rec, size_t len)
{
    (void)data;
    if (len == 0 || len > GS_JOURNAL_RECORD_MAX)
        abort(); /* recovery hands over only whole records of a valid length */
    for (size_t i = 0; i < len; i++)
        sum += (signed char)rec[i];
    return len > 4 ? -1 : 0;
}

static const gs_journal_ops ops = {.schema = SCHEMA, .save = toy_save, .load = toy_load, .replay = toy_replay};

/* Empties the directory; keep_snapshot spares the snapshot, written once (it is synced: slow). */
static void remove_dir(int keep_snapshot)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (keep_snapshot && strcmp(e->d_name, NAME ".state") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

static void remove_all(void)
{
    remove_dir(0);
    rmdir(dir);
}

static void put_u64(unsigned char *d, uint64_t v)
{
    cn_set_u32(d, (uint32_t)(v >> 32));
    cn_set_u32(d + 4, (uint32_t)v);
}

static void write_snapshot(void);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cn_log_threshold = CN_LOG_NONE;
    snprintf(dir, sizeof dir, "/tmp/fuzz_journal_XXXXXX");
    if (mkdtemp(dir) == NULL || uv_loop_init(&loop) != 0)
        abort();
    atexit(remove_all);
    write_snapshot();
    return 0;
}

static void write_snapshot(void)
{
    unsigned char p[24];
    put_u64(p, LINEAGE);
    put_u64(p + 8, 1);
    put_u64(p + 16, 0);
    if (gs_state_save(dir, NAME, SCHEMA, p, sizeof p) != 0)
        abort();
}

/* Patches the CRC of every record that fits, as a writer would have made it. */
static void fix_crcs(unsigned char *b, size_t len)
{
    size_t off = 0;
    while (len - off >= 8) {
        uint32_t n = cn_get_u32(b + off);
        if (n == 0 || n > GS_JOURNAL_RECORD_MAX || len - off - 8 < n)
            return;
        uLong c = crc32(crc32(0L, Z_NULL, 0), b + off, 4);
        cn_set_u32(b + off + 4, (uint32_t)crc32_z(c, b + off + 8, n));
        off += 8 + n;
    }
}

static void write_journal(const uint8_t *body, size_t len, char *path, size_t size)
{
    unsigned char h[GS_JOURNAL_HEADER_LEN] = {0};
    memcpy(h, GS_JOURNAL_MAGIC, 4);
    h[5] = GS_JOURNAL_FORMAT;
    h[7] = SCHEMA;
    put_u64(h + 8, LINEAGE);
    put_u64(h + 16, 1);
    cn_set_u32(h + 32, (uint32_t)crc32(0L, h, 32));
    snprintf(path, size, "%s/%s.journal.%016x", dir, NAME, 1);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(h, 1, sizeof h, f) != sizeof h || (len && fwrite(body, 1, len, f) != len) ||
        fclose(f) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned char *body = malloc(size);
    memcpy(body, data + 1, size - 1);
    if (data[0] & 1)
        fix_crcs(body, size - 1);
    remove_dir(1);
    char path[256];
    write_journal(body, size - 1, path, sizeof path);
    gs_journal_config c = {.dir = dir, .name = NAME, .mode = GS_DURABLE_TERMINATE};
    gs_journal *j;
    if (gs_journal_open(&loop, &c, &ops, NULL, &j) != 0)
        abort();
    gs_journal_close(j, 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    /* What is left is the header and whole records, never more than was written. */
    struct stat st;
    if (stat(path, &st) != 0 || st.st_size < GS_JOURNAL_HEADER_LEN ||
        (size_t)st.st_size > GS_JOURNAL_HEADER_LEN + size - 1)
        abort();
    free(body);
    return 0;
}
