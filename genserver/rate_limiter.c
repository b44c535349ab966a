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

/*
 * The state file's payload is rl_save's image; schema 2 puts the journal's
 * lineage and generation before it, schema 1 files are still read. Bump when
 * the image changes.
 */
#define RL_SCHEMA 2
#define RL_LEGACY_SCHEMA 1

/* A journal record: 'C', the wall-clock ms of the accepted request, the client id's term. */
#define REC_CHECK 'C'
#define REC_HEAD 9

typedef struct limiter {
    const rate_limiter_config *cfg;
    char name[256];
    gs_server *server;
    rl_table *table;
    int sweeping;
    gs_journal *journal;
    cn_buf rec;             /* the record being built, kept between calls */
    int64_t replay_wall, replay_mono, replay_last;  /* the clocks while replaying */
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
    l->server = s;
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

static int rl_jsave(void *data, cn_buf *out)
{
    limiter *l = data;
    return rl_save(l->table, mono_ms(l->server), wall_ms(), out);
}

static int rl_jload(void *data, const char *image, size_t len, int legacy)
{
    (void)legacy;
    limiter *l = data;
    int rc = rl_load(l->table, image, len, l->replay_mono, l->replay_wall);
    if (rc < 0)
        CN_WARN("rate_limiter", "%s: saved state unreadable (%s); starting fresh", l->name, cn_strerror(rc));
    else
        CN_INFO("rate_limiter", "%s: restored %zu clients", l->name, rl_client_count(l->table));
    return rc;
}

/*
 * An accepted request again, at its time on this incarnation's clock (as
 * rl_load converts): the table needs times that do not go back, and none later
 * than now.
 */
static int rl_jreplay(void *data, const char *rec, size_t len)
{
    limiter *l = data;
    if (len <= REC_HEAD || rec[0] != REC_CHECK)
        return CN_ECORRUPT;
    int64_t t = l->replay_mono - (l->replay_wall - (int64_t)cn_get_u64(rec + 1));
    if (t < l->replay_last)
        t = l->replay_last;
    if (t > l->replay_mono)
        t = l->replay_mono;
    l->replay_last = t;
    uint32_t remaining;
    int rc = rl_check_n(l->table, rec + REC_HEAD, len - REC_HEAD, 0, t, &remaining);
    return rc < 0 ? rc : 0;
}

static const gs_journal_ops rl_journal_ops = {
    .schema = RL_SCHEMA,
    .legacy_schema = RL_LEGACY_SCHEMA,
    .save = rl_jsave,
    .load = rl_jload,
    .replay = rl_jreplay,
};

/* Recovery may take a while for a million clients: calls wait, in order, until it is done. */
static gs_ret rl_continue(gs_server *s, const gs_term *cont, gs_result *res)
{
    limiter *l = gs_data(s);
    if (!gs_term_is_atom(cont, "load"))
        return GS_UNKNOWN;
    l->replay_mono = mono_ms(s);
    l->replay_wall = wall_ms();
    l->replay_last = INT64_MIN;
    gs_journal_config jc = {.dir = l->cfg->data_dir, .name = l->name, .mode = l->cfg->durability,
                            .snapshot_bytes = l->cfg->snapshot_bytes, .handover = l->cfg->handover};
    if (gs_journal_open(cn_node_loop(gs_node(s)), &jc, &rl_journal_ops, l, &l->journal) < 0) {
        ei_x_encode_atom(res->reason, "bad_config");
        return GS_STOP;
    }
    gs_set_journal(s, l->journal);
    return GS_NOREPLY;
}

/* Journals an accepted request: its wall-clock time and the id term at b[i]. */
static void journal_check(limiter *l, const char *b, int i)
{
    if (l->journal == NULL)
        return;
    int e = i;
    cn_term_skip_trusted(b, &e);
    cn_buf_reset(&l->rec);
    cn_buf_put_u8(&l->rec, REC_CHECK);
    cn_buf_put_u64(&l->rec, (uint64_t)wall_ms());
    cn_buf_append(&l->rec, b + i, (size_t)(e - i));
    gs_journal_append(l->journal, l->rec.data, l->rec.len);
    cn_buf_shrink(&l->rec, CN_BUF_KEEP);
}

static void encode_error(ei_x_buff *x, const char *what)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "error");
    ei_x_encode_atom(x, what);
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
    if (l->journal != NULL && gs_journal_ready(l->journal) < 0) {
        encode_error(res->reply, GS_NOT_DURABLE);
        return GS_REPLY;
    }
    uint32_t remaining = 0;
    int rc = rl_check(l->table, b, i, mono_ms(s), &remaining);
    if (rc < 0) {
        CN_ERROR("rate_limiter", "%s: check_rate failed: %s", l->name, cn_strerror(rc));
        encode_error(res->reply, rc == -ENOMEM ? "out_of_memory" : "bad_client_id");
        return GS_REPLY;
    }
    if (rc == 0) {
        encode_error(res->reply, "rate_limited");
        return GS_REPLY;
    }
    journal_check(l, b, i);
    ei_x_encode_tuple_header(res->reply, 2);
    ei_x_encode_atom(res->reply, "ok");
    ei_x_encode_ulong(res->reply, remaining);
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

/* The final snapshot; when it fails the journal hands the windows to the next incarnation. */
static void rl_terminate(gs_server *s, const gs_term *reason)
{
    (void)reason;
    limiter *l = gs_data(s);
    if (l == NULL || l->journal == NULL)
        return;
    gs_set_journal(s, NULL);
    int rc = gs_journal_close(l->journal, 1);
    l->journal = NULL;
    if (rc < 0)
        CN_ERROR("rate_limiter", "%s: cannot save state: %s", l->name, cn_strerror(rc));
}

static void rl_cleanup(gs_server *s)
{
    limiter *l = gs_data(s);
    if (l == NULL)
        return;
    if (l->journal != NULL)
        gs_journal_close(l->journal, 0);
    cn_metrics_gauge_remove(cn_metrics_default(), l->clients, l);
    rl_table_free(l->table);
    cn_buf_free(&l->rec);
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
    if (cfg->max_requests == 0 || cfg->window_ms <= 0 || cfg->window_ms > RL_MAX_WINDOW_MS)
        return -EINVAL;
    limiter *l = cn_calloc(1, sizeof *l);
    l->cfg = cfg;
    cn_buf_init(&l->rec);
    snprintf(l->name, sizeof l->name, "%s", name ? name : "rate_limiter");
    gs_options opt = {.name = name, .parent = parent};
    return gs_start(node, &rate_limiter_callbacks, l, &opt, out);
}
