/*
 * The rate limiter's state: one sliding window of accepted-request timestamps per
 * client, with no networking and no clock of its own. The gen_server wrapper
 * decodes requests, passes the monotonic time in milliseconds to every call and
 * encodes the replies.
 *
 * The contract is the Elixir RateLimiter's: at most max_requests accepted requests
 * per client within any window of window_ms. A timestamp t counts at time now while
 * now - t < window_ms, so one exactly window_ms old has expired. A rejected request
 * is not recorded. Clients are told apart by term_key's canonical bytes, so they are
 * the same client exactly when their ids are === (1 and 1.0 are two clients).
 *
 * Memory (rl_table.c has the layout): a client is an entry in a bump arena of 2 MiB
 * segments: its newest stamp as 32 bits of milliseconds, a varint header, the
 * canonical key (a binary's without its five-byte head), padded to 4 bytes. The
 * common client, with one stamp in the window, needs nothing else; a client with
 * more has a separately allocated ring of 32-bit stamps that doubles up to
 * max_requests and is halved again by a sweep when three-quarters empty. The
 * index is open addressing over 64-bit slots (32-bit hash tag, 32-bit arena
 * reference) at most three-quarters full. About 37 bytes per client with one
 * request and a 17-byte binary id at 10 million clients. Sweeps compact the arena:
 * a segment more than half garbage is moved, a slice at a time, and unmapped.
 *
 * Stamps are milliseconds modulo 2^32 compared by signed difference, so a window
 * is at most RL_MAX_WINDOW_MS and every client must be visited by a sweep within
 * 2^31 - RL_MAX_WINDOW_MS ms (12.4 days) of its newest stamp, or an old stamp
 * would look recent again. The rate limiter sweeps once a window.
 *
 * `now_ms` must not decrease from one call to the next. The table is not thread
 * safe: one owner (the gen_server's loop) calls it.
 */
#ifndef GS_RL_TABLE_H
#define GS_RL_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "cnode/buf.h"

typedef struct rl_table rl_table;

/* The longest window: 2^30 ms, 12.4 days. */
#define RL_MAX_WINDOW_MS ((int64_t)1 << 30)

/*
 * Makes an empty table. The caller owns it and releases it with rl_table_free.
 * Returns NULL when max_requests is 0 or window_ms is not in 1..RL_MAX_WINDOW_MS.
 * Out of memory aborts (cnode/mem.h).
 */
rl_table *rl_table_new(uint32_t max_requests, int64_t window_ms);

/* Frees the table and every client in it. NULL is allowed. */
void rl_table_free(rl_table *t);

/*
 * The largest client id accepted, in bytes of external format as it arrives. A
 * larger id is CN_EDECODE ({error, bad_client_id} to the caller) and leaves the
 * table untouched: no caller needs one, and it bounds the work and memory one
 * request can cost every other caller of the server.
 */
#define RL_MAX_ID_BYTES (64 * 1024)

/*
 * Checks one request for the client whose id term starts at buf + index (external
 * format without the version byte). The buffer is borrowed, only read, and may be
 * reused as soon as the call returns; the table keeps its own copy of the key.
 * This form trusts that the term was checked by cn_term_skip (every message a
 * process receives was); prefer rl_check_n for bytes that were not.
 *
 * Returns 1 when accepted, with *remaining = max_requests - accepted requests in
 * the window including this one; 0 when rate limited (nothing recorded, *remaining
 * set to 0); CN_EDECODE for a malformed id or one above RL_MAX_ID_BYTES; -ENOMEM
 * when the index would pass 2^32 slots, in which case the request was not
 * recorded. No allocation happens for a client with one stamp in the window or
 * once a client's ring has grown to its working size, except when the table
 * itself grows for a new client.
 */
int rl_check(rl_table *t, const char *buf, int index, int64_t now_ms, uint32_t *remaining);

/* As rl_check, but the id must end within buf[0, len); a truncated id is CN_EDECODE. */
int rl_check_n(rl_table *t, const char *buf, size_t len, int index, int64_t now_ms,
               uint32_t *remaining);

/*
 * One slice of the periodic cleanup. Visits at most `budget` table slots from where
 * the previous slice stopped, drops expired timestamps, frees clients with none
 * left, shrinks rings that have become mostly empty, then moves at most `budget`
 * entries out of an arena segment that is more than half garbage. Returns 1 when
 * this slice reached the end of the table with no segment left half moved (the
 * next call starts a new sweep and a table that has become mostly empty is
 * shrunk), else 0; budget 0 does nothing and returns 0.
 *
 * A client that moves in the table while a sweep is under way (the table grew for
 * new clients between slices, or a deletion wrapped around the end) may be missed
 * or visited twice by that sweep; a missed client is visited by the next sweep.
 */
int rl_sweep(rl_table *t, int64_t now_ms, size_t budget);

/* Clients in the table, including those whose timestamps have all expired but that
 * no sweep has visited yet. */
size_t rl_client_count(const rl_table *t);

/*
 * Appends an image of every client that has timestamps inside the window at now_ms,
 * converted to wall-clock time: wall_t = now_wall_ms - (now_ms - t). The image is
 * self-checking (magic, version, checksum) and holds the canonical keys, so a table
 * with other limits can load it. Returns 0, or -ENOMEM with out->len unchanged.
 */
int rl_save(const rl_table *t, int64_t now_ms, int64_t now_wall_ms, cn_buf *out);

/*
 * Loads an image made by rl_save into an empty table, converting each timestamp to
 * the monotonic clock (t = now_ms - (now_wall_ms - wall_t)) and dropping those that
 * have expired. A timestamp in the wall-clock future (the clock was set back) is
 * taken as now_ms, so a restart never gives a client a fresh window. When the table's
 * max_requests is below the image's, a client keeps its newest max_requests
 * timestamps. The data is borrowed.
 *
 * Returns 0; CN_ECORRUPT for a malformed, truncated or altered image; CN_EVERSION for
 * an image of another format version; -ENOMEM; these leave the table empty.
 * -EINVAL when the table is not empty, which leaves it untouched.
 */
int rl_load(rl_table *t, const char *data, size_t len, int64_t now_ms, int64_t now_wall_ms);

#endif
