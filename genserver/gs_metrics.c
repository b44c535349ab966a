/*
 * A server's figures (genserver/gs_metrics_int.h). The counting runs on every
 * request, so it is a few adds and, for a call, one clock read.
 */
#include <stdlib.h>
#include <uv.h>

#include "cnode/mem.h"
#include "genserver/genserver_int.h"
#include "genserver/gs_metrics_int.h"

static const char *const result_name[GS_M_RESULTS] = {"ok", "error", "unknown"};
static const char *const kind_name[3] = {"call", "cast", "info"};

/* Messages the server holds back (suspended, continuing, in a sys request): local delivery is immediate. */
static double mailbox_depth(void *arg)
{
    const gs_server *s = arg;
    unsigned n = 0;
    for (const gs_msg *m = s->q_head; m; m = m->next)
        n++;
    return n;
}

gs_metrics *gs__metrics_new(gs_server *s, const char *name)
{
    cn_metrics *reg = cn_metrics_default();
    gs_metrics *m = cn_calloc(1, sizeof *m);
    for (int i = 0; i < GS_M_RESULTS; i++) {
        cn_labels l = {{"server", name, "result", result_name[i]}};
        m->calls[i] = cn_metrics_counter(reg, "cnode_calls_total", "GenServer calls handled, by result.", &l);
        m->casts[i] = cn_metrics_counter(reg, "cnode_casts_total", "GenServer casts handled, by result.", &l);
    }
    cn_labels one = {{"server", name, NULL, NULL}};
    for (int i = 0; i < 3; i++) {
        cn_labels l = {{"server", name, "kind", kind_name[i]}};
        m->unknown[i] = cn_metrics_counter(reg, "cnode_unknown_requests_total",
                                           "Requests the server did not handle, by kind.", &l);
    }
    m->latency = cn_metrics_histogram(reg, "cnode_call_duration_seconds",
                                      "From a call decoded to its reply queued.", &one);
    m->mailbox = cn_metrics_gauge(reg, "cnode_mailbox_depth", "Messages a server holds back to handle later.",
                                  &one, mailbox_depth, s);
    return m;
}

void gs__metrics_free(gs_server *s, gs_metrics *m)
{
    if (m == NULL)
        return;
    cn_metrics_gauge_remove(cn_metrics_default(), m->mailbox, s);
    free(m);
}

/* Is the term at b[i] the atom error or a tuple that starts with it? */
static int is_error(const char *b, int i)
{
    int arity;
    if (gs__atom_at(b, i, "error"))
        return 1;
    return ei_decode_tuple_header(b, &i, &arity) == 0 && arity > 0 && gs__atom_at(b, i, "error");
}

void gs__metrics_call(gs_server *s, gs_ret r, int reply_at, uint64_t t0)
{
    gs_metrics *m = s->met;
    if (m == NULL)
        return;
    int res = GS_M_OK;
    if (r == GS_UNKNOWN)
        res = GS_M_UNKNOWN;
    else if (r == GS_STOP || (r == GS_REPLY && is_error(s->out.buff, reply_at)))
        res = GS_M_ERROR;
    cn_counter_inc(m->calls[res]);
    if (res == GS_M_UNKNOWN)
        cn_counter_inc(m->unknown[0]);
    if (r != GS_NOREPLY && s->out.index > reply_at)
        cn_metrics_observe(m->latency, uv_hrtime() - t0);
}

void gs__metrics_simple(gs_server *s, gs_ret r, int is_cast)
{
    gs_metrics *m = s->met;
    if (m == NULL)
        return;
    int res = r == GS_UNKNOWN ? GS_M_UNKNOWN : r == GS_STOP ? GS_M_ERROR : GS_M_OK;
    if (is_cast)
        cn_counter_inc(m->casts[res]);
    if (res == GS_M_UNKNOWN)
        cn_counter_inc(m->unknown[is_cast ? 1 : 2]);
}
