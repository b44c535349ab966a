/*
 * Unit tests of the EPMD client: codecs byte for byte, the libuv glue against a
 * scripted fake epmd in the same loop, and one live run against a private epmd
 * started on a free port. Every test that runs a loop ends with
 * uv_loop_close() == 0, so no test can leak a handle.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cnode/buf.h"
#include "cnode/epmd.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "test/fake_epmd.h"

/* ---- Codecs ------------------------------------------------------------------ */

static void test_encode_alive2_req(void **state)
{
    (void)state;
    static const unsigned char want[] = {
        0x00, 0x12,       /* length: 13 + 5 */
        120,              /* ALIVE2_REQ */
        0x12, 0x34,       /* port */
        77,               /* normal node */
        0,                /* TCP/IPv4 */
        0x00, 0x06,       /* highest version */
        0x00, 0x05,       /* lowest version */
        0x00, 0x05,       /* name length */
        'c',  'n', 'o', 'd', 'e', 0x00, 0x00, /* name, empty Extra */
    };
    cn_buf b;
    cn_buf_init(&b);
    assert_int_equal(cn_epmd_encode_alive2_req(&b, "cnode", 0x1234), 0);
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    cn_buf_free(&b);
}

static void test_encode_port_please2_req(void **state)
{
    (void)state;
    cn_buf b;
    cn_buf_init(&b);
    assert_int_equal(cn_epmd_encode_port_please2_req(&b, "probe"), 0);
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.data, "\x00\x06\x7aprobe", 8);
    cn_buf_free(&b);
}

static void test_encode_rejects_bad_names(void **state)
{
    (void)state;
    char longname[CN_EPMD_MAX_ALIVE + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    cn_buf b;
    cn_buf_init(&b);
    const char *bad[] = {"", "a@b", longname};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(cn_epmd_encode_alive2_req(&b, bad[i], 1), -EINVAL);
        assert_int_equal(cn_epmd_encode_port_please2_req(&b, bad[i]), -EINVAL);
    }
    assert_int_equal(b.len, 0);
    /* 255 bytes is the longest allowed. */
    longname[CN_EPMD_MAX_ALIVE] = '\0';
    assert_int_equal(cn_epmd_encode_alive2_req(&b, longname, 1), 0);
    assert_int_equal(b.len, 2 + 13 + CN_EPMD_MAX_ALIVE);
    cn_buf_free(&b);
}

static void test_decode_alive2_resp(void **state)
{
    (void)state;
    int result = -1;
    uint32_t creation = 0;
    /* What the OTP 25 epmd on this machine answered, plus one byte of something else. */
    static const unsigned char x[] = {118, 0, 0x6b, 0x06, 0xcc, 0x61, 0xee};
    for (size_t n = 0; n < 6; n++)
        assert_int_equal(cn_epmd_decode_alive2_resp(x, n, &result, &creation), 0);
    assert_int_equal(cn_epmd_decode_alive2_resp(x, sizeof x, &result, &creation), 6);
    assert_int_equal(result, 0);
    assert_int_equal(creation, 0x6b06cc61u);

    /* A refusal still carries a creation (epmd sends 99). */
    static const unsigned char refused[] = {118, 1, 0, 0, 0, 99};
    assert_int_equal(cn_epmd_decode_alive2_resp(refused, 6, &result, &creation), 6);
    assert_int_equal(result, 1);

    /* The old ALIVE2_RESP with its 16-bit creation. */
    static const unsigned char old[] = {121, 0, 0x01, 0x02};
    assert_int_equal(cn_epmd_decode_alive2_resp(old, 3, &result, &creation), 0);
    assert_int_equal(cn_epmd_decode_alive2_resp(old, 4, &result, &creation), 4);
    assert_int_equal(result, 0);
    assert_int_equal(creation, 0x0102);

    assert_int_equal(cn_epmd_decode_alive2_resp("\x77\x00", 2, &result, &creation), CN_EPROTO);
    assert_int_equal(cn_epmd_decode_alive2_resp("k", 1, &result, &creation), CN_EPROTO);
}

/* A PORT2_RESP with result 0, as epmd builds it. */
static void put_port2(cn_buf *b, uint16_t port, const char *name, const char *extra)
{
    cn_buf_put_u8(b, 119);
    cn_buf_put_u8(b, 0);
    cn_buf_put_u16(b, port);
    cn_buf_put_u8(b, 77);
    cn_buf_put_u8(b, 0);
    cn_buf_put_u16(b, 6);
    cn_buf_put_u16(b, 5);
    cn_buf_put_u16(b, (uint16_t)strlen(name));
    cn_buf_append(b, name, strlen(name));
    cn_buf_put_u16(b, (uint16_t)strlen(extra));
    cn_buf_append(b, extra, strlen(extra));
}

static void test_decode_port2_resp(void **state)
{
    (void)state;
    cn_buf b;
    cn_buf_init(&b);
    cn_epmd_port2 r;
    put_port2(&b, 45678, "probe", "xyz");
    size_t whole = b.len;
    assert_int_equal(whole, 12 + 5 + 2 + 3);
    cn_buf_put_u8(&b, 0xee); /* not part of the reply */
    for (size_t n = 0; n < whole; n++)
        assert_int_equal(cn_epmd_decode_port2_resp(b.data, n, &r), 0);
    assert_int_equal(cn_epmd_decode_port2_resp(b.data, b.len, &r), (int)whole);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.port, 45678);
    assert_int_equal(r.node_type, 77);
    assert_int_equal(r.protocol, 0);
    assert_int_equal(r.highvsn, 6);
    assert_int_equal(r.lowvsn, 5);
    assert_string_equal(r.name, "probe");

    /* Unknown node: just the tag and a nonzero result. */
    assert_int_equal(cn_epmd_decode_port2_resp("\x77\x01", 2, &r), 2);
    assert_int_equal(r.result, 1);
    assert_int_equal(r.port, 0);
    cn_buf_free(&b);
}

static void test_decode_port2_resp_malformed(void **state)
{
    (void)state;
    cn_buf b;
    cn_buf_init(&b);
    cn_epmd_port2 r;

    assert_int_equal(cn_epmd_decode_port2_resp("\x76", 1, &r), CN_EPROTO);
    assert_int_equal(cn_epmd_decode_port2_resp("\x76\x00", 2, &r), CN_EPROTO);

    /* A name length beyond 255 fails as soon as the header is in. */
    put_port2(&b, 1, "", "");
    b.data[10] = 0x01;
    b.data[11] = 0x00;
    assert_int_equal(cn_epmd_decode_port2_resp(b.data, 12, &r), CN_EPROTO);

    cn_buf_reset(&b);
    put_port2(&b, 1, "a", "");
    b.data[12] = '\0';
    assert_int_equal(cn_epmd_decode_port2_resp(b.data, b.len, &r), CN_EPROTO);

    /* An Extra longer than we are willing to buffer. */
    cn_buf_reset(&b);
    put_port2(&b, 1, "a", "");
    b.data[13] = (char)((CN_EPMD_MAX_EXTRA + 1) >> 8);
    b.data[14] = (char)((CN_EPMD_MAX_EXTRA + 1) & 0xff);
    assert_int_equal(cn_epmd_decode_port2_resp(b.data, b.len, &r), CN_EPROTO);
    cn_buf_free(&b);
}

static void test_epmd_port_env(void **state)
{
    (void)state;
    const char *saved = getenv("ERL_EPMD_PORT");
    char keep[16] = "";
    if (saved)
        snprintf(keep, sizeof keep, "%s", saved);
    unsetenv("ERL_EPMD_PORT");
    assert_int_equal(cn_epmd_port(), 4369);
    setenv("ERL_EPMD_PORT", "12345", 1);
    assert_int_equal(cn_epmd_port(), 12345);
    const char *bad[] = {"", "abc", "0", "65536", "12x", "-5"};
    for (size_t i = 0; i < 6; i++) {
        setenv("ERL_EPMD_PORT", bad[i], 1);
        assert_int_equal(cn_epmd_port(), 4369);
    }
    if (saved)
        setenv("ERL_EPMD_PORT", keep, 1);
    else
        unsetenv("ERL_EPMD_PORT");
}

/* ---- Helpers for the loop tests ------------------------------------------------ */

/* A port nobody listens on right now (bound to 0, read back, released). */
static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void set_epmd_port(uint16_t port)
{
    char s[8];
    snprintf(s, sizeof s, "%u", (unsigned)port);
    setenv("ERL_EPMD_PORT", s, 1);
}

static int can_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Waits up to 3 s for something to listen on port; returns nonzero when it does. */
static int wait_listening(uint16_t port)
{
    for (int i = 0; i < 150; i++) {
        if (can_connect(port))
            return 1;
        sleep_ms(20);
    }
    return 0;
}

struct result {
    int calls;
    int status;
    uint32_t creation;
    uint16_t port;
    int highvsn;
    int closed;
};

static void on_reg(cn_epmd_reg *reg, int status, uint32_t creation)
{
    struct result *r = reg->data;
    r->calls++;
    r->status = status;
    r->creation = creation;
}

static void on_reg_closed(cn_epmd_reg *reg)
{
    struct result *r = reg->data;
    r->closed++;
}

static void on_lookup(void *data, int status, uint16_t port, int highvsn)
{
    struct result *r = data;
    r->calls++;
    r->status = status;
    r->port = port;
    r->highvsn = highvsn;
}

/* ---- No epmd at all ---------------------------------------------------------- */

static void test_no_epmd(void **state)
{
    (void)state;
    set_epmd_port(free_port());
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    cn_epmd_reg reg;
    memset(&reg, 0, sizeof reg);
    struct result rr = {0}, lr = {0};
    reg.data = &rr;
    reg.close_cb = on_reg_closed;
    assert_int_equal(cn_epmd_register(&loop, &reg, "cntest", 1234, on_reg), 0);
    assert_int_equal(cn_epmd_lookup(&loop, "127.0.0.1", "cntest", on_lookup, &lr), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rr.calls, 1);
    assert_int_equal(rr.status, -ECONNREFUSED);
    assert_int_equal(lr.calls, 1);
    assert_int_equal(lr.status, -ECONNREFUSED);
    /* After a failure there is nothing left to close. */
    cn_epmd_unregister(&reg);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rr.closed, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Unregistering while the connect is in flight: cb never runs, close_cb does. */
static void test_unregister_while_connecting(void **state)
{
    (void)state;
    set_epmd_port(free_port());
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    cn_epmd_reg reg;
    memset(&reg, 0, sizeof reg);
    struct result rr = {0};
    reg.data = &rr;
    reg.close_cb = on_reg_closed;
    assert_int_equal(cn_epmd_register(&loop, &reg, "cntest", 1234, on_reg), 0);
    cn_epmd_unregister(&reg);
    cn_epmd_unregister(&reg);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rr.calls, 0);
    assert_int_equal(rr.closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    cn_epmd_reg reg;
    memset(&reg, 0, sizeof reg);
    struct result r = {0};
    assert_int_equal(cn_epmd_register(&loop, &reg, "a@b", 1, on_reg), -EINVAL);
    assert_int_equal(cn_epmd_register(&loop, &reg, "ok", 1, NULL), -EINVAL);
    assert_int_equal(cn_epmd_lookup(&loop, "127.0.0.1", "", on_lookup, &r), -EINVAL);
    assert_int_equal(cn_epmd_lookup(&loop, "", "x", on_lookup, &r), -EINVAL);
    assert_int_equal(cn_epmd_lookup(&loop, NULL, "x", on_lookup, &r), -EINVAL);
    /* Unregistering a reg that never registered is harmless. */
    cn_epmd_unregister(&reg);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- A scripted fake epmd in the same loop -------------------------------------- */

struct fake {
    uv_tcp_t server;
    const char *reply; /* what to answer to any request */
    size_t reply_len;
    cn_buf got; /* the request bytes received */
    uint16_t port;
    int silent; /* record the request, never answer */
};

struct fake_client {
    uv_tcp_t tcp;
    uv_write_t w;
    struct fake *fake;
    char buf[512];
};

static void fake_client_closed(uv_handle_t *h)
{
    free(h->data);
}

static void fake_written(uv_write_t *w, int status)
{
    (void)status;
    struct fake_client *c = w->data;
    /* epmd hangs up after a PORT2_RESP; the fake does so after every reply. */
    uv_close((uv_handle_t *)&c->tcp, fake_client_closed);
}

static void fake_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct fake_client *c = h->data;
    (void)hint;
    *buf = uv_buf_init(c->buf, sizeof c->buf);
}

static void fake_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct fake_client *c = s->data;
    if (nread <= 0) {
        if (nread < 0)
            uv_close((uv_handle_t *)&c->tcp, fake_client_closed);
        return;
    }
    cn_buf_append(&c->fake->got, buf->base, (size_t)nread);
    if (c->fake->silent)
        return;
    uv_read_stop(s);
    uv_buf_t b = uv_buf_init((char *)c->fake->reply, (unsigned)c->fake->reply_len);
    c->w.data = c;
    assert_int_equal(uv_write(&c->w, s, &b, 1, fake_written), 0);
}

static void fake_connection(uv_stream_t *server, int status)
{
    assert_int_equal(status, 0);
    struct fake_client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fake = server->data;
    c->tcp.data = c;
    uv_tcp_init(server->loop, &c->tcp);
    assert_int_equal(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
    uv_read_start((uv_stream_t *)&c->tcp, fake_alloc, fake_read);
}

/*
 * A fake listening on host only (127.0.0.1, or ::1 for the IPv6 tests) at a
 * free port, which ERL_EPMD_PORT then names. Returns 0 when host cannot be
 * bound (no IPv6 here): then nothing was started.
 */
static int fake_start_at(uv_loop_t *loop, struct fake *f, const char *host, const char *reply, size_t len)
{
    memset(f, 0, sizeof *f);
    struct sockaddr_storage a;
    memset(&a, 0, sizeof a);
    if (strchr(host, ':') != NULL)
        assert_int_equal(uv_ip6_addr(host, 0, (struct sockaddr_in6 *)&a), 0);
    else
        assert_int_equal(uv_ip4_addr(host, 0, (struct sockaddr_in *)&a), 0);
    assert_int_equal(uv_tcp_init(loop, &f->server), 0);
    f->server.data = f;
    if (uv_tcp_bind(&f->server, (struct sockaddr *)&a, 0) != 0) {
        uv_close((uv_handle_t *)&f->server, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        return 0;
    }
    cn_buf_init(&f->got);
    f->reply = reply;
    f->reply_len = len;
    assert_int_equal(uv_listen((uv_stream_t *)&f->server, 8, fake_connection), 0);
    int alen = sizeof a;
    uv_tcp_getsockname(&f->server, (struct sockaddr *)&a, &alen);
    f->port = a.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&a)->sin6_port)
                                      : ntohs(((struct sockaddr_in *)&a)->sin_port);
    set_epmd_port(f->port);
    return 1;
}

static void fake_start(uv_loop_t *loop, struct fake *f, const char *reply, size_t len)
{
    assert_int_equal(fake_start_at(loop, f, "127.0.0.1", reply, len), 1);
}

static void fake_stop(struct fake *f)
{
    uv_close((uv_handle_t *)&f->server, NULL);
    cn_buf_free(&f->got);
}

/* Runs one lookup against a fake that answers reply; returns the status. */
static int lookup_against(const char *reply, size_t len, struct result *r, cn_buf *request)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct fake f;
    fake_start(&loop, &f, reply, len);
    memset(r, 0, sizeof *r);
    assert_int_equal(cn_epmd_lookup(&loop, "127.0.0.1", "probe", on_lookup, r), 0);
    while (r->calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    if (request)
        cn_buf_append(request, f.got.data, f.got.len);
    fake_stop(&f);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(r->calls, 1);
    return r->status;
}

static void test_lookup_fake_replies(void **state)
{
    (void)state;
    struct result r;
    cn_buf req, reply;
    cn_buf_init(&req);
    cn_buf_init(&reply);

    put_port2(&reply, 40001, "probe", "");
    assert_int_equal(lookup_against(reply.data, reply.len, &r, &req), 0);
    assert_int_equal(r.port, 40001);
    assert_int_equal(r.highvsn, 6);
    /* The request on the wire is exactly PORT_PLEASE2_REQ for the alive name. */
    assert_int_equal(req.len, 8);
    assert_memory_equal(req.data, "\x00\x06\x7aprobe", 8);

    assert_int_equal(lookup_against("\x77\x01", 2, &r, NULL), -ENOENT);
    /* Cut short by the hang-up, garbled, or nothing at all. */
    assert_int_equal(lookup_against(reply.data, reply.len - 1, &r, NULL), CN_EPROTO);
    assert_int_equal(lookup_against("\x76\x00", 2, &r, NULL), CN_EPROTO);
    assert_int_equal(lookup_against("", 0, &r, NULL), CN_EPROTO);
    cn_buf_free(&req);
    cn_buf_free(&reply);
}

/* A cancelled lookup reports -ECANCELED once, without waiting for its timeout. */
static void test_lookup_cancel(void **state)
{
    (void)state;
    for (int when = 0; when < 2; when++) {
        uv_loop_t loop;
        assert_int_equal(uv_loop_init(&loop), 0);
        struct fake f;
        fake_start(&loop, &f, NULL, 0);
        f.silent = 1;
        struct result r;
        memset(&r, 0, sizeof r);
        cn_epmd_lookup_req *req = NULL;
        assert_int_equal(cn_epmd_lookup_start(&loop, "127.0.0.1", "probe", on_lookup, &r, &req), 0);
        assert_non_null(req);
        /* At once (still connecting), or once the request waits for its answer. */
        while (when == 1 && f.got.len < 8)
            uv_run(&loop, UV_RUN_ONCE);
        cn_epmd_lookup_cancel(req);
        assert_int_equal(r.calls, 0);
        /* Only close callbacks are left: turns that never block finish it. */
        for (int turn = 0; turn < 10 && r.calls == 0; turn++)
            uv_run(&loop, UV_RUN_NOWAIT);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.status, -ECANCELED);
        fake_stop(&f);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(r.calls, 1);
        assert_int_equal(uv_loop_close(&loop), 0);
    }
}

/* ---- IPv6 (inet6_tcp): the epmd on ::1, as erl -proto_dist inet6_tcp reaches it ---- */

/* An IPv6 registration goes to ::1: the fake listens there only. */
static void test_ipv6_register_reaches_the_ipv6_loopback(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct fake f;
    if (!fake_start_at(&loop, &f, "::1", "\x76\x00\x00\x00\x00\x2a", 6)) {
        assert_int_equal(uv_loop_close(&loop), 0);
        skip();
    }
    cn_epmd_reg reg;
    memset(&reg, 0, sizeof reg);
    struct result r = {0};
    reg.data = &r;
    reg.close_cb = on_reg_closed;
    assert_int_equal(cn_epmd_register_ex(&loop, &reg, AF_INET6, "cntest", 0xbeef, on_reg), 0);
    while (r.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.creation, 42);
    assert_int_equal(f.got.len, 2 + 13 + 6);
    assert_int_equal(f.got.data[2], 120);
    assert_int_equal(cn_get_u16(f.got.data + 3), 0xbeef);
    cn_epmd_unregister(&reg);
    fake_stop(&f);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Runs one lookup of "probe" on host, taken as an address of family; returns the status. */
static int lookup6(uv_loop_t *loop, int family, const char *host, struct result *r)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(cn_epmd_lookup_ex(loop, family, host, "probe", on_lookup, r, NULL), 0);
    while (r->calls == 0)
        uv_run(loop, UV_RUN_ONCE);
    return r->status;
}

/* An IPv6 lookup asks the epmd at the IPv6 literal; the IPv4 form of a lookup cannot. */
static void test_ipv6_lookup_asks_the_ipv6_address(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    cn_buf reply;
    cn_buf_init(&reply);
    put_port2(&reply, 40006, "probe", "");
    struct fake f;
    if (!fake_start_at(&loop, &f, "::1", reply.data, reply.len)) {
        cn_buf_free(&reply);
        assert_int_equal(uv_loop_close(&loop), 0);
        skip();
    }
    struct result r;
    assert_int_equal(lookup6(&loop, AF_INET6, "::1", &r), 0);
    assert_int_equal(r.port, 40006);
    assert_int_equal(r.highvsn, 6);
    assert_int_equal(f.got.len, 8);
    assert_memory_equal(f.got.data, "\x00\x06\x7aprobe", 8);
    /* "::1" is no IPv4 host, and "127.0.0.1" no IPv6 one (inet6_tcp does not map it). */
    assert_int_not_equal(lookup6(&loop, AF_INET, "::1", &r), 0);
    assert_int_not_equal(lookup6(&loop, AF_INET6, "127.0.0.1", &r), 0);
    assert_int_equal(f.got.len, 8);
    fake_stop(&f);
    uv_run(&loop, UV_RUN_DEFAULT);
    cn_buf_free(&reply);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ensure_running looks on the family's loopback: the fake on ::1 answers there only. */
static void test_ipv6_ensure_running_probes_the_ipv6_loopback(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct fake f;
    if (!fake_start_at(&loop, &f, "::1", NULL, 0)) {
        assert_int_equal(uv_loop_close(&loop), 0);
        skip();
    }
    f.silent = 1;
    /*
     * No epmd can be started (nothing in PATH), so only an answer on ::1
     * gives 0: a probe of 127.0.0.1 would find nobody and fail with -ENOENT.
     */
    const char *path = getenv("PATH");
    char saved[4096];
    snprintf(saved, sizeof saved, "%s", path ? path : "");
    setenv("PATH", "/nonexistent", 1);
    int rc = cn_epmd_ensure_running_ex(AF_INET6);
    setenv("PATH", saved, 1);
    assert_int_equal(rc, 0);
    fake_stop(&f);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_ipv6_bad_families(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    cn_epmd_reg reg;
    memset(&reg, 0, sizeof reg);
    struct result r = {0};
    assert_int_equal(cn_epmd_register_ex(&loop, &reg, AF_UNIX, "ok", 1, on_reg), -EINVAL);
    assert_int_equal(cn_epmd_register_ex(&loop, &reg, 0, "ok", 1, on_reg), -EINVAL);
    assert_int_equal(cn_epmd_lookup_ex(&loop, AF_UNIX, "::1", "x", on_lookup, &r, NULL), -EINVAL);
    assert_int_equal(cn_epmd_ensure_running_ex(AF_UNIX), -EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_register_fake_replies(void **state)
{
    (void)state;
    static const struct {
        const char *reply;
        size_t len;
        int status;
        uint32_t creation;
    } cases[] = {
        {"\x76\x00\x01\x02\x03\x04", 6, 0, 0x01020304},
        {"\x79\x00\x00\x07", 4, 0, 7},                  /* old ALIVE2_RESP */
        {"\x76\x01\x00\x00\x00\x63", 6, CN_ENOTALIVE, 0}, /* name taken */
        {"\x75\x00\x00\x00\x00\x00", 6, CN_EPROTO, 0},
        {"\x76\x00\x00", 3, CN_EPROTO, 0}, /* hung up half way */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uv_loop_t loop;
        assert_int_equal(uv_loop_init(&loop), 0);
        struct fake f;
        /* This fake hangs up after replying; the success cases unregister first anyway. */
        fake_start(&loop, &f, cases[i].reply, cases[i].len);
        cn_epmd_reg reg;
        memset(&reg, 0, sizeof reg);
        struct result r = {0};
        reg.data = &r;
        reg.close_cb = on_reg_closed;
        assert_int_equal(cn_epmd_register(&loop, &reg, "cntest", 0xbeef, on_reg), 0);
        while (r.calls == 0)
            uv_run(&loop, UV_RUN_ONCE);
        assert_int_equal(r.status, cases[i].status);
        if (r.status == 0) {
            assert_int_equal(r.creation, cases[i].creation);
            assert_int_equal(f.got.len, 2 + 13 + 6);
            assert_int_equal(f.got.data[2], 120);
            assert_int_equal(cn_get_u16(f.got.data + 3), 0xbeef);
        }
        /* Before the fake's hang-up starts a renewal (the renewal tests below cover that). */
        cn_epmd_unregister(&reg);
        fake_stop(&f);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.closed, r.status == 0 ? 1 : 0);
        assert_int_equal(uv_loop_close(&loop), 0);
    }
}

/* ---- Renewal: epmd drops a registration and comes back ---------------------------- */

/* Everything a registration reports, in order. */
struct renew {
    int calls;
    int status[8];
    uint32_t creation[8];
    int closed;
};

static void on_renew(cn_epmd_reg *reg, int status, uint32_t creation)
{
    struct renew *r = reg->data;
    assert_true(r->calls < 8);
    r->status[r->calls] = status;
    r->creation[r->calls] = creation;
    r->calls++;
}

static void on_renew_closed(cn_epmd_reg *reg)
{
    struct renew *r = reg->data;
    r->closed++;
}

/* A loop, a fake epmd with this script and a registration it has accepted (creation 100). */
typedef struct renewal {
    uv_loop_t loop;
    fake_epmd epmd;
    cn_epmd_reg reg;
    struct renew r;
    cn_log_level saved_level;
    uv_timer_t watchdog;
} renewal;

/* Turns a registration that never gets where a test waits for into a failure, not a hang. */
static void watchdog_fired(uv_timer_t *t)
{
    (void)t;
    fail_msg("the registration did not get there within a minute");
}

static renewal *renewal_new(const fe_act *script, size_t n)
{
    renewal *w = test_calloc(1, sizeof *w);
    assert_int_equal(uv_loop_init(&w->loop), 0);
    uv_timer_init(&w->loop, &w->watchdog);
    uv_timer_start(&w->watchdog, watchdog_fired, 60000, 0);
    fe_start(&w->loop, &w->epmd, script, n);
    w->reg.data = &w->r;
    w->reg.close_cb = on_renew_closed;
    assert_int_equal(cn_epmd_register(&w->loop, &w->reg, "cntest", 0xbeef, on_renew), 0);
    while (w->r.calls == 0)
        uv_run(&w->loop, UV_RUN_ONCE);
    assert_int_equal(w->r.status[0], 0);
    assert_int_equal(w->r.creation[0], 100);
    /* The loss is a warning by design; these tests cause it on purpose. */
    w->saved_level = cn_log_threshold;
    cn_log_threshold = CN_LOG_ERROR;
    return w;
}

/*
 * Stops the fake and runs the loop until only close callbacks are left to run:
 * a registration that still had a timer or a socket would keep it alive.
 */
static void renewal_end(renewal *w)
{
    fe_close(&w->epmd);
    uv_close((uv_handle_t *)&w->watchdog, NULL);
    for (int turn = 0; turn < 20 && uv_loop_alive(&w->loop); turn++)
        uv_run(&w->loop, UV_RUN_NOWAIT);
    assert_false(uv_loop_alive(&w->loop));
    assert_int_equal(uv_loop_close(&w->loop), 0);
    cn_log_threshold = w->saved_level;
    test_free(w);
}

/*
 * epmd drops the registration, then fails four attempts (it hangs up on them)
 * before it answers: every attempt waits at least its backoff, 100 ms after
 * the loss and then twice the last wait, up to the cap; the renewal is
 * reported with its creation, and its connection is kept open. Only lower
 * bounds on the waits are asserted: a timer never fires early, but a busy
 * machine may fire it late.
 */
static void test_renewal_backs_off_until_epmd_answers(void **state)
{
    (void)state;
    static const fe_act script[] = {FE_OK, FE_HANGUP, FE_HANGUP, FE_HANGUP, FE_HANGUP, FE_OK};
    renewal *w = renewal_new(script, sizeof script / sizeof script[0]);
    uint64_t dropped = uv_now(&w->loop);
    fe_drop(&w->epmd);
    unsigned longest = 0;
    while (w->r.calls < 2) {
        uv_run(&w->loop, UV_RUN_ONCE);
        /* A peek at the private backoff: it never grows past the cap. */
        longest = w->reg.retry_ms > longest ? w->reg.retry_ms : longest;
    }
    assert_int_equal(w->r.status[1], 0);
    assert_int_equal(w->r.creation[1], 105);
    assert_int_equal(w->epmd.requests, 6);
    const uint64_t *at = w->epmd.request_at;
    assert_true(at[1] - dropped >= CN_EPMD_RETRY_FIRST_MS);
    static const uint64_t waits[] = {200, 400, 800, CN_EPMD_RETRY_MAX_MS};
    for (int k = 2; k <= 5; k++)
        assert_true(at[k] - at[k - 1] >= waits[k - 2]);
    assert_int_equal(longest, CN_EPMD_RETRY_MAX_MS);
    /* Renewed: the connection stays open, and a second loss would start over. */
    assert_int_equal(w->epmd.open_clients, 1);
    cn_epmd_unregister(&w->reg);
    uv_run(&w->loop, UV_RUN_NOWAIT);
    assert_int_equal(w->r.closed, 1);
    assert_int_equal(w->r.calls, 2);
    renewal_end(w);
}

/*
 * While the name was not registered someone else took it: the renewal reports
 * CN_ENOTALIVE once, with every handle closed, and nothing is retried after it
 * (the loop runs dry although the fake still listens).
 */
static void test_renewal_refused_is_final(void **state)
{
    (void)state;
    static const fe_act script[] = {FE_OK, FE_HANGUP, FE_TAKEN};
    renewal *w = renewal_new(script, sizeof script / sizeof script[0]);
    fe_drop(&w->epmd);
    while (w->r.calls < 2)
        uv_run(&w->loop, UV_RUN_ONCE);
    assert_int_equal(w->r.status[1], CN_ENOTALIVE);
    assert_int_equal(w->epmd.requests, 3);
    /* Nothing is open any more: unregistering does nothing, close_cb never runs. */
    cn_epmd_unregister(&w->reg);
    uv_run(&w->loop, UV_RUN_NOWAIT);
    assert_int_equal(w->r.closed, 0);
    /* And renewal_end finds no timer of a next attempt. */
    renewal_end(w);
}

/* Which moment of a renewal the close comes at. */
enum { AT_LOSS, IN_BACKOFF, AWAITING_REPLY };

static void close_during_renewal(int when)
{
    static const fe_act script[] = {FE_OK, FE_SILENT};
    renewal *w = renewal_new(script, sizeof script / sizeof script[0]);
    fe_drop(&w->epmd);
    if (when == IN_BACKOFF) {
        /* The lost socket closed and the backoff timer runs (peeking at the registration's handles). */
        while (!uv_is_closing((uv_handle_t *)&w->reg.tcp) || !uv_is_active((uv_handle_t *)&w->reg.timer))
            uv_run(&w->loop, UV_RUN_ONCE);
        assert_int_equal(w->epmd.requests, 1);
    } else if (when == AWAITING_REPLY) {
        while (w->epmd.requests < 2)
            uv_run(&w->loop, UV_RUN_ONCE);
    }
    cn_epmd_unregister(&w->reg);
    cn_epmd_unregister(&w->reg);
    for (int turn = 0; turn < 10 && w->r.closed == 0; turn++)
        uv_run(&w->loop, UV_RUN_NOWAIT);
    assert_int_equal(w->r.closed, 1);
    assert_int_equal(w->r.calls, 1);
    /* Nothing of the registration is left to keep the loop alive: renewal_end asserts it. */
    renewal_end(w);
}

static void test_close_at_the_loss(void **state)
{
    (void)state;
    close_during_renewal(AT_LOSS);
}

static void test_close_in_the_backoff(void **state)
{
    (void)state;
    close_during_renewal(IN_BACKOFF);
}

static void test_close_while_a_renewal_awaits_its_reply(void **state)
{
    (void)state;
    close_during_renewal(AWAITING_REPLY);
}

/* ---- A real epmd ------------------------------------------------------------------ */

/* The private epmd of the live test; the teardown kills it even after a failed assertion. */
static pid_t live_epmd_pid;

/* Starts `epmd -port N` in the foreground as our child. */
static pid_t start_epmd(uint16_t port)
{
    char p[8];
    snprintf(p, sizeof p, "%u", (unsigned)port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Our reachability probes make epmd complain about empty packets; keep it quiet. */
        FILE *devnull = freopen("/dev/null", "w", stderr);
        (void)devnull;
        execlp("epmd", "epmd", "-port", p, "-address", "127.0.0.1", (char *)NULL);
        _exit(127);
    }
    live_epmd_pid = pid;
    if (!wait_listening(port))
        fail_msg("epmd did not come up on port %u", (unsigned)port);
    return pid;
}

static int stop_live_epmd(void **state)
{
    (void)state;
    if (live_epmd_pid > 0) {
        kill(live_epmd_pid, SIGTERM);
        waitpid(live_epmd_pid, NULL, 0);
        live_epmd_pid = 0;
    }
    return 0;
}

/*
 * The live scenario, driven from callbacks: register, try the same name again,
 * look ours up by address and by host name, look up a missing name, unregister,
 * and poll until epmd has forgotten the name.
 */
struct live {
    uv_loop_t *loop;
    cn_epmd_reg reg, dup;
    struct result reg_r, dup_r;
    struct result by_ip, by_name, missing, after;
    uv_timer_t retry;
    int retries;
    int step;
};

static void live_next(struct live *l);

/* The callbacks reach the scenario through this: cn_epmd_reg's data holds a result. */
static struct live *the_live;

static void live_lookup_done(void *data, int status, uint16_t port, int highvsn)
{
    struct live *l = data;
    /* live_next has already advanced step past the request this answers. */
    struct result *slot = l->step == 2   ? &l->by_ip
                          : l->step == 3 ? &l->by_name
                          : l->step == 4 ? &l->missing
                                         : &l->after;
    on_lookup(slot, status, port, highvsn);
    live_next(l);
}

static void live_reg_cb(cn_epmd_reg *reg, int status, uint32_t creation)
{
    on_reg(reg, status, creation);
    live_next(the_live);
}

static void live_retry(uv_timer_t *t)
{
    struct live *l = t->data;
    assert_int_equal(cn_epmd_lookup(l->loop, "127.0.0.1", "cntest", live_lookup_done, l), 0);
}

static void live_unregistered(cn_epmd_reg *reg)
{
    on_reg_closed(reg);
    live_next(the_live);
}

static void live_next(struct live *l)
{
    switch (l->step++) {
    case 0: /* registered: the same name again must be refused */
        assert_int_equal(l->reg_r.status, 0);
        assert_int_equal(cn_epmd_register(l->loop, &l->dup, "cntest", 45679, live_reg_cb), 0);
        break;
    case 1: /* refused: look ours up by address */
        assert_int_equal(l->dup_r.status, CN_ENOTALIVE);
        assert_int_equal(cn_epmd_lookup(l->loop, "127.0.0.1", "cntest", live_lookup_done, l), 0);
        break;
    case 2: /* and by host name */
        assert_int_equal(cn_epmd_lookup(l->loop, "localhost", "cntest", live_lookup_done, l), 0);
        break;
    case 3:
        assert_int_equal(cn_epmd_lookup(l->loop, "127.0.0.1", "nosuch", live_lookup_done, l), 0);
        break;
    case 4: /* unregister; live_unregistered comes back here */
        cn_epmd_unregister(&l->reg);
        break;
    case 5: /* closed: poll until epmd has dropped the name */
        uv_timer_start(&l->retry, live_retry, 0, 0);
        break;
    default:
        if (l->after.status == 0 && ++l->retries < 100) {
            l->step = 6;
            uv_timer_start(&l->retry, live_retry, 20, 0);
            break;
        }
        uv_close((uv_handle_t *)&l->retry, NULL);
        break;
    }
}

static void test_live_epmd(void **state)
{
    (void)state;
    uint16_t port = free_port();
    start_epmd(port);
    set_epmd_port(port);
    /* An epmd answers, so nothing is started. */
    assert_int_equal(cn_epmd_ensure_running(), 0);

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct live *l = calloc(1, sizeof *l);
    assert_non_null(l);
    the_live = l;
    l->loop = &loop;
    uv_timer_init(&loop, &l->retry);
    l->retry.data = l;
    l->reg.data = &l->reg_r;
    l->reg.close_cb = live_unregistered;
    l->dup.data = &l->dup_r;
    assert_int_equal(cn_epmd_register(&loop, &l->reg, "cntest", 45678, live_reg_cb), 0);
    uv_run(&loop, UV_RUN_DEFAULT);

    assert_int_equal(l->reg_r.calls, 1);
    assert_int_equal(l->dup_r.calls, 1);
    assert_int_equal(l->dup_r.status, CN_ENOTALIVE);
    assert_int_equal(l->by_ip.status, 0);
    assert_int_equal(l->by_ip.port, 45678);
    assert_int_equal(l->by_ip.highvsn, 6);
    assert_int_equal(l->by_name.status, 0);
    assert_int_equal(l->by_name.port, 45678);
    assert_int_equal(l->missing.status, -ENOENT);
    assert_int_equal(l->reg_r.closed, 1);
    assert_int_equal(l->after.status, -ENOENT);
    assert_int_equal(uv_loop_close(&loop), 0);
    free(l);
}

/* With nothing on the port, ensure_running starts `epmd -daemon`; KILL_REQ stops it. */
static void test_ensure_running_starts_epmd(void **state)
{
    (void)state;
    uint16_t port = free_port();
    set_epmd_port(port);
    assert_false(can_connect(port));
    int rc = cn_epmd_ensure_running();
    int up = can_connect(port);

    /* Stop the daemon before any assertion can fail and leave it running. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char answer[4] = "";
    if (up && connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        write(fd, "\x00\x01\x6b", 3) == 3) {
        ssize_t n = read(fd, answer, 2);
        (void)n;
    }
    close(fd);

    assert_int_equal(rc, 0);
    assert_true(up);
    assert_memory_equal(answer, "OK", 2);
    for (int i = 0; i < 100 && can_connect(port); i++)
        sleep_ms(20);
    assert_false(can_connect(port));
}

int main(void)
{
    /* A peer hanging up while we write must be an error code, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_alive2_req),
        cmocka_unit_test(test_encode_port_please2_req),
        cmocka_unit_test(test_encode_rejects_bad_names),
        cmocka_unit_test(test_decode_alive2_resp),
        cmocka_unit_test(test_decode_port2_resp),
        cmocka_unit_test(test_decode_port2_resp_malformed),
        cmocka_unit_test(test_epmd_port_env),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_no_epmd),
        cmocka_unit_test(test_unregister_while_connecting),
        cmocka_unit_test(test_lookup_fake_replies),
        cmocka_unit_test(test_lookup_cancel),
        cmocka_unit_test(test_register_fake_replies),
        cmocka_unit_test(test_ipv6_register_reaches_the_ipv6_loopback),
        cmocka_unit_test(test_ipv6_lookup_asks_the_ipv6_address),
        cmocka_unit_test(test_ipv6_ensure_running_probes_the_ipv6_loopback),
        cmocka_unit_test(test_ipv6_bad_families),
        cmocka_unit_test(test_renewal_backs_off_until_epmd_answers),
        cmocka_unit_test(test_renewal_refused_is_final),
        cmocka_unit_test(test_close_at_the_loss),
        cmocka_unit_test(test_close_in_the_backoff),
        cmocka_unit_test(test_close_while_a_renewal_awaits_its_reply),
        cmocka_unit_test_teardown(test_live_epmd, stop_live_epmd),
        cmocka_unit_test(test_ensure_running_starts_epmd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
