/*
 * The RateLimiter server (genserver/rate_limiter.h) around the table of
 * genserver/rl_table.h: the wire contract, the sliced cleanup, and the state
 * file saved in terminate and loaded in handle_continue.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/metrics.h"
#include "cnode/term.h"
#include "genserver/rate_limiter.h"
#include "genserver/rl_table.h"
#include "genserver/statefile.h"

/* The state file's payload is rl_save's image. Bump when that changes. */
#define RL_SCHEMA 1

typedef struct limiter {
    const rate_limiter_config *cfg;
    char name[256];
    rl_table *table;
    int sweeping;
    cn_series *clients;     /* the clients gauge in the metrics */
} limiter;

static double client_count(void *arg)
{
    const limiter *l = arg;
    return (double)rl_client_count(l->table);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(gs_server *s)
{
    return (int64_t)cn_node_now(gs_node(s));
}

static void send_self_after(gs_server *s, uint64_t ms, const char *atom)
{
    char msg[32];
    size_t n = cn_term_atom(msg, atom);
    gs_send_after(s, ms, msg, n);
}

static gs_ret rl_init(gs_server *s, const gs_term *arg, gs_result *res)
{
    (void)arg;
    limiter *l = gs_data(s);
    l->table = rl_table_new(l->cfg->max_requests, l->cfg->window_ms);
    if (l->table == NULL) {
        ei_x_encode_atom(res->reason, "bad_config");
        return GS_STOP;
    }
    cn_labels lb = {{"server", l->name, NULL, NULL}};
    l->clients = cn_metrics_gauge(cn_metrics_default(), "cnode_rate_limiter_clients", "Clients a rate limiter tracks.",
                                  &lb, client_count, l);
    send_self_after(s, (uint64_t)l->cfg->window_ms, "$rl_cleanup");
    if (l->cfg->data_dir != NULL)
        ei_x_encode_atom(res->cont, "load");
    return GS_OK;
}

/* Loading may take a while for a million clients: calls wait, in order, until it is done. */
static gs_ret rl_continue(gs_server *s, const gs_term *cont, gs_result *res)
{
    (void)res;
    limiter *l = gs_data(s);
    if (!gs_term_is_atom(cont, "load"))
        return GS_UNKNOWN;
    cn_buf b;
    cn_buf_init(&b);
    int rc = gs_state_load(l->cfg->data_dir, l->name, RL_SCHEMA, &b);
    if (rc == 0) {
        rc = rl_load(l->table, b.data, b.len, mono_ms(s), wall_ms());
        if (rc < 0)
            CN_WARN("rate_limiter", "%s: saved state unreadable (%s); starting fresh", l->name, cn_strerror(rc));
        else
            CN_INFO("rate_limiter", "%s: restored %zu clients", l->name, rl_client_count(l->table));
    }
    cn_buf_free(&b);
    return GS_NOREPLY;
}

static gs_ret rl_call(gs_server *s, const gs_term *req, const gs_from *from, gs_result *res)
{
    (void)from;
    limiter *l = gs_data(s);
    const char *b = req->buf;
    int i = req->index, arity;
    if (ei_decode_tuple_header(b, &i, &arity) < 0 || arity != 2)
        return GS_UNKNOWN;
    gs_term tag = {b, i};
    if (!gs_term_is_atom(&tag, "check_rate"))
        return GS_UNKNOWN;
    cn_term_skip_trusted(b, &i);
    uint32_t remaining = 0;
    int rc = rl_check(l->table, b, i, mono_ms(s), &remaining);
    if (rc < 0) {
        CN_ERROR("rate_limiter", "%s: check_rate failed: %s", l->name, cn_strerror(rc));
        ei_x_encode_tuple_header(res->reply, 2);
        ei_x_encode_atom(res->reply, "error");
        ei_x_encode_atom(res->reply, rc == -ENOMEM ? "out_of_memory" : "bad_client_id");
        return GS_REPLY;
    }
    ei_x_encode_tuple_header(res->reply, 2);
    if (rc == 1) {
        ei_x_encode_atom(res->reply, "ok");
        ei_x_encode_ulong(res->reply, remaining);
    } else {
        ei_x_encode_atom(res->reply, "error");
        ei_x_encode_atom(res->reply, "rate_limited");
    }
    return GS_REPLY;
}

/* One slice of the cleanup; the next slice runs on a later loop turn, after waiting calls. */
static gs_ret rl_info(gs_server *s, const gs_term *msg, gs_result *res)
{
    (void)res;
    limiter *l = gs_data(s);
    if (!gs_term_is_atom(msg, "$rl_cleanup"))
        return GS_UNKNOWN;
    size_t slice = l->cfg->sweep_slice ? l->cfg->sweep_slice : 8192;
    if (rl_sweep(l->table, mono_ms(s), slice))
        send_self_after(s, (uint64_t)l->cfg->window_ms, "$rl_cleanup");
    else
        send_self_after(s, 0, "$rl_cleanup");
    return GS_NOREPLY;
}

static void rl_terminate(gs_server *s, const gs_term *reason)
{
    (void)reason;
    limiter *l = gs_data(s);
    if (l == NULL || l->table == NULL || l->cfg->data_dir == NULL)
        return;
    cn_buf b;
    cn_buf_init(&b);
    int rc = rl_save(l->table, mono_ms(s), wall_ms(), &b);
    if (rc == 0)
        rc = gs_state_save(l->cfg->data_dir, l->name, RL_SCHEMA, b.data, b.len);
    if (rc < 0)
        CN_ERROR("rate_limiter", "%s: cannot save state: %s", l->name, cn_strerror(rc));
    cn_buf_free(&b);
}

static void rl_cleanup(gs_server *s)
{
    limiter *l = gs_data(s);
    if (l == NULL)
        return;
    cn_metrics_gauge_remove(cn_metrics_default(), l->clients, l);
    rl_table_free(l->table);
    free(l);
}

/* :sys.get_state shows the configuration and how many clients are tracked. */
static int rl_get_state(gs_server *s, ei_x_buff *out)
{
    limiter *l = gs_data(s);
    ei_x_encode_map_header(out, 3);
    ei_x_encode_atom(out, "max_requests");
    ei_x_encode_ulong(out, l->cfg->max_requests);
    ei_x_encode_atom(out, "window_ms");
    ei_x_encode_longlong(out, l->cfg->window_ms);
    ei_x_encode_atom(out, "clients");
    ei_x_encode_ulong(out, (unsigned long)rl_client_count(l->table));
    return 0;
}

const gs_callbacks rate_limiter_callbacks = {
    .module = "Elixir.RateLimiter",
    .init = rl_init,
    .handle_call = rl_call,
    .handle_info = rl_info,
    .handle_continue = rl_continue,
    .terminate = rl_terminate,
    .cleanup = rl_cleanup,
    .get_state = rl_get_state,
};

int rate_limiter_start(cn_node *node, const rate_limiter_config *cfg, const char *name, cn_proc *parent,
                       gs_server **out)
{
    if (cfg->max_requests == 0 || cfg->window_ms <= 0)
        return -EINVAL;
    limiter *l = cn_calloc(1, sizeof *l);
    l->cfg = cfg;
    snprintf(l->name, sizeof l->name, "%s", name ? name : "rate_limiter");
    gs_options opt = {.name = name, .parent = parent};
    return gs_start(node, &rate_limiter_callbacks, l, &opt, out);
}
