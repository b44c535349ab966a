/*
 * The RateLimiter server: a drop-in for the Elixir RateLimiter GenServer.
 *
 *   GenServer.call(rate_limiter, {:check_rate, client_id})
 *     -> {:ok, remaining} | {:error, :rate_limited}
 *
 * At most max_requests accepted requests per client in any sliding window of
 * window_ms; any term is a client id, with Elixir map-key equality. Every
 * window_ms a cleanup drops expired timestamps and forgets idle clients, in
 * slices, so calls are never held up for long. terminate saves every live
 * window (with wall-clock times); the next start loads it in handle_continue,
 * so a restart never hands a client a fresh window.
 *
 * With a data directory every accepted request is journaled
 * (genserver/journal.h) with its wall-clock time and the client's id, so a
 * kill -9 does not hand a client a fresh window either. While the journal
 * refuses (the disk said no), check_rate answers {:error, :not_durable}.
 */
#ifndef GS_RATE_LIMITER_H
#define GS_RATE_LIMITER_H

#include <stdint.h>

#include "genserver/genserver.h"
#include "genserver/journal.h"

typedef struct rate_limiter_config {
    uint32_t max_requests;  /* > 0 */
    int64_t window_ms;      /* 1..RL_MAX_WINDOW_MS (2^30, rl_table.h) */
    const char *data_dir;   /* NULL: state is not saved */
    size_t sweep_slice;     /* table slots visited per cleanup slice; 0: 8192 */
    gs_durability durability;   /* 0 is GS_DURABLE_TERMINATE; the program's default is crash */
    uint64_t snapshot_bytes;    /* journal bytes between snapshots; 0: the default */
    gs_handover *handover;      /* state a stopped incarnation could not save; may be NULL */
} rate_limiter_config;

extern const gs_callbacks rate_limiter_callbacks;

/* Starts the server registered as name. cfg is borrowed for the server's life. */
int rate_limiter_start(cn_node *node, const rate_limiter_config *cfg, const char *name, cn_proc *parent,
                       gs_server **out);

#endif
