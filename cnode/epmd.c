/*
 * EPMD client. The codecs are plain functions over byte buffers; the libuv part
 * drives them over one TCP connection per registration or lookup. Each of those
 * owns two handles (the socket and a timeout timer), and reports to its caller
 * only after both are closed, so a caller may free its memory in the callback
 * and a loop is never left with a stray handle.
 */
#include "epmd.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "error.h"
#include "log.h"
#include "mem.h"
#include "protocol.h"

/* How long cn_epmd_ensure_running() waits for a freshly started epmd. */
#define START_WAIT_MS 2000
#define START_POLL_MS 50

/* ---- Codecs ---------------------------------------------------------------- */

/* An alive name epmd accepts and a node name can be built from: 1..255 bytes, no '@'. */
static int valid_alive(const char *alive)
{
    if (alive == NULL)
        return 0;
    size_t n = strlen(alive);
    return n > 0 && n <= CN_EPMD_MAX_ALIVE && strchr(alive, '@') == NULL;
}

int cn_epmd_encode_alive2_req(cn_buf *out, const char *alive, uint16_t port)
{
    if (!valid_alive(alive))
        return -EINVAL;
    size_t n = strlen(alive);
    /* tag, port, type, protocol, highest, lowest, nlen, name, elen */
    size_t body = 1 + 2 + 1 + 1 + 2 + 2 + 2 + n + 2;
    cn_buf_reserve(out, 2 + body);
    cn_buf_put_u16(out, (uint16_t)body);
    cn_buf_put_u8(out, EPMD_ALIVE2_REQ);
    cn_buf_put_u16(out, port);
    cn_buf_put_u8(out, CN_EPMD_NODE_NORMAL);
    cn_buf_put_u8(out, CN_EPMD_PROTO_TCP);
    cn_buf_put_u16(out, CN_DIST_VSN_HIGH);
    cn_buf_put_u16(out, CN_DIST_VSN_LOW);
    cn_buf_put_u16(out, (uint16_t)n);
    cn_buf_append(out, alive, n);
    cn_buf_put_u16(out, 0);
    return 0;
}

int cn_epmd_encode_port_please2_req(cn_buf *out, const char *alive)
{
    if (!valid_alive(alive))
        return -EINVAL;
    size_t n = strlen(alive);
    cn_buf_reserve(out, 2 + 1 + n);
    cn_buf_put_u16(out, (uint16_t)(1 + n));
    cn_buf_put_u8(out, EPMD_PORT_PLEASE2_REQ);
    cn_buf_append(out, alive, n);
    return 0;
}

int cn_epmd_decode_alive2_resp(const void *data, size_t len, int *result, uint32_t *creation)
{
    const unsigned char *p = data;
    if (len < 1)
        return 0;
    /* epmd sends a creation even with a failing result; it is read and ignored. */
    if (p[0] == EPMD_ALIVE2_X_RESP) {
        if (len < 6)
            return 0;
        *result = p[1];
        *creation = cn_get_u32(p + 2);
        return 6;
    }
    if (p[0] == EPMD_ALIVE2_RESP) {
        if (len < 4)
            return 0;
        *result = p[1];
        *creation = cn_get_u16(p + 2);
        return 4;
    }
    return CN_EPROTO;
}

int cn_epmd_decode_port2_resp(const void *data, size_t len, cn_epmd_port2 *out)
{
    const unsigned char *p = data;
    if (len < 2)
        return len == 1 && p[0] != EPMD_PORT2_RESP ? CN_EPROTO : 0;
    if (p[0] != EPMD_PORT2_RESP)
        return CN_EPROTO;
    memset(out, 0, sizeof *out);
    out->result = p[1];
    if (out->result != 0)
        return 2;
    /* tag, result, port, type, protocol, highest, lowest, nlen */
    if (len < 12)
        return 0;
    size_t nlen = cn_get_u16(p + 10);
    if (nlen > CN_EPMD_MAX_ALIVE || memchr(p + 12, '\0', nlen < len - 12 ? nlen : len - 12))
        return CN_EPROTO;
    if (len < 12 + nlen + 2)
        return 0;
    size_t elen = cn_get_u16(p + 12 + nlen);
    if (elen > CN_EPMD_MAX_EXTRA)
        return CN_EPROTO;
    size_t total = 12 + nlen + 2 + elen;
    if (len < total)
        return 0;
    out->port = cn_get_u16(p + 2);
    out->node_type = p[4];
    out->protocol = p[5];
    out->highvsn = cn_get_u16(p + 6);
    out->lowvsn = cn_get_u16(p + 8);
    memcpy(out->name, p + 12, nlen);
    out->name[nlen] = '\0';
    return (int)total;
}

uint16_t cn_epmd_port(void)
{
    const char *s = getenv("ERL_EPMD_PORT");
    if (s != NULL && *s != '\0') {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end == '\0' && v > 0 && v <= 65535)
            return (uint16_t)v;
    }
    return EPMD_PORT;
}

/* ---- Registration ---------------------------------------------------------- */

/*
 * A registration is kept, as OTP's erl_epmd keeps it: the first attempt's
 * failure is final and reported, but once registered, a connection that epmd
 * closes (epmd died or was restarted) starts a new attempt after a backoff,
 * and an attempt that fails for want of an epmd starts the next one. Only
 * epmd's refusal of the name ends a renewed registration.
 */
enum reg_state {
    REG_IDLE = 0,   /* never used (zeroed memory) */
    REG_CONNECTING, /* connecting to epmd */
    REG_WAITING,    /* ALIVE2_REQ written, waiting for the reply */
    REG_UP,         /* registered; the connection stays open */
    REG_RETRY,      /* unregistered: the old socket closing, then the backoff timer */
    REG_CLOSING,    /* handles closing */
    REG_DONE        /* everything closed */
};

static void reg_attempt(cn_epmd_reg *reg);

static void reg_retry(uv_timer_t *t)
{
    reg_attempt(t->data);
}

static void reg_handle_closed(uv_handle_t *h)
{
    cn_epmd_reg *reg = h->data;
    reg->open_handles--;
    if (reg->state == REG_RETRY) {
        /* Only the socket closes here; the timer stays for the next attempt. */
        uv_timer_start(&reg->timer, reg_retry, reg->retry_ms, 0);
        reg->retry_ms = reg->retry_ms * 2 > CN_EPMD_RETRY_MAX_MS ? CN_EPMD_RETRY_MAX_MS : reg->retry_ms * 2;
        return;
    }
    if (reg->open_handles > 0)
        return;
    cn_buf_free(&reg->req);
    reg->state = REG_DONE;
    /* Only now may the caller free reg: nothing of ours refers to it any more. */
    if (reg->cancelled) {
        if (reg->close_cb)
            reg->close_cb(reg);
    } else if (reg->cb) {
        reg->cb(reg, reg->status, 0);
    }
}

static void reg_close(cn_epmd_reg *reg)
{
    if (reg->state == REG_CLOSING || reg->state == REG_DONE)
        return;
    reg->state = REG_CLOSING;
    /* Between attempts the socket is closing or closed already. */
    if (!uv_is_closing((uv_handle_t *)&reg->tcp))
        uv_close((uv_handle_t *)&reg->tcp, reg_handle_closed);
    uv_close((uv_handle_t *)&reg->timer, reg_handle_closed);
}

/* Drops this attempt's socket; the next attempt starts reg->retry_ms after it closed. */
static void reg_retry_later(cn_epmd_reg *reg)
{
    reg->state = REG_RETRY;
    uv_timer_stop(&reg->timer);
    uv_close((uv_handle_t *)&reg->tcp, reg_handle_closed);
}

/*
 * An attempt failed. The first registration reports it (cb gets status once
 * both handles are closed); a renewal tries again, unless epmd refused the name.
 */
static void reg_fail(cn_epmd_reg *reg, int status)
{
    if (reg->registered && status != CN_ENOTALIVE) {
        CN_DEBUG("epmd", "registering %s again failed: %s; next try in %u ms", reg->alive,
                 cn_strerror(status), reg->retry_ms);
        reg_retry_later(reg);
        return;
    }
    CN_DEBUG("epmd", "registering %s failed: %s", reg->alive, cn_strerror(status));
    reg->status = status;
    reg_close(reg);
}

static void reg_timeout(uv_timer_t *t)
{
    cn_epmd_reg *reg = t->data;
    if (reg->state == REG_CONNECTING || reg->state == REG_WAITING)
        reg_fail(reg, -ETIMEDOUT);
}

static void reg_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    cn_epmd_reg *reg = h->data;
    (void)hint;
    *buf = uv_buf_init((char *)reg->resp + reg->resp_len,
                       (unsigned)(sizeof reg->resp - reg->resp_len));
}

static void reg_got_reply(cn_epmd_reg *reg)
{
    int result = 0;
    uint32_t creation = 0;
    int n = cn_epmd_decode_alive2_resp(reg->resp, reg->resp_len, &result, &creation);
    if (n == 0)
        return;
    if (n < 0) {
        reg_fail(reg, n);
        return;
    }
    if (result != 0) {
        CN_DEBUG("epmd", "epmd refused %s (result %d)", reg->alive, result);
        reg_fail(reg, CN_ENOTALIVE);
        return;
    }
    uv_timer_stop(&reg->timer);
    reg->state = REG_UP;
    reg->resp_len = 0;
    reg->registered = 1;
    CN_DEBUG("epmd", "registered %s, creation %u", reg->alive, (unsigned)creation);
    reg->cb(reg, 0, creation);
}

/* epmd closed the connection of a registration: the name is gone until an attempt renews it. */
static void reg_lost(cn_epmd_reg *reg, ssize_t nread)
{
    const char *why = nread == UV_EOF ? "end of stream" : uv_strerror((int)nread);
    CN_WARN("epmd", "epmd dropped the registration of %s (%s); registering again", reg->alive, why);
    uv_read_stop((uv_stream_t *)&reg->tcp);
    reg->retry_ms = CN_EPMD_RETRY_FIRST_MS;
    reg_retry_later(reg);
}

static void reg_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    cn_epmd_reg *reg = s->data;
    (void)buf;
    if (nread == 0 || (reg->state != REG_WAITING && reg->state != REG_UP))
        return;
    if (nread < 0) {
        if (reg->state == REG_WAITING)
            reg_fail(reg, nread == UV_EOF ? CN_EPROTO : (int)nread);
        else
            reg_lost(reg, nread);
        return;
    }
    if (reg->state != REG_WAITING) {
        /* epmd says nothing after the reply; whatever comes is dropped. */
        reg->resp_len = 0;
        return;
    }
    reg->resp_len += (size_t)nread;
    reg_got_reply(reg);
}

static void reg_written(uv_write_t *w, int status)
{
    cn_epmd_reg *reg = w->handle->data;
    if (status < 0 && reg->state == REG_WAITING)
        reg_fail(reg, status);
}

static void reg_connected(uv_connect_t *c, int status)
{
    cn_epmd_reg *reg = c->handle->data;
    if (reg->state != REG_CONNECTING)
        return;
    if (status < 0) {
        reg_fail(reg, status);
        return;
    }
    uv_buf_t b = uv_buf_init(reg->req.data, (unsigned)reg->req.len);
    int rc = uv_write(&reg->write, (uv_stream_t *)&reg->tcp, &b, 1, reg_written);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&reg->tcp, reg_alloc, reg_read);
    if (rc < 0) {
        reg_fail(reg, rc);
        return;
    }
    reg->state = REG_WAITING;
}

/*
 * One attempt on a fresh socket, under the timeout. Every failure, even an
 * immediate one, goes through reg_fail.
 */
static void reg_attempt(cn_epmd_reg *reg)
{
    struct sockaddr_storage addr;
    cn_addr_loopback(reg->family, cn_epmd_port(), &addr);
    uv_tcp_init(reg->timer.loop, &reg->tcp);         /* cannot fail without flags */
    reg->tcp.data = reg;
    reg->open_handles++;
    reg->resp_len = 0;
    reg->state = REG_CONNECTING;
    uv_timer_start(&reg->timer, reg_timeout, CN_EPMD_TIMEOUT_MS, 0);
    int rc = uv_tcp_connect(&reg->connect, &reg->tcp, (const struct sockaddr *)&addr, reg_connected);
    if (rc < 0)
        reg_fail(reg, rc);
}

int cn_epmd_register(uv_loop_t *loop, cn_epmd_reg *reg, const char *alive, uint16_t port,
                     cn_epmd_reg_cb cb)
{
    return cn_epmd_register_ex(loop, reg, AF_INET, alive, port, cb);
}

int cn_epmd_register_ex(uv_loop_t *loop, cn_epmd_reg *reg, int family, const char *alive, uint16_t port,
                        cn_epmd_reg_cb cb)
{
    if (!valid_alive(alive) || cb == NULL || (family != AF_INET && family != AF_INET6))
        return -EINVAL;
    reg->family = family;
    cn_buf_init(&reg->req);
    cn_epmd_encode_alive2_req(&reg->req, alive, port);  /* alive was checked above */
    uv_timer_init(loop, &reg->timer);
    reg->timer.data = reg;
    reg->open_handles = 1;
    reg->cb = cb;
    reg->status = 0;
    reg->cancelled = 0;
    reg->registered = 0;
    reg->retry_ms = CN_EPMD_RETRY_FIRST_MS;
    snprintf(reg->alive, sizeof reg->alive, "%s", alive);
    reg_attempt(reg);
    return 0;
}

void cn_epmd_unregister(cn_epmd_reg *reg)
{
    if (reg->state == REG_IDLE || reg->state == REG_DONE)
        return;
    if (reg->state == REG_UP || reg->state == REG_RETRY)
        CN_DEBUG("epmd", "unregistering %s", reg->alive);
    reg->cancelled = 1;
    reg_close(reg);
}

/* ---- Lookup ---------------------------------------------------------------- */

struct cn_epmd_lookup_req {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect;
    uv_write_t write;
    uv_getaddrinfo_t gai;
    cn_epmd_lookup_cb cb;
    void *data;
    cn_buf req;
    cn_buf resp;
    char chunk[512];
    char alive[CN_EPMD_MAX_ALIVE + 1];
    int open_handles;
    int family;    /* AF_INET or AF_INET6: what the host is taken as */
    int resolving; /* a getaddrinfo request is outstanding */
    int finishing; /* the result is known; handles are closing */
    int status;
    uint16_t port;
    int highvsn;
};

/* Reports and frees once the handles are closed and no resolution is outstanding. */
static void lookup_maybe_done(cn_epmd_lookup_req *l)
{
    if (l->open_handles > 0 || l->resolving)
        return;
    cn_epmd_lookup_cb cb = l->cb;
    void *data = l->data;
    int status = l->status;
    uint16_t port = l->port;
    int highvsn = l->highvsn;
    cn_buf_free(&l->req);
    cn_buf_free(&l->resp);
    free(l);
    cb(data, status, port, highvsn);
}

static void lookup_handle_closed(uv_handle_t *h)
{
    cn_epmd_lookup_req *l = h->data;
    l->open_handles--;
    lookup_maybe_done(l);
}

/* Records the outcome (the first one wins) and starts closing. */
static void lookup_finish(cn_epmd_lookup_req *l, int status)
{
    if (l->finishing)
        return;
    l->finishing = 1;
    l->status = status;
    if (status < 0)
        CN_DEBUG("epmd", "lookup of %s failed: %s", l->alive, cn_strerror(status));
    else
        CN_DEBUG("epmd", "%s is at port %u (version %d)", l->alive, l->port, l->highvsn);
    /* A resolution already running in the thread pool cannot be stopped; it is awaited. */
    if (l->resolving)
        uv_cancel((uv_req_t *)&l->gai);
    uv_close((uv_handle_t *)&l->tcp, lookup_handle_closed);
    uv_close((uv_handle_t *)&l->timer, lookup_handle_closed);
}

static void lookup_timeout(uv_timer_t *t)
{
    lookup_finish(t->data, -ETIMEDOUT);
}

static void lookup_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    cn_epmd_lookup_req *l = h->data;
    (void)hint;
    *buf = uv_buf_init(l->chunk, sizeof l->chunk);
}

static void lookup_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    cn_epmd_lookup_req *l = s->data;
    if (nread == 0 || l->finishing)
        return;
    if (nread < 0) {
        /* epmd closes after a whole reply, so an end here means a short one. */
        lookup_finish(l, nread == UV_EOF ? CN_EPROTO : (int)nread);
        return;
    }
    /* Bounded: a reply longer than a PORT2_RESP can be is refused by the decoder. */
    cn_buf_append(&l->resp, buf->base, (size_t)nread);
    cn_epmd_port2 r;
    int n = cn_epmd_decode_port2_resp(l->resp.data, l->resp.len, &r);
    if (n == 0)
        return;
    if (n < 0) {
        lookup_finish(l, n);
        return;
    }
    if (r.result != 0) {
        lookup_finish(l, -ENOENT);
        return;
    }
    l->port = r.port;
    l->highvsn = r.highvsn;
    lookup_finish(l, 0);
}

static void lookup_written(uv_write_t *w, int status)
{
    cn_epmd_lookup_req *l = w->handle->data;
    if (status < 0)
        lookup_finish(l, status);
}

static void lookup_connected(uv_connect_t *c, int status)
{
    cn_epmd_lookup_req *l = c->handle->data;
    if (l->finishing)
        return;
    if (status < 0) {
        lookup_finish(l, status);
        return;
    }
    uv_buf_t b = uv_buf_init(l->req.data, (unsigned)l->req.len);
    int rc = uv_write(&l->write, (uv_stream_t *)&l->tcp, &b, 1, lookup_written);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&l->tcp, lookup_alloc, lookup_read);
    if (rc < 0)
        lookup_finish(l, rc);
}

static void lookup_connect(cn_epmd_lookup_req *l, const struct sockaddr *addr)
{
    int rc = uv_tcp_connect(&l->connect, &l->tcp, addr, lookup_connected);
    if (rc < 0)
        lookup_finish(l, rc);
}

static void lookup_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    cn_epmd_lookup_req *l = req->data;
    l->resolving = 0;
    if (l->finishing || status < 0) {
        uv_freeaddrinfo(res);
        if (!l->finishing)
            lookup_finish(l, status);
        lookup_maybe_done(l);
        return;
    }
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    memcpy(&addr, res->ai_addr, res->ai_addrlen < sizeof addr ? res->ai_addrlen : sizeof addr);
    cn_addr_set_port(&addr, cn_epmd_port());
    uv_freeaddrinfo(res);
    lookup_connect(l, (const struct sockaddr *)&addr);
}

/* Connects at once to a literal of the lookup's family; resolves anything else first. */
static void lookup_begin(cn_epmd_lookup_req *l, uv_loop_t *loop, const char *host)
{
    struct sockaddr_storage addr;
    if (cn_addr_literal(l->family, host, cn_epmd_port(), &addr) == 0) {
        lookup_connect(l, (const struct sockaddr *)&addr);
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = l->family;
    hints.ai_socktype = SOCK_STREAM;
    l->gai.data = l;
    int rc = uv_getaddrinfo(loop, &l->gai, lookup_resolved, host, NULL, &hints);
    if (rc < 0)
        lookup_finish(l, rc);
    else
        l->resolving = 1;
}

int cn_epmd_lookup_start(uv_loop_t *loop, const char *host, const char *alive, cn_epmd_lookup_cb cb,
                         void *data, cn_epmd_lookup_req **req)
{
    return cn_epmd_lookup_ex(loop, AF_INET, host, alive, cb, data, req);
}

int cn_epmd_lookup_ex(uv_loop_t *loop, int family, const char *host, const char *alive,
                      cn_epmd_lookup_cb cb, void *data, cn_epmd_lookup_req **req)
{
    if (!valid_alive(alive) || host == NULL || *host == '\0' || cb == NULL ||
        (family != AF_INET && family != AF_INET6))
        return -EINVAL;
    cn_epmd_lookup_req *l = cn_calloc(1, sizeof *l);
    cn_buf_init(&l->req);
    cn_buf_init(&l->resp);
    int rc = cn_epmd_encode_port_please2_req(&l->req, alive);
    assert(rc == 0); /* alive was checked above */
    rc = uv_tcp_init(loop, &l->tcp);
    assert(rc == 0); /* cannot fail without flags */
    (void)rc;
    uv_timer_init(loop, &l->timer);
    l->tcp.data = l->timer.data = l;
    l->open_handles = 2;
    l->cb = cb;
    l->data = data;
    l->family = family;
    snprintf(l->alive, sizeof l->alive, "%s", alive);
    uv_timer_start(&l->timer, lookup_timeout, CN_EPMD_TIMEOUT_MS, 0);
    if (req != NULL)
        *req = l;
    /* From here on every outcome, even an immediate failure, goes through cb. */
    lookup_begin(l, loop, host);
    return 0;
}

int cn_epmd_lookup(uv_loop_t *loop, const char *host, const char *alive, cn_epmd_lookup_cb cb,
                   void *data)
{
    return cn_epmd_lookup_start(loop, host, alive, cb, data, NULL);
}

void cn_epmd_lookup_cancel(cn_epmd_lookup_req *l)
{
    assert(l->open_handles > 0 || l->resolving);
    lookup_finish(l, -ECANCELED);
}

/* ---- Starting epmd ----------------------------------------------------------- */

/*
 * Connects to the loopback of family at port and hangs up. Returns 0 or -errno
 * (-ECONNREFUSED: nobody there).
 */
static int probe(int family, uint16_t port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_storage a;
    cn_addr_loopback(family, port, &a);
    socklen_t alen = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int rc = connect(fd, (struct sockaddr *)&a, alen) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Runs `epmd -daemon -port N` and reaps it; the daemon it forks lives on. */
static int spawn_epmd(uint16_t port)
{
    char a0[] = "epmd", a1[] = "-daemon", a2[] = "-port", a3[8];
    snprintf(a3, sizeof a3, "%u", (unsigned)port);
    char *argv[] = {a0, a1, a2, a3, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "epmd", NULL, NULL, argv, environ);
    if (rc != 0)
        return -rc;
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        return -ENOENT;
    return 0;
}

int cn_epmd_ensure_running(void)
{
    return cn_epmd_ensure_running_ex(AF_INET);
}

int cn_epmd_ensure_running_ex(int family)
{
    if (family != AF_INET && family != AF_INET6)
        return -EINVAL;
    uint16_t port = cn_epmd_port();
    int rc = probe(family, port);
    if (rc != -ECONNREFUSED)
        return rc;
    CN_INFO("epmd", "no epmd on port %u; starting epmd -daemon", (unsigned)port);
    rc = spawn_epmd(port);
    if (rc < 0) {
        CN_ERROR("epmd", "cannot start epmd: %s", cn_strerror(rc));
        return rc;
    }
    struct timespec pause = {0, START_POLL_MS * 1000000L};
    for (int waited = 0; waited < START_WAIT_MS; waited += START_POLL_MS) {
        nanosleep(&pause, NULL);
        if (probe(family, port) == 0)
            return 0;
    }
    char where[CN_ADDR_STRLEN];
    struct sockaddr_storage a;
    cn_addr_loopback(family, port, &a);
    cn_addr_format((const struct sockaddr *)&a, where, sizeof where);
    CN_ERROR("epmd", "epmd did not answer on %s within %d ms", where, START_WAIT_MS);
    return -ETIMEDOUT;
}
