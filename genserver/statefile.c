/*
 * State files (genserver/statefile.h): the atomic save (temp file, fsync,
 * rename, fsync of the directory), the checked load that sets a bad file aside
 * instead of deleting it, and the start-up check of the data directory.
 */
#include "genserver/statefile.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cnode/error.h"
#include "cnode/log.h"

#define COMP "state"
#define TEMP_SUFFIX ".state.tmp-"
#define PROBE_PREFIX ".probe-"
#define RANDOM_LEN 6 /* the XXXXXX of mkostemp */
/* How many "-N" suffixes we try before giving up on a unique aside name. */
#define ASIDE_TRIES 1000

static int check_name(const char *name)
{
    if (name == NULL || name[0] == '\0' || name[0] == '.')
        return -EINVAL;
    if (strchr(name, '/') != NULL || strstr(name, "..") != NULL)
        return -EINVAL;
    if (strlen(name) > GS_STATE_NAME_MAX)
        return -ENAMETOOLONG;
    return 0;
}

/* Formats a path into buf, and refuses rather than truncates one that is too long. */
__attribute__((format(printf, 3, 4)))
static int make_path(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads up to n bytes, stopping early only at end of file. Returns the count or -errno. */
static ssize_t read_full(int fd, void *p, size_t n)
{
    char *d = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, d + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/*
 * A rename is only durable once the directory entry is, hence the fsync of the
 * directory. Some file systems cannot fsync a directory and say EINVAL; there is
 * nothing more we can do on those, so that is not an error.
 */
static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (fsync(fd) < 0 && errno != EINVAL)
        rc = -errno;
    close(fd);
    return rc;
}

static uint64_t checksum(const unsigned char *hdr, const void *payload, size_t len)
{
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, hdr, 16);
    if (len > 0)
        XXH3_64bits_update(&st, payload, len);
    return XXH3_64bits_digest(&st);
}

static void put_u16(unsigned char *d, uint16_t v)
{
    d[0] = (unsigned char)(v >> 8);
    d[1] = (unsigned char)v;
}

static void put_u64(unsigned char *d, uint64_t v)
{
    cn_set_u32(d, (uint32_t)(v >> 32));
    cn_set_u32(d + 4, (uint32_t)v);
}

static void encode_header(unsigned char *hdr, uint16_t schema, const void *data, size_t len)
{
    memcpy(hdr, GS_STATE_MAGIC, 4);
    put_u16(hdr + 4, GS_STATE_FORMAT);
    put_u16(hdr + 6, schema);
    put_u64(hdr + 8, (uint64_t)len);
    put_u64(hdr + 16, checksum(hdr, data, len));
}

/* Writes, syncs and closes the temp file. Closes fd whatever happens. */
static int write_temp(int fd, const unsigned char *hdr, const void *data, size_t len)
{
    int rc = write_all(fd, hdr, GS_STATE_HEADER_LEN);
    if (rc == 0 && len > 0)
        rc = write_all(fd, data, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    /* close can report a delayed write error (NFS); it must not be ignored. */
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

int gs_state_save(const char *dir, const char *name, uint16_t schema, const void *data,
                   size_t len)
{
    if (dir == NULL || (data == NULL && len > 0))
        return -EINVAL;
    int rc = check_name(name);
    if (rc < 0)
        return rc;
    char target[PATH_MAX], tmp[PATH_MAX];
    if ((rc = make_path(target, sizeof target, "%s/%s.state", dir, name)) < 0 ||
        (rc = make_path(tmp, sizeof tmp, "%s/.%s" TEMP_SUFFIX "XXXXXX", dir, name)) < 0)
        return rc;

    unsigned char hdr[GS_STATE_HEADER_LEN];
    encode_header(hdr, schema, data, len);

    /* A unique temp name in the same directory: the rename must not cross file
     * systems, and two saves must never write into the same temp file. */
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        CN_ERROR(COMP, "saving %s: cannot create temp file: %s", target, cn_strerror(rc));
        return rc;
    }
    rc = write_temp(fd, hdr, data, len);
    if (rc == 0 && rename(tmp, target) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        CN_ERROR(COMP, "saving %s: %s", target, cn_strerror(rc));
        return rc;
    }
    rc = fsync_dir(dir);
    if (rc < 0) {
        CN_ERROR(COMP, "saved %s but could not sync its directory: %s", target,
                 cn_strerror(rc));
        return rc;
    }
    CN_DEBUG(COMP, "saved %s (%zu bytes, schema %u)", target, len, (unsigned)schema);
    return 0;
}

/*
 * Renames without ever replacing an existing file. renameat2(RENAME_NOREPLACE)
 * does that atomically; file systems without it get link + unlink, which is
 * just as safe because link also refuses an existing name.
 */
static int rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -errno;
    if (link(from, to) < 0)
        return -errno;
    return unlink(from) < 0 ? -errno : 0;
}

/* Moves a bad file to a fresh `<name>.state.corrupt-<UTC time>[-N]`; fills aside. */
static int move_aside(const char *dir, const char *name, const char *path, char *aside,
                      size_t size)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);

    for (int i = 0; i < ASIDE_TRIES; i++) {
        int rc = i == 0
                     ? make_path(aside, size, "%s/%s.state.corrupt-%s", dir, name, stamp)
                     : make_path(aside, size, "%s/%s.state.corrupt-%s-%d", dir, name, stamp, i);
        if (rc < 0)
            return rc;
        rc = rename_noreplace(path, aside);
        if (rc == -EEXIST)
            continue;
        if (rc == 0)
            (void)fsync_dir(dir); /* best effort: the next save syncs it anyway */
        return rc;
    }
    return -EEXIST;
}

/*
 * Reads and checks the open file. On success the payload is in out; otherwise
 * reason says what was wrong, for the log. The format version is checked before
 * anything else in the header, since another version may lay the header out
 * differently; the schema is checked last, so that it is only reported for a
 * file that is otherwise intact.
 */
static int read_checked(int fd, uint16_t lo, uint16_t hi, uint16_t *schema, cn_buf *out, char *reason,
                        size_t rsize)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int rc = -errno;
        snprintf(reason, rsize, "cannot stat");
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(reason, rsize, "not a regular file");
        return CN_ECORRUPT;
    }
    unsigned char hdr[GS_STATE_HEADER_LEN];
    ssize_t got = read_full(fd, hdr, sizeof hdr);
    if (got < 0) {
        snprintf(reason, rsize, "read error: %s", cn_strerror((int)got));
        return (int)got;
    }
    if (got < GS_STATE_HEADER_LEN || st.st_size < GS_STATE_HEADER_LEN) {
        snprintf(reason, rsize, "truncated: %zd bytes, the header alone is %d", got,
                 GS_STATE_HEADER_LEN);
        return CN_ECORRUPT;
    }
    if (memcmp(hdr, GS_STATE_MAGIC, 4) != 0) {
        snprintf(reason, rsize, "bad magic");
        return CN_ECORRUPT;
    }
    unsigned format = cn_get_u16(hdr + 4);
    if (format != GS_STATE_FORMAT) {
        snprintf(reason, rsize, "file format version %u, expected %u", format,
                 (unsigned)GS_STATE_FORMAT);
        return CN_EVERSION;
    }
    uint64_t len = cn_get_u64(hdr + 8);
    uint64_t avail = (uint64_t)st.st_size - GS_STATE_HEADER_LEN;
    if (len != avail) {
        snprintf(reason, rsize, "%s: header says %llu payload bytes, file has %llu",
                 len > avail ? "truncated" : "trailing bytes", (unsigned long long)len,
                 (unsigned long long)avail);
        return CN_ECORRUPT;
    }
    int rc = cn_buf_reserve(out, (size_t)len);
    if (rc < 0) {
        snprintf(reason, rsize, "a payload of %llu bytes cannot be held", (unsigned long long)len);
        return rc;
    }
    got = read_full(fd, out->data, (size_t)len);
    if (got < 0) {
        snprintf(reason, rsize, "read error: %s", cn_strerror((int)got));
        return (int)got;
    }
    char extra;
    /* The size can change under us; what we read is what we check. */
    if ((uint64_t)got != len || read_full(fd, &extra, 1) != 0) {
        snprintf(reason, rsize, "file changed size while being read");
        return CN_ECORRUPT;
    }
    if (checksum(hdr, out->data, (size_t)len) != cn_get_u64(hdr + 16)) {
        snprintf(reason, rsize, "bad checksum");
        return CN_ECORRUPT;
    }
    unsigned found = cn_get_u16(hdr + 6);
    if (found < lo || found > hi) {
        snprintf(reason, rsize, "schema version %u, expected %u to %u", found, (unsigned)lo, (unsigned)hi);
        return CN_EVERSION;
    }
    *schema = (uint16_t)found;
    out->len = (size_t)len;
    return 0;
}

/*
 * Moving a bad file aside, instead of leaving it, matters: the server starts
 * fresh and its next save would otherwise replace the only copy a human could
 * still recover something from.
 */
static void set_aside(const char *dir, const char *name, const char *path,
                      const char *reason, int err)
{
    char aside[PATH_MAX];
    int rc = move_aside(dir, name, path, aside, sizeof aside);
    if (rc == 0)
        CN_WARN(COMP, "%s: %s (%s); moved to %s, starting fresh", path, reason,
                cn_strerror(err), aside);
    else
        CN_ERROR(COMP, "%s: %s (%s); could not move it aside: %s", path, reason,
                 cn_strerror(err), cn_strerror(rc));
}

int gs_state_load(const char *dir, const char *name, uint16_t schema, cn_buf *out)
{
    uint16_t found;
    return gs_state_load_schemas(dir, name, schema, schema, out, &found);
}

int gs_state_load_schemas(const char *dir, const char *name, uint16_t lo, uint16_t hi, cn_buf *out,
                          uint16_t *schema)
{
    if (dir == NULL || out == NULL || schema == NULL)
        return -EINVAL;
    cn_buf_reset(out);
    int rc = check_name(name);
    if (rc < 0)
        return rc;
    char path[PATH_MAX];
    if ((rc = make_path(path, sizeof path, "%s/%s.state", dir, name)) < 0)
        return rc;

    char reason[160];
    /* O_NONBLOCK so that a FIFO planted under the name cannot hang us in open. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        rc = -errno;
        if (rc == -ENOENT) {
            CN_INFO(COMP, "%s: no saved state, starting fresh", path);
            return rc;
        }
        snprintf(reason, sizeof reason, "cannot open");
    } else {
        rc = read_checked(fd, lo, hi, schema, out, reason, sizeof reason);
        close(fd);
        if (rc == 0) {
            CN_DEBUG(COMP, "loaded %s (%zu bytes, schema %u)", path, out->len,
                     (unsigned)*schema);
            return 0;
        }
    }
    set_aside(dir, name, path, reason, rc);
    out->len = 0;
    return rc;
}

static int all_alnum(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

/* Our temp files are `.<name>.state.tmp-XXXXXX`; probe files `.probe-XXXXXX`. */
static int is_our_leftover(const char *s)
{
    size_t n = strlen(s);
    size_t tl = strlen(TEMP_SUFFIX), pl = strlen(PROBE_PREFIX);
    if (s[0] != '.')
        return 0;
    if (n == pl + RANDOM_LEN && strncmp(s, PROBE_PREFIX, pl) == 0)
        return all_alnum(s + pl, RANDOM_LEN);
    if (n < 2 + tl + RANDOM_LEN)
        return 0;
    const char *tail = s + n - RANDOM_LEN;
    return strncmp(tail - tl, TEMP_SUFFIX, tl) == 0 && all_alnum(tail, RANDOM_LEN);
}

/* Best effort: a leftover we cannot remove costs disk space, nothing else. */
static void remove_leftovers(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (!is_our_leftover(e->d_name) ||
            fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            CN_INFO(COMP, "%s: removed %s left by an interrupted save", dir, e->d_name);
        else
            CN_WARN(COMP, "%s: cannot remove %s: %s", dir, e->d_name, strerror(errno));
    }
    closedir(d);
}

/* mkdir -p: every missing component is created; existing ones are fine. */
static int mkdir_p(const char *dir)
{
    char p[PATH_MAX];
    int rc = make_path(p, sizeof p, "%s", dir);
    if (rc < 0)
        return rc;
    for (char *s = p + 1; *s != '\0'; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        rc = mkdir(p, 0700) < 0 && errno != EEXIST ? -errno : 0;
        *s = '/';
        if (rc < 0) {
            CN_DEBUG(COMP, "data dir %s: cannot create %.*s: %s", dir, (int)(s - p), p,
                     cn_strerror(rc));
            return rc;
        }
    }
    if (mkdir(p, 0700) < 0 && errno != EEXIST) {
        rc = -errno;
        CN_DEBUG(COMP, "data dir %s: cannot create it: %s", dir, cn_strerror(rc));
        return rc;
    }
    return 0;
}

int gs_state_check_dir(const char *dir)
{
    if (dir == NULL || dir[0] == '\0')
        return -EINVAL;
    int rc = mkdir_p(dir);
    if (rc < 0)
        return rc;
    struct stat st;
    if (stat(dir, &st) < 0)
        rc = -errno;
    else if (!S_ISDIR(st.st_mode))
        rc = -ENOTDIR;
    if (rc < 0) {
        CN_DEBUG(COMP, "data dir %s: %s", dir, cn_strerror(rc));
        return rc;
    }
    char probe[PATH_MAX];
    if ((rc = make_path(probe, sizeof probe, "%s/" PROBE_PREFIX "XXXXXX", dir)) < 0)
        return rc;
    /* Permission bits alone do not say whether we can write (root, read-only
     * mounts, ACLs), so actually create and remove a file. */
    int fd = mkostemp(probe, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        CN_DEBUG(COMP, "data dir %s: cannot create a file in it: %s", dir, cn_strerror(rc));
        return rc;
    }
    close(fd);
    if (unlink(probe) < 0) {
        rc = -errno;
        CN_DEBUG(COMP, "data dir %s: cannot remove a file from it: %s", dir, cn_strerror(rc));
        return rc;
    }
    remove_leftovers(dir);
    return 0;
}
