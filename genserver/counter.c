#include <stdlib.h>

#include <errno.h>
#include <string.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "genserver/counter.h"
#include "supervisor/statefile.h"

/* The state file's payload: the value as 8 bytes, big endian. Bump on any change. */
#define COUNTER_SCHEMA 1

typedef struct counter {
    const counter_config *cfg;
    char name[256];
    long long value;
} counter;

/* A saved value wins over the configured initial one: a restart loses nothing. */
static gs_ret counter_init(gs_server *s, const gs_term *arg, gs_result *res)
{
    (void)arg;
    (void)res;
    counter *c = gs_data(s);
    c->value = c->cfg->initial;
    if (c->cfg->data_dir == NULL)
        return GS_OK;
    cn_buf b;
    cn_buf_init(&b);
    int rc = sup_state_load(c->cfg->data_dir, c->name, COUNTER_SCHEMA, &b);
    if (rc == 0 && b.len == 8) {
        c->value = (long long)cn_get_u64(b.data);
        CN_INFO("counter", "%s: restored value %lld", c->name, c->value);
    } else if (rc == 0) {
        CN_WARN("counter", "%s: saved state has %zu bytes, not 8; starting from %lld", c->name, b.len, c->value);
    }
    cn_buf_free(&b);
    return GS_OK;
}

static void counter_terminate(gs_server *s, const gs_term *reason)
{
    (void)reason;
    counter *c = gs_data(s);
    if (c == NULL || c->cfg->data_dir == NULL)
        return;
    unsigned char v[8];
    uint64_t u = (uint64_t)c->value;
    for (int i = 0; i < 8; i++)
        v[i] = (unsigned char)(u >> (56 - 8 * i));
    int rc = sup_state_save(c->cfg->data_dir, c->name, COUNTER_SCHEMA, v, sizeof v);
    if (rc < 0)
        CN_ERROR("counter", "%s: cannot save state in %s: %s", c->name, c->cfg->data_dir, cn_strerror(rc));
}

static gs_ret counter_call(gs_server *s, const gs_term *req, const gs_from *from, gs_result *res)
{
    (void)from;
    counter *c = gs_data(s);
    if (gs_term_is_atom(req, "increment"))
        c->value++;
    else if (gs_term_is_atom(req, "decrement"))
        c->value--;
    else if (!gs_term_is_atom(req, "get_value"))
        return GS_UNKNOWN;
    ei_x_encode_longlong(res->reply, c->value);
    return GS_REPLY;
}

static gs_ret counter_cast(gs_server *s, const gs_term *req, gs_result *res)
{
    (void)res;
    counter *c = gs_data(s);
    if (!gs_term_is_atom(req, "increment"))
        return GS_UNKNOWN;
    c->value++;
    return GS_NOREPLY;
}

static void counter_cleanup(gs_server *s)
{
    free(gs_data(s));
}

static int counter_get_state(gs_server *s, ei_x_buff *out)
{
    counter *c = gs_data(s);
    return ei_x_encode_longlong(out, c->value);
}

static int counter_put_state(gs_server *s, const gs_term *state)
{
    counter *c = gs_data(s);
    long long v;
    int i = state->index;
    if (ei_decode_longlong(state->buf, &i, &v) < 0)
        return -1;
    c->value = v;
    return 0;
}

const gs_callbacks counter_callbacks = {
    .module = "Elixir.Counter",
    .init = counter_init,
    .handle_call = counter_call,
    .handle_cast = counter_cast,
    .terminate = counter_terminate,
    .cleanup = counter_cleanup,
    .get_state = counter_get_state,
    .put_state = counter_put_state,
};

int counter_start(cn_node *node, const counter_config *cfg, const char *name, cn_proc *parent, gs_server **out)
{
    counter *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->cfg = cfg;
    snprintf(c->name, sizeof c->name, "%s", name ? name : "counter");
    gs_options opt = {.name = name, .parent = parent};
    return gs_start(node, &counter_callbacks, c, &opt, out);
}
