/*
 * Unit tests for genserver/statefile. Every test gets its own mkdtemp directory,
 * removed in teardown. Set TEST_LOG=1 to see the module's log lines.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "genserver/statefile.h"

#define NAME "counter"
#define MAX_ASIDE 64

typedef struct fixture {
    char dir[PATH_MAX];
    char path[PATH_MAX]; /* <dir>/counter.state */
} fixture;

/* ---- helpers ------------------------------------------------------------ */

/* out = dir/leaf; a path that does not fit fails the test rather than truncating. */
static void mkpath(char *out, const char *dir, const char *leaf)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, leaf);
    assert_true(n > 0 && n < PATH_MAX);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    const char *tmp = getenv("TMPDIR");
    mkpath(f->dir, tmp ? tmp : "/tmp", "test_statefile.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    mkpath(f->path, f->dir, NAME ".state");
    *state = f;
    return 0;
}

static int make_writable(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_D || type == FTW_DNR)
        chmod(p, st->st_mode | S_IRWXU);
    return 0;
}

static int remove_one(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(p);
}

static int teardown(void **state)
{
    fixture *f = *state;
    /* A test may have left a directory read-only; open it up before removing. */
    nftw(f->dir, make_writable, 16, FTW_PHYS);
    int rc = nftw(f->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long n = ftell(fp);
    assert_true(n >= 0);
    rewind(fp);
    unsigned char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return p;
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Lists the names in dir starting with prefix (all names when prefix is ""). */
static int list_names(const char *dir, const char *prefix, char names[][NAME_MAX + 1], int max)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        assert_true(n < max);
        snprintf(names[n++], NAME_MAX + 1, "%s", e->d_name);
    }
    closedir(d);
    return n;
}

static int count_names(const char *dir, const char *prefix)
{
    char names[MAX_ASIDE][NAME_MAX + 1];
    return list_names(dir, prefix, names, MAX_ASIDE);
}

static void fill(unsigned char *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (unsigned char)(seed >> 16);
    }
}

static void save_text(fixture *f, uint16_t schema, const char *s)
{
    assert_int_equal(gs_state_save(f->dir, NAME, schema, s, strlen(s)), 0);
}

/*
 * The contract for every bad file: load returns `want` with an empty buffer,
 * the file is gone from its name and sits, byte for byte, under a new
 * `<name>.state.corrupt-*` name, and the next load is a fresh start.
 */
static void expect_set_aside(fixture *f, uint16_t schema, int want)
{
    size_t orig_len;
    unsigned char *orig = read_file(f->path, &orig_len);
    char before[MAX_ASIDE][NAME_MAX + 1], after[MAX_ASIDE][NAME_MAX + 1];
    int nb = list_names(f->dir, NAME ".state.corrupt-", before, MAX_ASIDE);

    cn_buf out;
    cn_buf_init(&out);
    assert_int_equal(gs_state_load(f->dir, NAME, schema, &out), want);
    assert_int_equal(out.len, 0);
    assert_false(exists(f->path));

    int na = list_names(f->dir, NAME ".state.corrupt-", after, MAX_ASIDE);
    assert_int_equal(na, nb + 1);
    const char *fresh = NULL;
    for (int i = 0; i < na && fresh == NULL; i++) {
        int old = 0;
        for (int j = 0; j < nb; j++)
            old |= strcmp(after[i], before[j]) == 0;
        if (!old)
            fresh = after[i];
    }
    assert_non_null(fresh);
    char aside[PATH_MAX];
    mkpath(aside, f->dir, fresh);
    size_t got_len;
    unsigned char *got = read_file(aside, &got_len);
    assert_int_equal(got_len, orig_len);
    assert_memory_equal(got, orig, orig_len);

    assert_int_equal(gs_state_load(f->dir, NAME, schema, &out), -ENOENT);
    cn_buf_free(&out);
    free(got);
    free(orig);
}

static void truncate_to(const char *path, off_t len)
{
    assert_int_equal(truncate(path, len), 0);
}

static void poke(const char *path, off_t at, unsigned char xor_mask)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= xor_mask;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    close(fd);
}

static void append(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "ab");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* ---- round trips -------------------------------------------------------- */

static void test_round_trip(void **state)
{
    fixture *f = *state;
    cn_buf out;
    cn_buf_init(&out);
    save_text(f, 7, "hello, state");
    assert_int_equal(gs_state_load(f->dir, NAME, 7, &out), 0);
    assert_int_equal(out.len, strlen("hello, state"));
    assert_memory_equal(out.data, "hello, state", out.len);

    /* A second save replaces the first, and load discards what out held. */
    save_text(f, 7, "v2");
    assert_int_equal(gs_state_load(f->dir, NAME, 7, &out), 0);
    assert_int_equal(out.len, 2);
    assert_memory_equal(out.data, "v2", 2);

    /* Nothing but the state file is left behind: no temp, no probe. */
    assert_int_equal(count_names(f->dir, ""), 1);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    cn_buf_free(&out);
}

static void test_empty_payload(void **state)
{
    fixture *f = *state;
    cn_buf out;
    cn_buf_init(&out);
    assert_int_equal(gs_state_save(f->dir, NAME, 1, NULL, 0), 0);
    size_t n;
    free(read_file(f->path, &n));
    assert_int_equal(n, GS_STATE_HEADER_LEN);
    assert_int_equal(cn_buf_append(&out, "junk", 4), 0);
    assert_int_equal(gs_state_load(f->dir, NAME, 1, &out), 0);
    assert_int_equal(out.len, 0);
    cn_buf_free(&out);
}

static void test_large_payload(void **state)
{
    fixture *f = *state;
    size_t n = 5 * 1024 * 1024 + 3;
    unsigned char *p = malloc(n);
    assert_non_null(p);
    fill(p, n, 99);
    assert_int_equal(gs_state_save(f->dir, NAME, 2, p, n), 0);
    cn_buf out;
    cn_buf_init(&out);
    assert_int_equal(gs_state_load(f->dir, NAME, 2, &out), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, p, n);
    cn_buf_free(&out);
    free(p);
}

/* Pins the on-disk layout, with the checksum computed independently. */
static void test_file_layout(void **state)
{
    fixture *f = *state;
    assert_int_equal(gs_state_save(f->dir, NAME, 0x0102, "abc", 3), 0);
    size_t n;
    unsigned char *p = read_file(f->path, &n);
    assert_int_equal(n, 27);
    const unsigned char head[16] = {'C', 'N', 'S', 'T', 0, 1, 1, 2, 0, 0, 0, 0, 0, 0, 0, 3};
    assert_memory_equal(p, head, 16);
    unsigned char covered[19];
    memcpy(covered, head, 16);
    memcpy(covered + 16, "abc", 3);
    assert_true(cn_get_u64(p + 16) == XXH3_64bits(covered, sizeof covered));
    assert_memory_equal(p + 24, "abc", 3);
    free(p);
}

static void test_missing_file(void **state)
{
    fixture *f = *state;
    cn_buf out;
    cn_buf_init(&out);
    assert_int_equal(gs_state_load(f->dir, NAME, 1, &out), -ENOENT);
    assert_int_equal(out.len, 0);
    assert_int_equal(count_names(f->dir, ""), 0);
    cn_buf_free(&out);
}

/* A crash before the rename leaves a temp file beside the old, complete file. */
static void test_torn_write(void **state)
{
    fixture *f = *state;
    save_text(f, 1, "old state");
    char tmp[PATH_MAX], tmp2[PATH_MAX];
    mkpath(tmp, f->dir, "." NAME ".state.tmp-Ab12Cd");
    write_file(tmp, "CNST\0\1\0\1\0\0\0\0\0\0\1\0ne", 18);
    /* Another server crashed before its first save ever completed. */
    mkpath(tmp2, f->dir, ".other.state.tmp-zzzzzz");
    write_file(tmp2, "CNST", 4);

    cn_buf out;
    cn_buf_init(&out);
    assert_int_equal(gs_state_load(f->dir, NAME, 1, &out), 0);
    assert_int_equal(out.len, 9);
    assert_memory_equal(out.data, "old state", 9);
    assert_int_equal(gs_state_load(f->dir, "other", 1, &out), -ENOENT);
    assert_int_equal(count_names(f->dir, NAME ".state.corrupt-"), 0);

    /* The start-up check clears the leftovers and nothing else. */
    assert_int_equal(gs_state_check_dir(f->dir), 0);
    assert_false(exists(tmp));
    assert_false(exists(tmp2));
    assert_int_equal(gs_state_load(f->dir, NAME, 1, &out), 0);
    assert_memory_equal(out.data, "old state", 9);
    cn_buf_free(&out);
}

/* ---- corrupt and mismatched files --------------------------------------- */

static void test_bad_checksum(void **state)
{
    fixture *f = *state;
    save_text(f, 1, "payload bytes");
    poke(f->path, GS_STATE_HEADER_LEN + 5, 0x01);
    expect_set_aside(f, 1, CN_ECORRUPT);

    /* The checksum covers the header too: a flipped schema field is corruption,
     * not a schema mismatch. */
    save_text(f, 1, "payload bytes");
    poke(f->path, 7, 0x02);
    expect_set_aside(f, 3, CN_ECORRUPT);

    save_text(f, 1, "payload bytes");
    poke(f->path, 20, 0x80);
    expect_set_aside(f, 1, CN_ECORRUPT);
}

static void test_truncated(void **state)
{
    fixture *f = *state;
    const char *payload = "0123456789abcdefghij";
    off_t full = GS_STATE_HEADER_LEN + (off_t)strlen(payload);
    const off_t lens[] = {0, 1, 3, 4, 6, 8, 16, 23, 24, 25, GS_STATE_HEADER_LEN + 10, full - 1};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        save_text(f, 1, payload);
        truncate_to(f->path, lens[i]);
        expect_set_aside(f, 1, CN_ECORRUPT);
    }
    /* Every truncation got its own aside file, even within the same second. */
    assert_int_equal(count_names(f->dir, NAME ".state.corrupt-"),
                     (int)(sizeof lens / sizeof lens[0]));
}

static void test_trailing_garbage(void **state)
{
    fixture *f = *state;
    save_text(f, 1, "state");
    append(f->path, "x", 1);
    expect_set_aside(f, 1, CN_ECORRUPT);

    /* A whole second valid file appended is still trailing bytes. */
    save_text(f, 1, "state");
    size_t n;
    unsigned char *p = read_file(f->path, &n);
    append(f->path, p, n);
    free(p);
    expect_set_aside(f, 1, CN_ECORRUPT);
}

static void test_bad_magic(void **state)
{
    fixture *f = *state;
    save_text(f, 1, "state");
    poke(f->path, 0, 0x20); /* "cNST" */
    expect_set_aside(f, 1, CN_ECORRUPT);

    write_file(f->path, "this is not a state file at all", 31);
    expect_set_aside(f, 1, CN_ECORRUPT);
}

static void test_format_version_mismatch(void **state)
{
    fixture *f = *state;
    save_text(f, 1, "state");
    poke(f->path, 5, 0x03); /* format 1 -> 2 */
    expect_set_aside(f, 1, CN_EVERSION);

    save_text(f, 1, "state");
    poke(f->path, 5, 0x01); /* format 1 -> 0 */
    expect_set_aside(f, 1, CN_EVERSION);
}

static void test_schema_mismatch(void **state)
{
    fixture *f = *state;
    save_text(f, 1, "schema one");
    expect_set_aside(f, 2, CN_EVERSION);

    /* The aside file is intact: put it back and the right schema loads it. */
    char names[MAX_ASIDE][NAME_MAX + 1];
    assert_int_equal(list_names(f->dir, NAME ".state.corrupt-", names, MAX_ASIDE), 1);
    char aside[PATH_MAX];
    mkpath(aside, f->dir, names[0]);
    assert_int_equal(rename(aside, f->path), 0);
    cn_buf out;
    cn_buf_init(&out);
    assert_int_equal(gs_state_load(f->dir, NAME, 1, &out), 0);
    assert_memory_equal(out.data, "schema one", 10);
    cn_buf_free(&out);
}

static void test_two_corruptions_distinct(void **state)
{
    fixture *f = *state;
    write_file(f->path, "first bad file", 14);
    expect_set_aside(f, 1, CN_ECORRUPT);
    write_file(f->path, "second bad file", 15);
    expect_set_aside(f, 1, CN_ECORRUPT);

    char names[MAX_ASIDE][NAME_MAX + 1];
    assert_int_equal(list_names(f->dir, NAME ".state.corrupt-", names, MAX_ASIDE), 2);
    assert_string_not_equal(names[0], names[1]);
    int seen_first = 0, seen_second = 0;
    for (int i = 0; i < 2; i++) {
        char p[PATH_MAX];
        mkpath(p, f->dir, names[i]);
        size_t n;
        unsigned char *b = read_file(p, &n);
        seen_first |= n == 14 && memcmp(b, "first bad file", 14) == 0;
        seen_second |= n == 15 && memcmp(b, "second bad file", 15) == 0;
        free(b);
    }
    assert_true(seen_first && seen_second);
}

/* Aside names that are already taken (this second and the next) stay untouched. */
static void test_aside_never_overwrites(void **state)
{
    fixture *f = *state;
    char taken[4][PATH_MAX];
    time_t now = time(NULL);
    for (int i = 0; i < 2; i++) {
        time_t t = now + i;
        struct tm tm;
        gmtime_r(&t, &tm);
        char stamp[32];
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
        char leaf[64];
        assert_true(snprintf(leaf, sizeof leaf, NAME ".state.corrupt-%s", stamp) < 64);
        mkpath(taken[2 * i], f->dir, leaf);
        assert_true(snprintf(leaf, sizeof leaf, NAME ".state.corrupt-%s-1", stamp) < 64);
        mkpath(taken[2 * i + 1], f->dir, leaf);
        write_file(taken[2 * i], "keep me", 7);
        write_file(taken[2 * i + 1], "keep me", 7);
    }
    write_file(f->path, "bad", 3);
    expect_set_aside(f, 1, CN_ECORRUPT);
    for (int i = 0; i < 4; i++) {
        size_t n;
        unsigned char *b = read_file(taken[i], &n);
        assert_int_equal(n, 7);
        assert_memory_equal(b, "keep me", 7);
        free(b);
    }
}

static void test_not_a_regular_file(void **state)
{
    fixture *f = *state;
    cn_buf out;
    cn_buf_init(&out);
    /* A FIFO must not hang the load, and a directory is not state either. */
    assert_int_equal(mkfifo(f->path, 0600), 0);
    assert_int_equal(gs_state_load(f->dir, NAME, 1, &out), CN_ECORRUPT);
    assert_false(exists(f->path));
    assert_int_equal(mkdir(f->path, 0700), 0);
    assert_int_equal(gs_state_load(f->dir, NAME, 1, &out), CN_ECORRUPT);
    assert_false(exists(f->path));
    assert_int_equal(count_names(f->dir, NAME ".state.corrupt-"), 2);
    assert_int_equal(gs_state_load(f->dir, NAME, 1, &out), -ENOENT);
    cn_buf_free(&out);
}

/* ---- save failures and names -------------------------------------------- */

static void test_save_failure_leaves_no_temp(void **state)
{
    fixture *f = *state;
    /* Renaming a file over a non-empty directory fails, for root too. */
    char inner[PATH_MAX];
    assert_int_equal(mkdir(f->path, 0700), 0);
    mkpath(inner, f->path, "keep");
    write_file(inner, "x", 1);
    int rc = gs_state_save(f->dir, NAME, 1, "new", 3);
    assert_true(rc == -EISDIR || rc == -ENOTEMPTY || rc == -EEXIST);
    assert_int_equal(count_names(f->dir, ""), 1);
    assert_true(exists(inner));
}

static void test_save_bad_dir(void **state)
{
    fixture *f = *state;
    char p[PATH_MAX];
    mkpath(p, f->dir, "missing");
    assert_int_equal(gs_state_save(p, NAME, 1, "x", 1), -ENOENT);
    mkpath(p, f->dir, "file");
    write_file(p, "x", 1);
    assert_int_equal(gs_state_save(p, NAME, 1, "x", 1), -ENOTDIR);
    assert_int_equal(gs_state_save(NULL, NAME, 1, "x", 1), -EINVAL);
    assert_int_equal(gs_state_save(f->dir, NAME, 1, NULL, 1), -EINVAL);
}

static void test_bad_names(void **state)
{
    fixture *f = *state;
    const char *bad[] = {"", ".", "..", "../x", "a/b", "/abs", "a..b", ".hidden", "x/"};
    cn_buf out;
    cn_buf_init(&out);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(gs_state_save(f->dir, bad[i], 1, "x", 1), -EINVAL);
        assert_int_equal(gs_state_load(f->dir, bad[i], 1, &out), -EINVAL);
    }
    assert_int_equal(gs_state_save(f->dir, NULL, 1, "x", 1), -EINVAL);
    assert_int_equal(gs_state_load(f->dir, NULL, 1, &out), -EINVAL);
    assert_int_equal(count_names(f->dir, ""), 0);

    char longest[GS_STATE_NAME_MAX + 2];
    memset(longest, 'n', sizeof longest);
    longest[GS_STATE_NAME_MAX + 1] = '\0';
    assert_int_equal(gs_state_save(f->dir, longest, 1, "x", 1), -ENAMETOOLONG);
    /* The longest allowed name still fits with every suffix we add to it. */
    longest[GS_STATE_NAME_MAX] = '\0';
    assert_int_equal(gs_state_save(f->dir, longest, 1, "x", 1), 0);
    assert_int_equal(gs_state_load(f->dir, longest, 2, &out), CN_EVERSION);
    assert_int_equal(count_names(f->dir, longest), 1);
    /* Names that merely look odd are fine. */
    assert_int_equal(gs_state_save(f->dir, "rate_limiter.v2", 1, "x", 1), 0);
    assert_int_equal(gs_state_load(f->dir, "rate_limiter.v2", 1, &out), 0);
    cn_buf_free(&out);
}

/* ---- the data directory ------------------------------------------------- */

static void test_check_dir_creates(void **state)
{
    fixture *f = *state;
    char p[PATH_MAX];
    mkpath(p, f->dir, "a/b/c/");
    assert_int_equal(gs_state_check_dir(p), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    /* The probe is gone, and a second check of an existing dir is fine. */
    assert_int_equal(count_names(p, ""), 0);
    assert_int_equal(gs_state_check_dir(p), 0);
    assert_int_equal(gs_state_check_dir(f->dir), 0);
    assert_int_equal(gs_state_check_dir(""), -EINVAL);
    assert_int_equal(gs_state_check_dir(NULL), -EINVAL);
}

static void test_check_dir_not_a_dir(void **state)
{
    fixture *f = *state;
    char file[PATH_MAX], under[PATH_MAX];
    mkpath(file, f->dir, "plain");
    write_file(file, "x", 1);
    /* These fail for root too: no permission bit is involved. */
    assert_int_equal(gs_state_check_dir(file), -ENOTDIR);
    mkpath(under, f->dir, "plain/data");
    assert_int_equal(gs_state_check_dir(under), -ENOTDIR);
    mkpath(under, f->dir, "plain/data/deeper");
    assert_int_equal(gs_state_check_dir(under), -ENOTDIR);
}

static void test_check_dir_unwritable_skipped_as_root(void **state)
{
    fixture *f = *state;
    char p[PATH_MAX];
    mkpath(p, f->dir, "ro");
    assert_int_equal(mkdir(p, 0500), 0);
    assert_int_equal(chmod(p, 0500), 0);
    /* Root writes through permission bits, so this case cannot fail for root;
     * test_check_dir_not_a_dir covers a failure that root cannot get around. */
    if (geteuid() == 0)
        skip();
    assert_int_equal(gs_state_check_dir(p), -EACCES);
    char sub[PATH_MAX];
    mkpath(sub, f->dir, "ro/sub");
    assert_int_equal(gs_state_check_dir(sub), -EACCES);
}

static void test_check_dir_cleans_only_leftovers(void **state)
{
    fixture *f = *state;
    const char *leftovers[] = {".counter.state.tmp-a1B2c3", ".x.state.tmp-000000",
                               ".probe-Qw3rTy"};
    const char *kept[] = {"counter.state", "counter.state.corrupt-20240101T000000Z",
                          ".counter.state.tmp-abc", ".counter.state.tmp-abcdefg",
                          "counter.state.tmp-abcdef", "notes.txt", ".probe-ab"};
    char p[PATH_MAX];
    for (size_t i = 0; i < sizeof leftovers / sizeof leftovers[0]; i++) {
        mkpath(p, f->dir, leftovers[i]);
        write_file(p, "t", 1);
    }
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        mkpath(p, f->dir, kept[i]);
        write_file(p, "k", 1);
    }
    /* A directory with a leftover's name is not ours to remove. */
    mkpath(p, f->dir, ".d.state.tmp-dddddd");
    assert_int_equal(mkdir(p, 0700), 0);

    assert_int_equal(gs_state_check_dir(f->dir), 0);
    for (size_t i = 0; i < sizeof leftovers / sizeof leftovers[0]; i++) {
        mkpath(p, f->dir, leftovers[i]);
        assert_false(exists(p));
    }
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        mkpath(p, f->dir, kept[i]);
        assert_true(exists(p));
    }
    assert_int_equal(count_names(f->dir, ""), (int)(sizeof kept / sizeof kept[0]) + 1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    cn_log_threshold = getenv("TEST_LOG") ? CN_LOG_DEBUG : CN_LOG_NONE;
    const struct CMUnitTest tests[] = {
        T(test_round_trip),
        T(test_empty_payload),
        T(test_large_payload),
        T(test_file_layout),
        T(test_missing_file),
        T(test_torn_write),
        T(test_bad_checksum),
        T(test_truncated),
        T(test_trailing_garbage),
        T(test_bad_magic),
        T(test_format_version_mismatch),
        T(test_schema_mismatch),
        T(test_two_corruptions_distinct),
        T(test_aside_never_overwrites),
        T(test_not_a_regular_file),
        T(test_save_failure_leaves_no_temp),
        T(test_save_bad_dir),
        T(test_bad_names),
        T(test_check_dir_creates),
        T(test_check_dir_not_a_dir),
        T(test_check_dir_unwritable_skipped_as_root),
        T(test_check_dir_cleans_only_leftovers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
