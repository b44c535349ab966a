/*
 * The node: listener, EPMD registration, outgoing connections we keep alive,
 * the end-of-turn work (local run queue, batched writes, freeing dead processes)
 * and routing of sends.
 *
 * One loop turn: libuv runs timers, then reads (each read handles every complete
 * frame at once), then our check handle, which delivers queued local messages
 * and writes every connection's output in one write. The idle handle is started
 * whenever work is queued, so the loop polls without blocking until it is done.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"

/* Local messages delivered per turn before I/O gets its turn again. */
#define RUN_QUEUE_BUDGET 4096

static void node_handle_closed(uv_handle_t *h)
{
    cn_node *node = h->data;
    node->open_handles--;
    cn__node_maybe_closed(node);
}

void cn__node_maybe_closed(cn_node *node)
{
    if (!node->closing || node->closed || node->open_handles > 0 || node->all_conns != NULL ||
        node->targets != NULL)
        return;
    node->closed = 1;
    void (*cb)(cn_node *) = node->closed_cb;
    node->closed_cb = NULL;
    if (cb)
        cb(node);
}

static void idle_noop(uv_idle_t *h)
{
    (void)h;
}

void cn__node_wake(cn_node *node)
{
    /* A closing node's idle handle is being closed and must not start again. */
    if (!node->closing)
        uv_idle_start(&node->idle, idle_noop);
}

/*
 * A turn that served at least this many requests comes from busy peers: the
 * node pauses (coalesce) instead of polling on. Smaller turns poll on (busy
 * poll), since a pause would only add its length to the callers' latency.
 */
#define COALESCE_MIN_BATCH 8

/*
 * Interrupt moderation. When one turn handled requests from many callers at
 * once, the peers are sending faster than we wake: pausing a little before the
 * next poll lets more requests arrive per read, so each read, write and wakeup
 * (most of the CPU a call costs, on loopback mostly kernel TCP work) serves
 * many calls, and the CPU goes to the callers meanwhile. The pause comes after
 * the turn's writes, so no reply waits for it.
 */
static int will_pause(const cn_node *node, uint64_t handled)
{
    return node->coalesce_us > 0 && handled >= COALESCE_MIN_BATCH;
}

static void coalesce(cn_node *node, uint64_t handled)
{
    if (!will_pause(node, handled))
        return;
    node->stats.pauses++;
    struct timespec ts = {0, (long)node->coalesce_us * 1000};
    nanosleep(&ts, NULL);
}

/*
 * Busy polling, as the BEAM's schedulers spin before they sleep (+sbwt). Where
 * waking a sleeping process costs tens of microseconds (an inter-processor
 * interrupt, dearer still in a virtual machine: 42 us for a pipe round trip
 * across cores on the machines this was measured on, 5 us on one core), the
 * next request of a caller that is waiting for its reply is better met by a
 * loop that is still polling. After a turn that served requests and does not
 * pause, the loop polls with a zero timeout for busy_poll_us; a
 * quiet node then sleeps in epoll as before.
 */
static int keep_polling(cn_node *node, uint64_t handled)
{
    if (node->busy_poll_us == 0)
        return 0;
    uint64_t now = uv_hrtime();
    if (will_pause(node, handled))
        node->spin_until = 0;
    else if (handled > 0)
        node->spin_until = now + (uint64_t)node->busy_poll_us * 1000;
    if (now >= node->spin_until)
        return 0;
    node->stats.polls++;
    return 1;
}

static void on_check(uv_check_t *h)
{
    cn_node *node = h->data;
    cn__run_queue(node, RUN_QUEUE_BUDGET);
    cn_conn *c;
    while ((c = node->dirty) != NULL) {
        node->dirty = c->dirty_next;
        c->dirty = 0;
        cn__conn_flush(c);
    }
    cn__free_zombies(node);
    uint64_t handled = node->stats.messages_in - node->coalesce_mark;
    node->coalesce_mark = node->stats.messages_in;
    if (keep_polling(node, handled) || node->rq_head != NULL || node->dirty != NULL)
        cn__node_wake(node);
    else
        uv_idle_stop(&node->idle);
    coalesce(node, handled);
}

static void on_tick(uv_timer_t *t)
{
    cn__conn_tick_all(t->data);
}

static int split_name(const char *name, char *alive, char *host)
{
    const char *at = strchr(name, '@');
    if (at == NULL || at == name || at[1] == '\0' || strchr(at + 1, '@') != NULL)
        return -EINVAL;
    size_t an = (size_t)(at - name), hn = strlen(at + 1);
    if (an >= 256 || hn >= 256)
        return -EINVAL;
    memcpy(alive, name, an);
    alive[an] = '\0';
    memcpy(host, at + 1, hn + 1);
    return 0;
}

int cn_node_new(uv_loop_t *loop, const cn_node_config *cfg, cn_node **out)
{
    if (cfg->name == NULL || cfg->cookie == NULL || strlen(cfg->name) >= 256 || strlen(cfg->cookie) >= 256)
        return -EINVAL;
    cn_node *node = calloc(1, sizeof *node);
    if (node == NULL)
        return -ENOMEM;
    if (split_name(cfg->name, node->alive, node->host) < 0) {
        free(node);
        return -EINVAL;
    }
    node->loop = loop;
    snprintf(node->name, sizeof node->name, "%s", cfg->name);
    snprintf(node->cookie, sizeof node->cookie, "%s", cfg->cookie);
    node->port = cfg->port;
    node->net_ticktime = cfg->net_ticktime ? cfg->net_ticktime : 60;
    node->handshake_timeout_ms = cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : 7000;
    node->max_write_queue = cfg->max_write_queue ? cfg->max_write_queue : (size_t)64 << 20;
    node->no_epmd = cfg->no_epmd;
    node->coalesce_us = cfg->coalesce_us > 1000 ? 1000 : cfg->coalesce_us;
    node->busy_poll_us = cfg->busy_poll_us > 1000 ? 1000 : cfg->busy_poll_us;
    node->next_num = 1;
    /* Until epmd hands out a creation, a random one keeps our pids distinct. */
    uint32_t r = 0;
    uv_random(NULL, NULL, &r, sizeof r, 0, NULL);
    node->creation = r | 4;

    uv_check_init(loop, &node->check);
    node->check.data = node;
    uv_idle_init(loop, &node->idle);
    node->idle.data = node;
    uv_timer_init(loop, &node->tick_timer);
    node->tick_timer.data = node;
    uv_tcp_init(loop, &node->listener);
    node->listener.data = node;
    node->open_handles = 4;
    uv_check_start(&node->check, on_check);
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
    int rc = cn__conn_accept_tcp(node, server);
    if (rc < 0)
        CN_WARN("node", "accept failed: %s", cn_strerror(rc));
}

static void on_registered(cn_epmd_reg *reg, int status, uint32_t creation)
{
    cn_node *node = reg->data;
    if (node->closing)
        return;
    if (status == 0) {
        node->epmd_registered = 1;
        node->creation = creation;
        CN_INFO("node", "%s registered with epmd, port %u, creation %u", node->name, node->port, creation);
    }
    if (node->ready_cb)
        node->ready_cb(node, status);
}

int cn_node_start(cn_node *node, void (*ready_cb)(cn_node *, int))
{
    node->ready_cb = ready_cb;
    int rc;
    if (!node->no_epmd && (rc = cn_epmd_ensure_running()) < 0)
        return rc;
    struct sockaddr_in addr;
    uv_ip4_addr("0.0.0.0", node->port, &addr);
    rc = uv_tcp_bind(&node->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&node->listener, 511, on_connection);
    if (rc < 0)
        return rc;
    struct sockaddr_in bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&node->listener, (struct sockaddr *)&bound, &blen);
    node->port = ntohs(bound.sin_port);
    uint64_t tick = (uint64_t)node->net_ticktime * 1000 / 4;
    uv_timer_start(&node->tick_timer, on_tick, tick, tick);
    if (node->no_epmd) {
        if (ready_cb)
            ready_cb(node, 0);
        return 0;
    }
    node->epmd.data = node;
    rc = cn_epmd_register(node->loop, &node->epmd, node->alive, node->port, on_registered);
    /* From here on the registration owns handles, whatever its outcome: close must unregister. */
    node->epmd_started = rc == 0;
    return rc;
}

/* ---- Nodes we keep connecting to ---- */

static void target_attempt(uv_timer_t *timer);

void cn__target_retry(cn_target *t)
{
    if (t->node->closing)
        return;
    t->backoff_ms = t->backoff_ms ? t->backoff_ms * 2 : 100;
    if (t->backoff_ms > 5000)
        t->backoff_ms = 5000;
    uv_timer_start(&t->retry, target_attempt, t->backoff_ms, 0);
}

static void target_found(void *data, int status, uint16_t port, int highvsn)
{
    cn_target *t = data;
    cn_node *node = t->node;
    t->looking_up = 0;
    if (node->closing) {
        cn__node_maybe_closed(node);
        return;
    }
    if (status < 0) {
        CN_DEBUG("node", "%s is not registered with epmd yet: %s", t->name, cn_strerror(status));
        cn__target_retry(t);
        return;
    }
    if (highvsn < CN_DIST_VSN_HIGH) {
        CN_ERROR("node", "%s speaks distribution version %d only; we need 6 (OTP 23+)", t->name, highvsn);
        cn__target_retry(t);
        return;
    }
    const char *host = strchr(t->name, '@') + 1;
    struct sockaddr_in addr;
    if (uv_ip4_addr(host, port, &addr) != 0) {
        uv_getaddrinfo_t req;
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
        if (uv_getaddrinfo(node->loop, &req, NULL, host, NULL, &hints) != 0 || req.addrinfo == NULL) {
            CN_WARN("node", "cannot resolve the host of %s", t->name);
            cn__target_retry(t);
            return;
        }
        memcpy(&addr, req.addrinfo->ai_addr, sizeof addr);
        addr.sin_port = htons(port);
        uv_freeaddrinfo(req.addrinfo);
    }
    if (cn__conn_connect_tcp(node, t, (const struct sockaddr *)&addr) < 0)
        cn__target_retry(t);
}

static void target_attempt(uv_timer_t *timer)
{
    cn_target *t = timer->data;
    cn_node *node = t->node;
    if (node->closing || t->conn != NULL || t->looking_up)
        return;
    if (cn__conn_find(node, t->name) != NULL) {
        /* Connected by the peer's own initiative; look again later. */
        t->backoff_ms = 2500;
        cn__target_retry(t);
        return;
    }
    const char *at = strchr(t->name, '@');
    char alive[256];
    memcpy(alive, t->name, (size_t)(at - t->name));
    alive[at - t->name] = '\0';
    t->looking_up = 1;
    int rc = cn_epmd_lookup(node->loop, at + 1, alive, target_found, t);
    if (rc < 0) {
        t->looking_up = 0;
        cn__target_retry(t);
    }
}

int cn_node_connect(cn_node *node, const char *peer)
{
    char alive[256], host[256];
    if (strlen(peer) >= 256 || split_name(peer, alive, host) < 0)
        return -EINVAL;
    cn_target *t = calloc(1, sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    t->node = node;
    snprintf(t->name, sizeof t->name, "%s", peer);
    uv_timer_init(node->loop, &t->retry);
    t->retry.data = t;
    t->next = node->targets;
    node->targets = t;
    uv_timer_start(&t->retry, target_attempt, 0, 0);
    return 0;
}

/* ---- Sending ---- */

int cn_send(cn_proc *from, const erlang_pid *to, const char *msg, size_t len)
{
    cn_node *node = from->node;
    if (cn__is_local(node, to)) {
        if (to->creation != node->creation)
            return CN_ENOPROC;
        cn__local_enqueue(node, to->num, from->num, CN_LMSG_MESSAGE, msg, len);
        return 0;
    }
    cn_conn *c = cn__conn_find(node, to->node);
    if (c == NULL) {
        CN_DEBUG("node", "message to %s dropped: not connected", to->node);
        return CN_ENOCONN;
    }
    erlang_pid self;
    cn_proc_pid(from, &self);
    return cn__dist_send(c, &self, to, msg, len);
}

int cn_send_name(cn_proc *from, const char *name, const char *nodename, const char *msg, size_t len)
{
    cn_node *node = from->node;
    if (nodename == NULL || strcmp(nodename, node->name) == 0) {
        cn_proc *p = cn_proc_whereis(node, name);
        if (p == NULL)
            return CN_ENOPROC;
        cn__local_enqueue(node, p->num, from->num, CN_LMSG_MESSAGE, msg, len);
        return 0;
    }
    cn_conn *c = cn__conn_find(node, nodename);
    if (c == NULL)
        return CN_ENOCONN;
    erlang_pid self;
    cn_proc_pid(from, &self);
    return cn__dist_reg_send(c, &self, name, msg, len);
}

int cn_send_alias(cn_proc *from, const erlang_ref *alias, const erlang_pid *fallback, const char *msg, size_t len)
{
    cn_node *node = from->node;
    cn_conn *c = cn__conn_find(node, fallback->node);
    if (c != NULL && (c->peer_flags & DFLAG_ALIAS)) {
        erlang_pid self;
        cn_proc_pid(from, &self);
        return cn__dist_alias_send(c, &self, alias, msg, len);
    }
    return cn_send(from, fallback, msg, len);
}

/* ---- Accessors and shutdown ---- */

const char *cn_node_name(const cn_node *node) { return node->name; }
uint32_t cn_node_creation(const cn_node *node) { return node->creation; }
uint16_t cn_node_port(const cn_node *node) { return node->port; }
uv_loop_t *cn_node_loop(const cn_node *node) { return node->loop; }
uint64_t cn_node_now(const cn_node *node) { return uv_now(node->loop); }

void cn_node_make_ref(cn_node *node, erlang_ref *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->node, sizeof out->node, "%s", node->name);
    out->len = 3;
    node->next_ref++;
    out->n[0] = (unsigned)(node->next_ref & 0x3ffff);
    out->n[1] = (unsigned)(node->next_ref >> 18);
    out->n[2] = (unsigned)(node->next_ref >> 50);
    out->creation = node->creation;
}

void cn_node_get_stats(const cn_node *node, cn_node_stats *st)
{
    *st = node->stats;
}

static void target_closed(uv_handle_t *h)
{
    cn_target *t = h->data;
    cn_node *node = t->node;
    for (cn_target **pp = &node->targets; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    free(t);
    cn__node_maybe_closed(node);
}

void cn_node_close(cn_node *node, void (*done_cb)(cn_node *))
{
    assert(!node->closing);
    node->closed_cb = done_cb;
    /* Write what is queued (replies, exit signals from terminating servers) first. */
    for (cn_conn *c = node->all_conns; c; c = c->all_next)
        cn__conn_flush(c);
    node->closing = 1;
    for (cn_target *t = node->targets; t; t = t->next) {
        if (t->looking_up)
            CN_DEBUG("node", "an epmd lookup for %s is still running", t->name);
        uv_close((uv_handle_t *)&t->retry, target_closed);
    }
    cn_conn *c = node->all_conns;
    while (c) {
        cn_conn *next = c->all_next;
        if (c->state != CN_CONN_CLOSING)
            cn__conn_close(c, c->state == CN_CONN_UP ? "node shutting down" : NULL);
        c = next;
    }
    if (node->epmd_started) {
        cn_epmd_unregister(&node->epmd);
        node->epmd_started = 0;
        node->epmd_registered = 0;
    }
    uv_close((uv_handle_t *)&node->tick_timer, node_handle_closed);
    uv_close((uv_handle_t *)&node->listener, node_handle_closed);
    uv_close((uv_handle_t *)&node->idle, node_handle_closed);
    uv_close((uv_handle_t *)&node->check, node_handle_closed);
}

int cn_node_free(cn_node *node)
{
    if (node == NULL)
        return 0;
    if (!node->closed)
        return CN_EBUSY;
    while (node->rq_head) {
        cn_local_msg *m = node->rq_head;
        node->rq_head = m->next;
        free(m);
    }
    cn__free_zombies(node);
    /* The name table lives inside the processes: clear it before they are freed. */
    HASH_CLEAR(hh_name, node->names);
    cn_proc *p, *tmp;
    HASH_ITER(hh, node->procs, p, tmp) {
        HASH_DELETE(hh, node->procs, p);
        free(p);
    }
    while (node->free_monitors) {
        cn_monitor *m = node->free_monitors;
        node->free_monitors = m->t_next;
        free(m);
    }
    free(node);
    return 0;
}

void cn_node_set_data(cn_node *node, void *data) { node->data = data; }
void *cn_node_data(const cn_node *node) { return node->data; }
