/*
 * A node's life: cn_node_new, cn_node_start (the listener and the epmd
 * registration), cn_node_close, cn_node_free, and its accessors.
 *
 * What a node does between start and close lives in the other files of the
 * core (node_int.h lists them). This file makes the node's own handles, wires
 * the connection layer to the layers above it, and decides when a close is
 * complete: when every handle, the epmd registration, every connection and
 * every --connect target has let go (cn__node_maybe_closed). Only then does
 * the close callback run, always on a later loop turn, and may the node be
 * freed.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/addr.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/node_int.h"

/* What a connection reports upwards: frames to dist_recv.c, its end to route.c. */
static const cn__conn_events dist_events = {cn__dist_recv_frame, cn__route_conn_down};

/* The node's four handles: listener, tick timer, and sched.c's check and idle. */
#define NODE_HANDLES 4

static void handle_closed(uv_handle_t *h)
{
    cn_node *node = h->data;
    assert(node->open_handles > 0);
    node->open_handles--;
    cn__node_maybe_closed(node);
}

static void on_tick(uv_timer_t *t)
{
    cn__conn_tick_all(t->data);
}

/* The config, with its defaults and limits, copied into node. */
static void configure(cn_node *node, const cn_node_config *cfg)
{
    snprintf(node->name, sizeof node->name, "%s", cfg->name);
    snprintf(node->cookie, sizeof node->cookie, "%s", cfg->cookie);
    node->port = cfg->port;
    node->family = cn_addr_family(cfg->family);
    node->net_ticktime = cfg->net_ticktime ? cfg->net_ticktime : 60;
    node->handshake_timeout_ms = cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : 7000;
    node->max_write_queue = cfg->max_write_queue ? cfg->max_write_queue : (size_t)64 << 20;
    node->no_epmd = cfg->no_epmd;
    node->coalesce_us = cfg->coalesce_us > 1000 ? 1000 : cfg->coalesce_us;
    node->busy_poll_us = cfg->busy_poll_us > 1000 ? 1000 : cfg->busy_poll_us;
    node->cast_pause_us = cfg->cast_pause_us > 1000 ? 1000 : cfg->cast_pause_us;
    cn_cpu_watch_init(&node->cpu_watch, cfg->cpu_stat_path ? cn_strdup(cfg->cpu_stat_path) : NULL);
    node->status_cb = cfg->status_cb;
}

int cn_node_new(uv_loop_t *loop, const cn_node_config *cfg, cn_node **out)
{
    if (cfg->name == NULL || cfg->cookie == NULL || strlen(cfg->name) >= 256 || strlen(cfg->cookie) >= 256 ||
        cn_addr_family(cfg->family) < 0)
        return -EINVAL;
    cn_node *node = cn_calloc(1, sizeof *node);
    if (cn_name_split(cfg->name, node->alive, sizeof node->alive, node->host, sizeof node->host) < 0) {
        free(node);
        return -EINVAL;
    }
    if (cfg->tls != NULL) {
        char why[512];
        if (cn_tls_ctx_new(cfg->tls, &node->tls, why, sizeof why) < 0) {
            CN_ERROR("tls", "%s", why);
            free(node);
            return CN_ETLS;
        }
    }
    node->loop = loop;
    configure(node, cfg);
    cn__proc_init(node);
    node->conn_events = &dist_events;
    cn_buf_init(&node->scratch);
    /* Until epmd hands out a creation, a random one keeps our pids distinct. */
    uint32_t r = 0;
    uv_random(NULL, NULL, &r, sizeof r, 0, NULL);
    node->creation = r | 4;

    cn__sched_init(node);
    uv_timer_init(loop, &node->tick_timer);
    node->tick_timer.data = node;
    uv_tcp_init(loop, &node->listener);
    node->listener.data = node;
    node->open_handles = NODE_HANDLES;
    *out = node;
    return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    cn_node *node = server->data;
    if (status < 0) {
        CN_WARN("node", "accept failed: %s", uv_strerror(status));
        return;
    }
    int rc = cn__tcp_accept(node, server);
    if (rc < 0)
        CN_WARN("node", "accept failed: %s", cn_strerror(rc));
}

/*
 * epmd renewed a registration it had dropped. The creation epmd hands out now
 * is not taken: erts keeps the creation of its first registration (OTP's
 * erl_epmd ignores a renewal's), because the creation is what tells this
 * incarnation's pids and references from another's, and this node is the same
 * incarnation: peers hold our pids, we check theirs against it, and a new one
 * would make every process they know unreachable.
 */
static void on_renewed(cn_node *node, int status, uint32_t creation)
{
    if (status == 0) {
        CN_INFO("node", "%s registered with epmd again, port %u (creation %u kept; epmd gave %u)",
                node->name, node->port, node->creation, creation);
    } else {
        node->epmd_open = 0;
        CN_ERROR("node", "epmd gave the name %s to another node while we were unregistered: %s",
                 node->name, cn_strerror(status));
    }
    if (node->status_cb)
        node->status_cb(node, status);
}

static void on_registered(cn_epmd_reg *reg, int status, uint32_t creation)
{
    cn_node *node = reg->data;
    /* A close unregisters first, and then this is never called. */
    assert(!node->closing);
    if (node->epmd_registered) {
        on_renewed(node, status, creation);
        return;
    }
    if (status == 0) {
        node->epmd_registered = 1;
        node->creation = creation;
        CN_INFO("node", "%s registered with epmd, port %u, creation %u", node->name, node->port, creation);
    } else {
        /* A failed registration has closed its handles already. */
        node->epmd_open = 0;
    }
    if (node->ready_cb)
        node->ready_cb(node, status);
}

/*
 * Binds and listens on the configured port of every address of the node's
 * family (0.0.0.0, or :: as inet6_tcp listens, which takes IPv4 peers too
 * where the system allows it); node->port becomes the port bound.
 */
static int listen_on_port(cn_node *node)
{
    struct sockaddr_storage addr;
    cn_addr_any(node->family, node->port, &addr);
    int rc = uv_tcp_bind(&node->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&node->listener, 511, on_connection);
    if (rc < 0)
        return rc;
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&node->listener, (struct sockaddr *)&bound, &blen);
    node->port = cn_addr_port((const struct sockaddr *)&bound);
    return 0;
}

int cn_node_start(cn_node *node, void (*ready_cb)(cn_node *, int))
{
    assert(!node->closing && !node->started);
    node->ready_cb = ready_cb;
    int rc;
    if (!node->no_epmd && (rc = cn_epmd_ensure_running_ex(node->family)) < 0)
        return rc;
    if ((rc = listen_on_port(node)) < 0)
        return rc;
    node->started = 1;
    uint64_t tick = (uint64_t)node->net_ticktime * 1000 / 4;
    uv_timer_start(&node->tick_timer, on_tick, tick, tick);
    if (node->no_epmd) {
        if (ready_cb)
            ready_cb(node, 0);
        return 0;
    }
    node->epmd.data = node;
    rc = cn_epmd_register_ex(node->loop, &node->epmd, node->family, node->alive, node->port, on_registered);
    /* From here on the registration owns handles, whatever its outcome: close must wait for them. */
    node->epmd_open = rc == 0;
    return rc;
}

/* ---- Accessors ---- */

const char *cn_node_name(const cn_node *node) { return node->name; }
uint32_t cn_node_creation(const cn_node *node) { return node->creation; }
uint16_t cn_node_port(const cn_node *node) { return node->port; }
uv_loop_t *cn_node_loop(const cn_node *node) { return node->loop; }
uint64_t cn_node_now(const cn_node *node) { return uv_now(node->loop); }
void cn_node_set_data(cn_node *node, void *data) { node->data = data; }
void *cn_node_data(const cn_node *node) { return node->data; }

void cn_node_add_flush_hook(cn_node *node, cn_node_flush_hook *hook)
{
    DL_APPEND(node->flush_hooks, hook);
}

void cn_node_remove_flush_hook(cn_node *node, cn_node_flush_hook *hook)
{
    DL_DELETE(node->flush_hooks, hook);
    hook->prev = hook->next = NULL;
}

cn_node_flush_hook *cn_node_find_flush_hook(const cn_node *node, void (*cb)(cn_node_flush_hook *hook))
{
    cn_node_flush_hook *h;
    DL_FOREACH(node->flush_hooks, h) {
        if (h->cb == cb)
            return h;
    }
    return NULL;
}

/*
 * A hook that removes itself is safe (the next one is taken first); one added
 * during the walk is appended after the last, and runs from the next turn on.
 */
void cn__node_before_flush(cn_node *node)
{
    cn_node_flush_hook *h, *next, *last = node->flush_hooks ? node->flush_hooks->prev : NULL;
    for (h = node->flush_hooks; h != NULL; h = next) {
        next = h == last ? NULL : h->next;
        h->cb(h);
    }
}

/* Here rather than in proc.c: the origin is the node's state, set by dist_recv.c. */
const char *cn_proc_msg_origin(const cn_proc *p)
{
    const cn_node *node = p->node;
    return node->delivering_from != NULL ? node->delivering_from : node->name;
}

/* The blob a large frame was read into, set by conn.c while the frame is handled. */
cn_blob *cn_proc_msg_blob(const cn_proc *p)
{
    return p->node->delivering_blob;
}

void cn__node_ref(const cn_node *node, uint64_t id, erlang_ref *out)
{
    memset(out, 0, sizeof *out);
    /* A call makes one: memcpy, not snprintf (the name fits: it came from a char[256]). */
    memcpy(out->node, node->name, strlen(node->name) + 1);
    out->len = 3;
    out->n[0] = (unsigned)(id & 0x3ffff);
    out->n[1] = (unsigned)(id >> 18);
    out->n[2] = (unsigned)(id >> 50);
    out->creation = node->creation;
}

void cn_node_make_ref(cn_node *node, erlang_ref *out)
{
    cn__node_ref(node, ++node->next_ref, out);
}

void cn_node_get_stats(const cn_node *node, cn_node_stats *st)
{
    *st = node->stats;
}

/* ---- Close and free ---- */

static void epmd_closed(cn_epmd_reg *reg)
{
    cn_node *node = reg->data;
    assert(node->open_handles > 0);
    node->open_handles--;
    cn__node_maybe_closed(node);
}

/* Unregisters from epmd; the close waits until the registration's handles are closed. */
static void close_epmd(cn_node *node)
{
    if (!node->epmd_open)
        return;
    node->epmd.close_cb = epmd_closed;
    node->open_handles++;
    cn_epmd_unregister(&node->epmd);
    node->epmd_open = 0;
    node->epmd_registered = 0;
}

void cn_node_close(cn_node *node, void (*done_cb)(cn_node *))
{
    assert(!node->closing);
    node->closing = 1;
    node->closed_cb = done_cb;
    /*
     * Write what is queued (replies, exit signals from terminating servers)
     * first. A write that fails here closes its connection, and whatever that
     * sets off already sees a closing node: no retry, no second close.
     */
    cn__node_before_flush(node);
    cn__conn_flush_dirty(node);
    cn__targets_close(node);
    cn__conn_close_all(node);
    close_epmd(node);
    uv_close((uv_handle_t *)&node->tick_timer, handle_closed);
    uv_close((uv_handle_t *)&node->listener, handle_closed);
    cn__sched_close(node, handle_closed);
}

int cn_node_free(cn_node *node)
{
    if (node == NULL)
        return 0;
    if (!node->closed)
        return CN_EBUSY;
    assert(node->all_conns == NULL && node->targets == NULL && node->open_handles == 0);
    cn__proc_free_all(node);
    cn_buf_free(&node->scratch);
    cn_tls_ctx_free(node->tls);
    free((char *)node->cpu_watch.stat_path);
    free(node);
    return 0;
}
