/*
 * Private to genserver/: a named server's figures in the process's metrics
 * registry (cnode/metrics.h), counted by the behaviour (genserver.c). Series
 * are found by the server's name, so a restarted server counts on where the
 * one before it stopped. Unnamed servers are not measured (s->met is NULL):
 * a series needs a name that outlives the process.
 */
#ifndef GS_METRICS_INT_H
#define GS_METRICS_INT_H

#include <stdint.h>

#include "cnode/metrics.h"

typedef struct gs_server gs_server;

enum { GS_M_OK, GS_M_ERROR, GS_M_UNKNOWN, GS_M_RESULTS };

typedef struct gs_metrics {
    cn_counter *calls[GS_M_RESULTS];
    cn_counter *casts[GS_M_RESULTS];
    cn_counter *unknown[3];   /* call, cast, info */
    cn_histogram *latency;
    cn_series *mailbox;
} gs_metrics;

/* Registers the figures of a server named name; free with gs__metrics_free. */
gs_metrics *gs__metrics_new(gs_server *s, const char *name);
void gs__metrics_free(gs_server *s, gs_metrics *m);

/*
 * A call handled: r what handle_call returned (GS_UNKNOWN before it became a
 * reply), reply_at where the reply starts in s->out, t0 the uv_hrtime when the
 * request was decoded. A reply {error, _} or error counts as an error, as does
 * a stop; the latency is observed when the reply went out in this turn.
 */
void gs__metrics_call(gs_server *s, gs_ret r, int reply_at, uint64_t t0);
/* A cast (is_cast) or another message handled, r what its callback returned. */
void gs__metrics_simple(gs_server *s, gs_ret r, int is_cast);

#endif
