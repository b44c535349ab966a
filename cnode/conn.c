/*
 * Distribution connections: bytes in, frames out.
 *
 * Reading: libuv reads straight into the connection's buffer (rbuf), as much as
 * the socket has. Every complete frame in the buffer is handled in place, without
 * a copy, and what is left (a partial frame) moves to the front for the next read.
 *
 * Writing: frames are appended to wbuf during a loop turn; at the end of the turn
 * (the node's check handle) each connection with output does one write of
 * everything queued. While a write is in flight new frames collect in wbuf, and the
 * two buffers swap when it completes, so buffers are reused and never copied.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"

#define READ_CHUNK (64 * 1024)
/* A frame larger than this is taken as garbage rather than buffered. */
#define MAX_FRAME (256u * 1024 * 1024)

static uint32_t random32(void *ctx)
{
    (void)ctx;
    uint32_t v;
    if (uv_random(NULL, NULL, &v, sizeof v, 0, NULL) != 0)
        v = (uint32_t)rand();
    return v;
}

cn_conn *cn_conn_new(cn_node *node, const cn_transport *tp, int outgoing)
{
    cn_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->node = node;
    c->tp = tp;
    c->outgoing = outgoing;
    c->state = outgoing ? CN_CONN_CONNECTING : CN_CONN_HANDSHAKE;
    cn_buf_init(&c->rbuf);
    cn_buf_init(&c->wbuf);
    cn_buf_init(&c->wflight);
    c->last_read = c->last_write = uv_now(node->loop);
    c->all_next = node->all_conns;
    if (node->all_conns)
        node->all_conns->all_prev = c;
    node->all_conns = c;
    node->stats.pending++;
    return c;
}

cn_conn *cn__conn_find(cn_node *node, const char *peer_name)
{
    cn_conn *c = NULL;
    HASH_FIND_STR(node->conns, peer_name, c);
    return c;
}

/*
 * The accepting side's answer once it knows who is calling. A simultaneous
 * connect (we are dialing the same node) is settled as erts does: the node with
 * the greater name keeps its own attempt.
 */
static const char *status_for(void *ctx, const char *peer)
{
    cn_conn *self = ctx;
    cn_node *node = self->node;
    if (strcmp(peer, node->name) == 0)
        return "not_allowed";
    for (cn_conn *c = node->all_conns; c; c = c->all_next) {
        if (c == self || !c->outgoing || c->state == CN_CONN_CLOSING || c->state == CN_CONN_UP)
            continue;
        if (c->target && strcmp(c->target->name, peer) == 0) {
            if (strcmp(node->name, peer) > 0)
                return "nok";
            cn__conn_close(c, "simultaneous connect: the peer's attempt wins");
            return "ok_simultaneous";
        }
    }
    return "ok";
}

void cn_conn_start_handshake(cn_conn *c, const char *expect_peer)
{
    cn_node *node = c->node;
    cn_hs_config cfg = {
        .role = c->outgoing ? CN_HS_CONNECT : CN_HS_ACCEPT,
        .our_name = node->name,
        .cookie = node->cookie,
        .our_flags = CN_DFLAGS,
        .our_creation = node->creation,
        .random32 = random32,
        .random_ctx = NULL,
        .status_for = status_for,
        .status_ctx = c,
        .expect_peer = expect_peer,
        /* We only dial a node we have no live connection to, so a stale one on its side may go. */
        .alive_continue = 1,
    };
    cn_hs_init(&c->hs, &cfg);
    c->state = CN_CONN_HANDSHAKE;
    if (c->outgoing) {
        if (cn_hs_start(&c->hs, &c->wbuf) < 0) {
            cn__conn_close(c, "out of memory");
            return;
        }
        cn__conn_mark_dirty(c);
    }
}

static void conn_up(cn_conn *c)
{
    cn_node *node = c->node;
    const char *peer = c->hs.peer_name;
    snprintf(c->peer_name, sizeof c->peer_name, "%s", peer);
    c->peer_flags = c->hs.peer_flags;
    c->peer_creation = c->hs.peer_creation;

    cn_conn *old = cn__conn_find(node, c->peer_name);
    if (old != NULL)
        cn__conn_close(old, "replaced by a new connection from the same node");
    c->state = CN_CONN_UP;
    HASH_ADD_STR(node->conns, peer_name, c);
    node->stats.pending--;
    node->stats.connections++;
    if (c->handles_open && uv_is_active((uv_handle_t *)&c->hs_timer))
        uv_timer_stop(&c->hs_timer);
    c->last_read = c->last_write = uv_now(node->loop);
    if (c->target)
        c->target->backoff_ms = 0;
    CN_INFO("conn", "connected to %s (%s)%s", c->peer_name, c->addr,
            (c->peer_flags & DFLAG_ALIAS) ? "" : ", peer has no ALIAS: replies go to pids");
}

/* Cuts and handles every complete frame in rbuf; keeps a partial one for later. */
static void conn_process(cn_conn *c)
{
    size_t off = 0;
    if (c->state == CN_CONN_HANDSHAKE) {
        size_t before = c->wbuf.len;
        int n = cn_hs_feed(&c->hs, c->rbuf.data, c->rbuf.len, &c->wbuf);
        if (c->wbuf.len != before)
            cn__conn_mark_dirty(c);
        if (n < 0) {
            const char *who = c->hs.peer_name;
            CN_WARN("handshake", "refused %s (%s): %s", who && *who ? who : "unknown node", c->addr,
                    cn_hs_error(&c->hs));
            /* Let the refusal status reach the peer before the socket goes. */
            cn__conn_flush(c);
            cn__conn_close(c, NULL);
            return;
        }
        off = (size_t)n;
        if (!cn_hs_done(&c->hs)) {
            cn_buf_consume(&c->rbuf, off);
            return;
        }
        conn_up(c);
    }
    while (c->state == CN_CONN_UP) {
        size_t avail = c->rbuf.len - off;
        if (avail < 4)
            break;
        uint32_t flen = cn_get_u32(c->rbuf.data + off);
        if (flen == 0) {
            off += 4; /* a tick */
            continue;
        }
        if (flen > MAX_FRAME) {
            CN_WARN("conn", "%s sent a frame of %u bytes; dropping the connection", c->peer_name, flen);
            cn__conn_close(c, NULL);
            return;
        }
        if (avail - 4 < flen)
            break;
        c->node->stats.frames_in++;
        int rc = cn__dist_handle_frame(c, c->rbuf.data + off + 4, flen);
        off += 4 + (size_t)flen;
        if (rc < 0) {
            CN_WARN("dist", "malformed frame from %s: %s; dropping the connection", c->peer_name,
                    cn_strerror(rc));
            cn__conn_close(c, NULL);
            return;
        }
    }
    if (c->state != CN_CONN_CLOSING)
        cn_buf_consume(&c->rbuf, off);
}

void cn_conn_feed(cn_conn *c, const char *data, size_t len)
{
    if (c->state == CN_CONN_CLOSING)
        return;
    if (cn_buf_append(&c->rbuf, data, len) < 0) {
        cn__conn_close(c, "out of memory");
        return;
    }
    c->last_read = uv_now(c->node->loop);
    conn_process(c);
}

void cn__conn_mark_dirty(cn_conn *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    c->dirty_next = c->node->dirty;
    c->node->dirty = c;
    cn__node_wake(c->node);
}

void cn__conn_flush(cn_conn *c)
{
    if (c->writing || c->wbuf.len == 0 || c->state == CN_CONN_CLOSING || c->state == CN_CONN_CONNECTING)
        return;
    cn_buf tmp = c->wflight;
    c->wflight = c->wbuf;
    c->wbuf = tmp;
    c->wbuf.len = 0;
    c->writing = 1;
    c->last_write = uv_now(c->node->loop);
    c->node->stats.writes++;
    int rc = c->tp->write(c, c->wflight.data, c->wflight.len);
    if (rc < 0) {
        c->writing = 0;
        CN_WARN("conn", "write to %s failed: %s", *c->peer_name ? c->peer_name : c->addr, cn_strerror(rc));
        cn__conn_close(c, NULL);
    }
}

void cn_conn_written(cn_conn *c, int status)
{
    c->writing = 0;
    c->wflight.len = 0;
    if (status < 0) {
        if (c->state != CN_CONN_CLOSING)
            CN_WARN("conn", "write to %s failed: %s", *c->peer_name ? c->peer_name : c->addr,
                    cn_strerror(status));
        cn__conn_close(c, NULL);
        return;
    }
    if (c->wbuf.len > 0)
        cn__conn_mark_dirty(c);
}

int cn__frame_begin_at(cn_conn *c, size_t reserve, size_t *start)
{
    if (c->state != CN_CONN_UP)
        return CN_ENOCONN;
    if (c->wbuf.len + c->wflight.len > c->node->max_write_queue) {
        CN_ERROR("conn", "%s is not reading: %zu bytes queued; dropping the connection", c->peer_name,
                 c->wbuf.len + c->wflight.len);
        cn__conn_close(c, NULL);
        return CN_EFULL;
    }
    if (cn_buf_reserve(&c->wbuf, reserve + 5) < 0)
        return -ENOMEM;
    *start = c->wbuf.len;
    c->wbuf.len += 4;
    c->wbuf.data[c->wbuf.len++] = (char)CN_PASS_THROUGH;
    return 0;
}

void cn__frame_end(cn_conn *c, size_t start)
{
    cn_set_u32(c->wbuf.data + start, (uint32_t)(c->wbuf.len - start - 4));
    c->node->stats.frames_out++;
    cn__conn_mark_dirty(c);
}

void cn__conn_close(cn_conn *c, const char *why)
{
    if (c->state == CN_CONN_CLOSING)
        return;
    cn_node *node = c->node;
    int was_up = c->state == CN_CONN_UP;
    if (why)
        CN_INFO("conn", "closing connection %s%s%s: %s", was_up ? "to " : "from ", was_up ? c->peer_name : "",
                was_up ? "" : c->addr, why);
    c->state = CN_CONN_CLOSING;
    if (was_up) {
        HASH_DEL(node->conns, c);
        node->stats.connections--;
    } else {
        node->stats.pending--;
    }
    cn__conn_drop_links_monitors(c);
    if (c->target) {
        cn_target *t = c->target;
        t->conn = NULL;
        c->target = NULL;
        cn__target_retry(t);
    }
    c->tp->close(c);
}

void cn_conn_closed(cn_conn *c)
{
    cn_node *node = c->node;
    if (c->dirty) {
        for (cn_conn **pp = &node->dirty; *pp; pp = &(*pp)->dirty_next) {
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
        }
    }
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        node->all_conns = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    cn_buf_free(&c->rbuf);
    cn_buf_free(&c->wbuf);
    cn_buf_free(&c->wflight);
    free(c);
    if (node->closing && node->all_conns == NULL) {
        cn__node_maybe_closed(node);
    }
}

/* Sends ticks on quiet connections and drops peers that have been silent too long. */
void cn__conn_tick_all(cn_node *node)
{
    uint64_t now = uv_now(node->loop);
    uint64_t tick_ms = (uint64_t)node->net_ticktime * 1000 / 4;
    uint64_t dead_ms = (uint64_t)node->net_ticktime * 1000;
    cn_conn *c, *tmp;
    HASH_ITER(hh, node->conns, c, tmp) {
        if (now - c->last_read > dead_ms) {
            CN_WARN("conn", "%s sent nothing for %u s (net_ticktime); dropping it", c->peer_name,
                    node->net_ticktime);
            cn__conn_close(c, NULL);
            continue;
        }
        if (now - c->last_write >= tick_ms && c->wbuf.len == 0 && !c->writing) {
            static const char tick[4] = {0, 0, 0, 0};
            if (cn_buf_append(&c->wbuf, tick, 4) == 0)
                cn__conn_mark_dirty(c);
        }
    }
}

/* ---- The TCP transport ---- */

static void tcp_handle_closed(uv_handle_t *h)
{
    cn_conn *c = h->data;
    if (--c->handles_open == 0)
        cn_conn_closed(c);
}

static void tcp_close(cn_conn *c)
{
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->hs_timer, tcp_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, tcp_handle_closed);
}

static void tcp_on_write(uv_write_t *req, int status)
{
    cn_conn *c = req->data;
    if (status == UV_ECANCELED)
        status = 0;
    cn_conn_written(c, status);
}

/* A direct write first: most batches fit in the socket buffer and need no request. */
static int tcp_write(cn_conn *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)len) {
        cn_conn_written(c, 0);
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN)
        return n;
    if (n < 0)
        n = 0;
    b = uv_buf_init((char *)data + n, (unsigned)(len - (size_t)n));
    c->wreq.data = c;
    return uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, tcp_on_write);
}

static const cn_transport tcp_transport = {tcp_write, tcp_close};

static void tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    cn_conn *c = h->data;
    if (cn_buf_reserve(&c->rbuf, READ_CHUNK) < 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->rbuf.data + c->rbuf.len, (unsigned)(c->rbuf.cap - c->rbuf.len));
}

static void tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    cn_conn *c = s->data;
    if (nread == 0 || c->state == CN_CONN_CLOSING)
        return;
    if (nread < 0) {
        if (c->state == CN_CONN_UP)
            cn__conn_close(c, nread == UV_EOF ? "the peer closed it" : uv_strerror((int)nread));
        else
            cn__conn_close(c, NULL);
        return;
    }
    c->rbuf.len += (size_t)nread;
    c->last_read = uv_now(c->node->loop);
    conn_process(c);
}

static void hs_timeout(uv_timer_t *t)
{
    cn_conn *c = t->data;
    if (c->state == CN_CONN_UP || c->state == CN_CONN_CLOSING)
        return;
    CN_WARN("handshake", "%s did not complete the handshake in %u ms; dropped", c->addr,
            c->node->handshake_timeout_ms);
    cn__conn_close(c, NULL);
}

static int tcp_setup(cn_node *node, cn_conn *c)
{
    int rc = uv_tcp_init(node->loop, &c->tcp);
    if (rc < 0)
        return rc;
    c->tcp.data = c;
    c->handles_open = 1;
    uv_timer_init(node->loop, &c->hs_timer);
    c->hs_timer.data = c;
    c->handles_open = 2;
    c->tp_data = NULL;
    uv_timer_start(&c->hs_timer, hs_timeout, node->handshake_timeout_ms, 0);
    return 0;
}

static void describe_peer(cn_conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[48] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            uv_ip4_name(in, ip, sizeof ip);
            port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(in6, ip, sizeof ip);
            port = ntohs(in6->sin6_port);
        }
    }
    snprintf(c->addr, sizeof c->addr, "%s:%d", ip, port);
}

int cn__conn_accept_tcp(cn_node *node, uv_stream_t *server)
{
    cn_conn *c = cn_conn_new(node, &tcp_transport, 0);
    if (c == NULL)
        return -ENOMEM;
    int rc = tcp_setup(node, c);
    if (rc < 0) {
        node->stats.pending--;
        cn_conn_closed(c);
        return rc;
    }
    rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc == 0) {
        uv_tcp_nodelay(&c->tcp, 1);
        describe_peer(c);
        rc = uv_read_start((uv_stream_t *)&c->tcp, tcp_alloc, tcp_read);
    }
    if (rc < 0) {
        cn__conn_close(c, NULL);
        return rc;
    }
    cn_conn_start_handshake(c, NULL);
    return 0;
}

static void tcp_connected(uv_connect_t *req, int status)
{
    cn_conn *c = req->data;
    if (c->state == CN_CONN_CLOSING)
        return;
    if (status < 0) {
        CN_INFO("conn", "cannot reach %s: %s", c->target ? c->target->name : c->addr, uv_strerror(status));
        cn__conn_close(c, NULL);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, tcp_alloc, tcp_read);
    if (rc < 0) {
        cn__conn_close(c, uv_strerror(rc));
        return;
    }
    cn_conn_start_handshake(c, c->target ? c->target->name : NULL);
}

int cn__conn_connect_tcp(cn_node *node, cn_target *t, const struct sockaddr *addr)
{
    cn_conn *c = cn_conn_new(node, &tcp_transport, 1);
    if (c == NULL)
        return -ENOMEM;
    int rc = tcp_setup(node, c);
    if (rc < 0) {
        node->stats.pending--;
        cn_conn_closed(c);
        return rc;
    }
    c->target = t;
    t->conn = c;
    if (addr->sa_family == AF_INET) {
        char ip[48];
        uv_ip4_name((const struct sockaddr_in *)addr, ip, sizeof ip);
        snprintf(c->addr, sizeof c->addr, "%s:%d", ip, ntohs(((const struct sockaddr_in *)addr)->sin_port));
    }
    c->creq.data = c;
    rc = uv_tcp_connect(&c->creq, &c->tcp, addr, tcp_connected);
    if (rc < 0) {
        cn__conn_close(c, uv_strerror(rc));
        return rc;
    }
    return 0;
}

const char *cn_conn_peer(const cn_conn *c)
{
    return c->state == CN_CONN_UP ? c->peer_name : "";
}

void cn_conn_set_transport_data(cn_conn *c, void *data)
{
    c->tp_data = data;
}

void *cn_conn_transport_data(const cn_conn *c)
{
    return c->tp_data;
}
