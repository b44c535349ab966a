/*
 * The TCP transport: a distribution connection's bytes over a libuv TCP
 * stream, behind the seam of cnode/transport.h. It accepts from the node's
 * listener, dials for --connect targets, reads straight into the connection's
 * read buffer and writes each batch with one direct write when the socket
 * takes it all. What the bytes mean is conn.c's business.
 *
 * Fairness: libuv reads a ready stream up to 32 times in a row, and a flood of
 * small frames costs the node microseconds each, so one peer's flood (a
 * million MONITOR_Ps) held the loop 200 ms at a time and every other caller
 * waited as long. A connection that has handed the node READ_BUDGET bytes in a
 * loop turn stops reading until the end of the turn (cn__tcp_resume).
 *
 * TLS (a node with a TLS context): the stream's bytes pass through a TLS
 * layer (tls.c) both ways. Reads land in the layer's ciphertext buffer, the
 * connection's writes go to the layer, and the layer writes its ciphertext
 * with cn__tcp_write_raw; the connection uses tls_transport instead of
 * tcp_transport. Everything else (dialing, accepting, budgets, closing) is
 * the same.
 *
 * Memory: each connection has one tcp_conn, made here and freed when its
 * handle has closed, after which the connection is told (cn_conn_closed). Its
 * TLS layer, if any, is freed with it.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "cnode/addr.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/node_int.h"

/* How much room each read asks for at the end of the connection's buffer. */
#define READ_CHUNK (64 * 1024)
/*
 * What one connection may hand the node per loop turn: one full read, about a
 * millisecond of the smallest frames, and far more than calls in flight fill.
 */
#define READ_BUDGET READ_CHUNK

typedef struct cn__tcp_conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    cn_conn *conn;
    uint64_t turn;                  /* the node's turn that turn_bytes counts */
    size_t turn_bytes;
    int paused;                     /* on node->tcp_paused, not reading */
    struct cn__tcp_conn *paused_next, *paused_prev;
    cn__tls_conn *tls;              /* NULL: plain TCP */
} tcp_conn;

static void tcp_closed(uv_handle_t *h)
{
    tcp_conn *t = h->data;
    cn_conn *c = t->conn;
    cn__tls_conn_free(t->tls);
    free(t);
    if (c != NULL)
        cn_conn_closed(c);
}

static void tcp_close(cn_conn *c)
{
    tcp_conn *t = cn_conn_transport_data(c);
    if (t->tls)
        cn__tls_conn_close(t->tls);
    if (t->paused) {
        DL_DELETE2(c->node->tcp_paused, t, paused_prev, paused_next);
        t->paused = 0;
    }
    uv_read_stop((uv_stream_t *)&t->tcp);
    uv_close((uv_handle_t *)&t->tcp, tcp_closed);
}

/* A write finished: the connection's, or the TLS layer's that carried it. */
static void written(tcp_conn *t, int status)
{
    if (t->tls)
        cn__tls_conn_written(t->tls, status);
    else
        cn_conn_written(t->conn, status);
}

static void tcp_on_write(uv_write_t *req, int status)
{
    tcp_conn *t = req->data;
    /* A write the close cancelled is over as far as the connection is concerned. */
    written(t, status == UV_ECANCELED ? 0 : status);
}

/* A direct write first: most batches fit in the socket buffer and need no request. */
int cn__tcp_write_raw(tcp_conn *t, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    CN_METRIC_ADD(CN_MET_BYTES_OUT, len);
    int n = uv_try_write((uv_stream_t *)&t->tcp, &b, 1);
    if (n == (int)len) {
        written(t, 0);
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN)
        return n;
    if (n < 0)
        n = 0;
    b = uv_buf_init((char *)data + n, (unsigned)(len - (size_t)n));
    t->wreq.data = t;
    return uv_write(&t->wreq, (uv_stream_t *)&t->tcp, &b, 1, tcp_on_write);
}

void cn__tcp_try_write(tcp_conn *t, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    if (len > 0)
        (void)uv_try_write((uv_stream_t *)&t->tcp, &b, 1);
}

static int tcp_write(cn_conn *c, const char *data, size_t len)
{
    return cn__tcp_write_raw(cn_conn_transport_data(c), data, len);
}

static int tls_write(cn_conn *c, const char *data, size_t len)
{
    tcp_conn *t = cn_conn_transport_data(c);
    return cn__tls_conn_write(t->tls, data, len);
}

static const cn_transport tcp_transport = {tcp_write, tcp_close, 0};
/* OTP's TLS distribution frames its handshake with 4-byte lengths (transport.h). */
static const cn_transport tls_transport = {tls_write, tcp_close, 1};

static void tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    tcp_conn *t = h->data;
    char *base;
    size_t len;
    if (t->tls)
        cn__tls_conn_read_buf(t->tls, &base, &len);
    else
        cn_conn_read_buf(t->conn, READ_CHUNK, &base, &len);
    *buf = uv_buf_init(base, (unsigned)len);
}

/* Counts n bytes against this turn's budget; past it, reading waits for the end of the turn. */
static void spend(tcp_conn *t, size_t n)
{
    cn_node *node = t->conn->node;
    if (uv_is_closing((uv_handle_t *)&t->tcp))
        return;
    if (t->turn != node->turn) {
        t->turn = node->turn;
        t->turn_bytes = 0;
    }
    t->turn_bytes += n;
    if (t->turn_bytes < READ_BUDGET)
        return;
    uv_read_stop((uv_stream_t *)&t->tcp);
    t->paused = 1;
    DL_APPEND2(node->tcp_paused, t, paused_prev, paused_next);
}

static void tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    tcp_conn *t = s->data;
    if (nread > 0) {
        CN_METRIC_ADD(CN_MET_BYTES_IN, nread);
        if (t->tls)
            cn__tls_conn_read_done(t->tls, (size_t)nread);
        else
            cn_conn_read_done(t->conn, (size_t)nread);
        spend(t, (size_t)nread);
    } else if (nread < 0) {
        cn_conn_ended(t->conn, nread == UV_EOF ? 0 : (int)nread);
    }
}

void cn__tcp_resume(cn_node *node)
{
    tcp_conn *t;
    while ((t = node->tcp_paused) != NULL) {
        DL_DELETE2(node->tcp_paused, t, paused_prev, paused_next);
        t->paused = 0;
        int rc = uv_read_start((uv_stream_t *)&t->tcp, tcp_alloc, tcp_read);
        if (rc < 0)
            cn_conn_ended(t->conn, rc);
    }
}

/* The peer's address for logs: "10.0.0.1:4370", "[::1]:4370" (cn_addr_format). */
static void describe_peer(tcp_conn *t)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char addr[CN_ADDR_STRLEN] = "?";
    if (uv_tcp_getpeername(&t->tcp, (struct sockaddr *)&ss, &len) == 0)
        cn_addr_format((const struct sockaddr *)&ss, addr, sizeof addr);
    cn_conn_set_addr(t->conn, addr);
}

/* A tcp_conn whose handle is initialised (uv_tcp_init cannot fail without flags). */
static tcp_conn *tcp_new(cn_node *node)
{
    tcp_conn *t = cn_calloc(1, sizeof *t);
    int rc = uv_tcp_init(node->loop, &t->tcp);
    assert(rc == 0);
    (void)rc;
    t->tcp.data = t;
    return t;
}

/* The stream is connected: nodelay, and reads start. Returns 0 or a libuv error. */
static int tcp_start(tcp_conn *t)
{
    uv_tcp_nodelay(&t->tcp, 1);
    return uv_read_start((uv_stream_t *)&t->tcp, tcp_alloc, tcp_read);
}

int cn__tcp_accept(cn_node *node, uv_stream_t *server)
{
    tcp_conn *t = tcp_new(node);
    int rc = uv_accept(server, (uv_stream_t *)&t->tcp);
    if (rc < 0) {
        /* No connection yet: the handle closes alone. */
        uv_close((uv_handle_t *)&t->tcp, tcp_closed);
        return rc;
    }
    CN_METRIC_INC(CN_MET_ACCEPTED);
    t->conn = cn_conn_new(node, node->tls ? &tls_transport : &tcp_transport, 0);
    cn_conn_set_transport_data(t->conn, t);
    if (node->tls)
        t->tls = cn__tls_conn_new(t->conn, t, 0);
    describe_peer(t);
    rc = tcp_start(t);
    if (rc < 0) {
        cn_conn_ended(t->conn, rc);
        return rc;
    }
    cn_conn_start_handshake(t->conn, NULL);
    return 0;
}

static void tcp_connected(uv_connect_t *req, int status)
{
    tcp_conn *t = req->data;
    if (status == UV_ECANCELED)
        return; /* closed while dialing: the close reports the rest */
    int rc = status < 0 ? status : tcp_start(t);
    if (rc < 0) {
        cn_conn_ended(t->conn, rc);
        return;
    }
    /* Over TLS, the distribution handshake waits for the TLS handshake (tls.c). */
    if (t->tls)
        cn__tls_conn_start(t->tls);
    else
        cn__conn_connected(t->conn);
}

void cn__tcp_connect(cn_node *node, const struct sockaddr *addr, const char *dialed,
                     cn__conn_lost_cb lost_cb, void *arg)
{
    tcp_conn *t = tcp_new(node);
    CN_METRIC_INC(CN_MET_DIALED);
    t->conn = cn_conn_new(node, node->tls ? &tls_transport : &tcp_transport, 1);
    cn_conn_set_transport_data(t->conn, t);
    cn__conn_set_owner(t->conn, dialed, lost_cb, arg);
    if (node->tls)
        t->tls = cn__tls_conn_new(t->conn, t, 1);
    char where[CN_ADDR_STRLEN];
    cn_addr_format(addr, where, sizeof where);
    cn_conn_set_addr(t->conn, where);
    t->creq.data = t;
    int rc = uv_tcp_connect(&t->creq, &t->tcp, addr, tcp_connected);
    if (rc < 0)
        cn_conn_ended(t->conn, rc);
}
