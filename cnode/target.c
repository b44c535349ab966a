/*
 * --connect targets: the nodes this node keeps connecting to while it lives
 * (cn_node_connect).
 *
 * One attempt: ask the epmd on the target's host for the target's port
 * (epmd.c), turn the host into an address of the node's family (a literal at
 * once, "127.0.0.1" or with inet6_tcp "::1"; a name in libuv's thread pool, so
 * the loop never blocks), and dial (tcp.c). A failed
 * attempt, or a connection that ends, tries again after a backoff of 100 ms
 * doubling to 5 s; a connection that had come up starts again at 100 ms.
 *
 * Each target is in exactly one state; the request of that state (lookup,
 * resolution) or the connection holds a pointer to it. When the node closes,
 * a target cancels its request and is freed only once the request's callback
 * has run and its retry timer has closed, so no callback ever meets a freed
 * target. Its connection, if any, is closed with all the others and tells the
 * target at once (conn_lost).
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
#include "cnode/protocol.h"

enum target_state {
    T_WAITING,      /* the retry timer will start the next attempt */
    T_LOOKUP,       /* asking epmd for the port */
    T_RESOLVING,    /* getaddrinfo for the host */
    T_CONNECTED     /* a connection exists (dialing, handshake or up) */
};

struct cn_target {
    cn_node *node;
    char name[256];
    int state;
    unsigned backoff_ms;
    uv_timer_t retry;
    int timer_open;
    cn_epmd_lookup_req *lookup;     /* T_LOOKUP */
    uv_getaddrinfo_t gai;           /* T_RESOLVING */
    uint16_t port;                  /* the port epmd gave, while resolving */
    cn_target *next, *prev;         /* node->targets */
};

static void attempt(uv_timer_t *timer);

static void retry(cn_target *t)
{
    assert(t->state == T_WAITING);
    if (t->node->closing)
        return;
    t->backoff_ms = t->backoff_ms ? t->backoff_ms * 2 : 100;
    if (t->backoff_ms > 5000)
        t->backoff_ms = 5000;
    uv_timer_start(&t->retry, attempt, t->backoff_ms, 0);
}

/* A closing node's target goes once nothing refers to it any more. */
static void maybe_free(cn_target *t)
{
    cn_node *node = t->node;
    assert(node->closing);
    if (t->timer_open || t->state != T_WAITING)
        return;
    DL_DELETE(node->targets, t);
    free(t);
    cn__node_maybe_closed(node);
}

static void conn_lost(cn_conn *c, void *arg, int was_up)
{
    (void)c;
    cn_target *t = arg;
    assert(t->state == T_CONNECTED);
    t->state = T_WAITING;
    if (was_up)
        t->backoff_ms = 0;
    retry(t);
}

static void dial(cn_target *t, const struct sockaddr_storage *addr)
{
    t->state = T_CONNECTED;
    /* An immediate failure comes back through conn_lost, before this returns. */
    cn__tcp_connect(t->node, (const struct sockaddr *)addr, t->name, conn_lost, t);
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    cn_target *t = req->data;
    assert(t->state == T_RESOLVING);
    t->state = T_WAITING;
    if (t->node->closing || status < 0 || res == NULL) {
        uv_freeaddrinfo(res);
        if (t->node->closing) {
            maybe_free(t);
            return;
        }
        CN_WARN("node", "cannot resolve the host of %s: %s", t->name, uv_strerror(status));
        retry(t);
        return;
    }
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    memcpy(&addr, res->ai_addr, res->ai_addrlen < sizeof addr ? res->ai_addrlen : sizeof addr);
    cn_addr_set_port(&addr, t->port);
    uv_freeaddrinfo(res);
    dial(t, &addr);
}

/* Dials a literal of the node's family at once; resolves a name first, off the loop. */
static void resolve(cn_target *t, uint16_t port)
{
    const char *host = strchr(t->name, '@') + 1;
    struct sockaddr_storage addr;
    if (cn_addr_literal(t->node->family, host, port, &addr) == 0) {
        dial(t, &addr);
        return;
    }
    struct addrinfo hints = {.ai_family = t->node->family, .ai_socktype = SOCK_STREAM};
    t->port = port;
    t->gai.data = t;
    t->state = T_RESOLVING;
    int rc = uv_getaddrinfo(t->node->loop, &t->gai, resolved, host, NULL, &hints);
    if (rc < 0) {
        t->state = T_WAITING;
        CN_WARN("node", "cannot resolve the host of %s: %s", t->name, uv_strerror(rc));
        retry(t);
    }
}

static void found(void *data, int status, uint16_t port, int highvsn)
{
    cn_target *t = data;
    assert(t->state == T_LOOKUP);
    t->lookup = NULL;
    t->state = T_WAITING;
    if (t->node->closing) {
        maybe_free(t);
        return;
    }
    if (status < 0) {
        CN_DEBUG("node", "%s is not registered with epmd yet: %s", t->name, cn_strerror(status));
        retry(t);
        return;
    }
    if (highvsn < CN_DIST_VSN_HIGH) {
        CN_ERROR("node", "%s speaks distribution version %d only; we need 6 (OTP 23+)", t->name, highvsn);
        retry(t);
        return;
    }
    resolve(t, port);
}

static void attempt(uv_timer_t *timer)
{
    cn_target *t = timer->data;
    cn_node *node = t->node;
    /* The timer runs only while waiting, and is closed with the node. */
    assert(t->state == T_WAITING && !node->closing);
    if (cn__conn_find(node, t->name) != NULL) {
        /* Connected by the peer's own initiative; look again later. */
        t->backoff_ms = 2500;
        retry(t);
        return;
    }
    char alive[256], host[256];
    int rc = cn_name_split(t->name, alive, sizeof alive, host, sizeof host);
    assert(rc == 0); /* cn_node_connect checked the name */
    t->state = T_LOOKUP;
    rc = cn_epmd_lookup_ex(node->loop, node->family, host, alive, found, t, &t->lookup);
    if (rc < 0) {
        t->state = T_WAITING;
        retry(t);
    }
}

int cn_node_connect(cn_node *node, const char *peer)
{
    assert(!node->closing);
    char alive[256], host[256];
    if (strlen(peer) >= 256 || cn_name_split(peer, alive, sizeof alive, host, sizeof host) < 0)
        return -EINVAL;
    cn_target *t = cn_calloc(1, sizeof *t);
    t->node = node;
    snprintf(t->name, sizeof t->name, "%s", peer);
    t->state = T_WAITING;
    uv_timer_init(node->loop, &t->retry);
    t->retry.data = t;
    t->timer_open = 1;
    DL_APPEND(node->targets, t);
    uv_timer_start(&t->retry, attempt, 0, 0);
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    cn_target *t = h->data;
    t->timer_open = 0;
    maybe_free(t);
}

void cn__targets_close(cn_node *node)
{
    assert(node->closing);
    cn_target *t;
    DL_FOREACH(node->targets, t) {
        if (t->state == T_LOOKUP)
            cn_epmd_lookup_cancel(t->lookup);
        else if (t->state == T_RESOLVING)
            uv_cancel((uv_req_t *)&t->gai);
        uv_close((uv_handle_t *)&t->retry, timer_closed);
    }
}
