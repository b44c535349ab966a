/*
 * Atomic, checked state files: part of a gen_server's lifecycle.
 *
 * A server saves its state in terminate and loads it in init (or in
 * handle_continue), so the files belong to the behaviour's layer: the servers
 * here use them and no supervisor needs to know about them. Each server has one
 * file in the node's data directory, `<dir>/<name>.state`. A save never leaves a
 * half-written file under that name: it writes a temp file beside it, fsyncs it,
 * renames it over the target and fsyncs the directory, so after a crash at any
 * point the name holds either the old complete file or the new one.
 *
 * Layout, all integers big-endian:
 *
 *     offset  size  field
 *          0     4  magic "CNST"
 *          4     2  file format version (GS_STATE_FORMAT)
 *          6     2  schema version of the payload, chosen by the server
 *          8     8  payload length in bytes
 *         16     8  XXH3_64bits over bytes 0..15 and the payload
 *         24     n  payload
 *
 * A file that fails any check is never deleted: it is renamed to
 * `<name>.state.corrupt-<UTC time>[-N]` so a human can look at it, and the server
 * starts fresh.
 *
 * Server names must be non-empty, must not start with '.', must not contain '/'
 * or "..", and are at most GS_STATE_NAME_MAX bytes. Names starting with '.' are
 * kept for our own temp (`.<name>.state.tmp-XXXXXX`) and probe files.
 *
 * One node per data directory: the functions here are safe against crashes, not
 * against two processes saving the same name at once.
 */
#ifndef GS_STATEFILE_H
#define GS_STATEFILE_H

#include <stddef.h>
#include <stdint.h>

#include "cnode/buf.h"

#define GS_STATE_MAGIC "CNST"
#define GS_STATE_FORMAT 1
#define GS_STATE_HEADER_LEN 24
/* Leaves room for the suffixes within a 255-byte file name. */
#define GS_STATE_NAME_MAX 200

/*
 * Saves `len` bytes at `data` (borrowed; NULL allowed when len is 0) as the state
 * of server `name` in `dir`, tagged with the server's `schema` version. The file
 * is created with mode 0600, since state may hold client data.
 *
 * Returns 0 once the new file is durable under its name. On error the old file,
 * if any, is untouched and no temp file is left behind. Errors: -EINVAL for a bad
 * name or NULL argument, -ENAMETOOLONG for a path that does not fit, and -errno
 * from the file system (-ENOENT when dir is missing, -ENOSPC, -EIO, ...). If only
 * the final fsync of the directory fails, the new file is in place but may not
 * survive a power cut; that is still reported as an error.
 */
int gs_state_save(const char *dir, const char *name, uint16_t schema, const void *data,
                   size_t len);

/*
 * Loads the state of server `name` from `dir`, which must have been saved with
 * this `schema` version. `out` must be initialised (cn_buf_init); its previous
 * contents are discarded, and on success it holds exactly the payload. The caller
 * keeps owning `out` and frees it with cn_buf_free, on success or not.
 *
 * Returns:
 *   0            the payload is in out.
 *   -ENOENT      no saved state: a fresh start (logged at info).
 *   CN_ECORRUPT  bad magic, bad checksum, truncated, trailing bytes, or not a
 *                regular file.
 *   CN_EVERSION  written with another file format version or another schema.
 *   -EINVAL      bad name or NULL argument; -ENAMETOOLONG.
 *   -errno       the file exists but could not be read (-EACCES, -EIO, ...).
 * For CN_ECORRUPT, CN_EVERSION and read errors, the file has been logged at
 * warning and moved aside (see above), so the server should start fresh and a
 * later load returns -ENOENT. If moving it aside fails too, that is logged at
 * error and the same code is returned. out->len is 0 on any error.
 */
int gs_state_load(const char *dir, const char *name, uint16_t schema, cn_buf *out);

/*
 * As gs_state_load, but a file of any schema from lo to hi is accepted and
 * *schema says which it was: a server that changed its payload reads its
 * older files too. Outside the range is CN_EVERSION, as above.
 */
int gs_state_load_schemas(const char *dir, const char *name, uint16_t lo, uint16_t hi, cn_buf *out,
                          uint16_t *schema);

/*
 * Start-up check of the data directory: creates `dir` and any missing parents
 * (mode 0700, like mkdir -p), then proves it is writable by creating and removing
 * a probe file, so that a bad --data-dir stops the node at once instead of at the
 * first save. It also removes temp files left by saves that were torn by a crash
 * (they never hold the only copy of anything: the rename had not happened).
 *
 * Returns 0, or -EINVAL (NULL or empty), -ENOTDIR (dir or a parent is not a
 * directory), -EACCES, -EROFS, -ENOSPC, -ENAMETOOLONG or another -errno. The
 * failing step is logged at debug; the caller prints one line with
 * cn_strerror() and exits.
 */
int gs_state_check_dir(const char *dir);

#endif
