/*
 * Fuzz target: the state-file reader and the rate limiter's image loader behind it.
 * The input is a state file as found on disk. Its first byte chooses whether the
 * harness fixes the file's checksum and the image's checksum, so that the fuzzer
 * also reaches what lies behind them (XXH3 cannot be guessed). A loaded image is
 * saved again and the result must load back. Files are written to a private
 * temporary directory, emptied after every input (the reader moves corrupt files
 * aside instead of deleting them).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cnode/buf.h"
#include "cnode/log.h"
#include "genserver/rl_table.h"
#include "genserver/statefile.h"

#define NAME "rate_limiter"
#define SCHEMA 1
#define HEADER 24

/* The reader under test, in one place: when it moves to genserver/statefile.h
 * with a new name, only this function (and the include above) changes. */
static int load_state(const char *dir, cn_buf *out)
{
    return gs_state_load(dir, NAME, SCHEMA, out);
}

static char dir[64];

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

static void remove_all(void)
{
    remove_dir();
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cn_log_threshold = CN_LOG_NONE;
    snprintf(dir, sizeof dir, "/tmp/fuzz_statefile_XXXXXX");
    if (mkdtemp(dir) == NULL)
        abort();
    atexit(remove_all);
    return 0;
}

static void write_file(const uint8_t *b, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s.state", dir, NAME);
    FILE *f = fopen(path, "wb");
    if (f == NULL || (len && fwrite(b, 1, len, f) != len) || fclose(f) != 0)
        abort();
}

/* An image that loaded is saved again; that must load into a fresh table. */
static void round_trip(rl_table *t)
{
    cn_buf img;
    cn_buf_init(&img);
    if (rl_save(t, 1000, 2000000, &img) != 0)
        abort();
    rl_table *u = rl_table_new(5, 60000);
    if (u == NULL || rl_load(u, img.data, img.len, 1000, 2000000) != 0)
        abort();
    rl_table_free(u);
    cn_buf_free(&img);
}

static void load_image(cn_buf *payload, int fix)
{
    if (fix && payload->len >= 8) {
        uint64_t h = XXH3_64bits(payload->data, payload->len - 8);
        for (int i = 0; i < 8; i++)
            payload->data[payload->len - 8 + i] = (char)(h >> (56 - 8 * i));
    }
    rl_table *t = rl_table_new(5, 60000);
    if (t == NULL)
        abort();
    if (rl_load(t, payload->data, payload->len, 1000, 2000000) == 0)
        round_trip(t);
    rl_table_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    data++;
    size--;
    uint8_t *file = malloc(size ? size : 1);
    if (file == NULL)
        return 0;
    memcpy(file, data, size);
    if ((flags & 1) && size >= HEADER) {
        /* The checksum covers the first 16 bytes and the payload. */
        XXH3_state_t st;
        XXH3_64bits_reset(&st);
        XXH3_64bits_update(&st, file, 16);
        XXH3_64bits_update(&st, file + HEADER, size - HEADER);
        uint64_t h = XXH3_64bits_digest(&st);
        for (int i = 0; i < 8; i++)
            file[16 + i] = (uint8_t)(h >> (56 - 8 * i));
    }
    write_file(file, size);
    free(file);
    cn_buf out;
    cn_buf_init(&out);
    if (load_state(dir, &out) == 0)
        load_image(&out, flags & 2);
    cn_buf_free(&out);
    remove_dir();
    return 0;
}
