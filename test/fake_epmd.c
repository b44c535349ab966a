#include "test/fake_epmd.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/buf.h"

struct fe_client {
    uv_tcp_t tcp;
    uv_write_t w;
    fake_epmd *f;
    unsigned char buf[512];
    size_t got;
    unsigned char reply[32];
    int open;
    fe_client *next;
};

static void client_closed(uv_handle_t *h)
{
    fe_client *c = h->data;
    fake_epmd *f = c->f;
    for (fe_client **pp = &f->clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    free(c);
}

static void client_close(fe_client *c)
{
    if (!c->open)
        return;
    c->open = 0;
    c->f->open_clients--;
    uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    fe_client *c = h->data;
    if (c->got == sizeof c->buf)
        c->got = 0;
    *buf = uv_buf_init((char *)c->buf + c->got, (unsigned)(sizeof c->buf - c->got));
}

/* Acts on one whole ALIVE2_REQ as the script says. */
static void act(fe_client *c)
{
    fake_epmd *f = c->f;
    assert_true(f->requests < FE_MAX_REQUESTS);
    int n = f->requests++;
    f->request_at[n] = uv_now(c->tcp.loop);
    fe_act a = f->script[(size_t)n < f->nscript ? (size_t)n : f->nscript - 1];
    if (a == FE_HANGUP) {
        client_close(c);
        return;
    }
    if (a == FE_SILENT)
        return;
    uint32_t creation = 100 + (uint32_t)n;
    unsigned char r[6] = {118, a == FE_OK ? 0 : 1, (unsigned char)(creation >> 24), (unsigned char)(creation >> 16),
                          (unsigned char)(creation >> 8), (unsigned char)creation};
    memcpy(c->reply, r, sizeof r);
    uv_buf_t b = uv_buf_init((char *)c->reply, sizeof r);
    assert_int_equal(uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, NULL), 0);
}

/* PORT2_RESP for any name: node_port, a normal node on TCP, versions 6..5, name "peer". */
static void port_please(fe_client *c)
{
    uint16_t port = c->f->node_port;
    unsigned char r[] = {119, port == 0, (unsigned char)(port >> 8), (unsigned char)port, 77, 0, 0, 6, 0, 5,
                         0, 4, 'p', 'e', 'e', 'r', 0, 0};
    size_t n = port == 0 ? 2 : sizeof r;
    memcpy(c->reply, r, n);
    uv_buf_t b = uv_buf_init((char *)c->reply, (unsigned)n);
    assert_int_equal(uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, NULL), 0);
}

static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    fe_client *c = s->data;
    if (nread < 0) {
        client_close(c);
        return;
    }
    c->got += (size_t)nread;
    while (c->open && c->got >= 2 && c->got >= 2 + (size_t)cn_get_u16(c->buf)) {
        size_t len = 2 + (size_t)cn_get_u16(c->buf);
        int alive2 = len > 2 && c->buf[2] == 120;
        int port2 = len > 2 && c->buf[2] == 122;
        memmove(c->buf, c->buf + len, c->got - len);
        c->got -= len;
        if (alive2)
            act(c);
        else if (port2)
            port_please(c);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    assert_int_equal(status, 0);
    fake_epmd *f = server->data;
    fe_client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->f = f;
    c->tcp.data = c;
    c->open = 1;
    uv_tcp_init(server->loop, &c->tcp);
    assert_int_equal(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
    c->next = f->clients;
    f->clients = c;
    f->open_clients++;
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
}

void fe_start(uv_loop_t *loop, fake_epmd *f, const fe_act *script, size_t nscript)
{
    assert_true(nscript > 0);
    memset(f, 0, sizeof *f);
    f->script = script;
    f->nscript = nscript;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_init(loop, &f->server), 0);
    f->server.data = f;
    assert_int_equal(uv_tcp_bind(&f->server, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->server, 8, on_connection), 0);
    int alen = sizeof a;
    uv_tcp_getsockname(&f->server, (struct sockaddr *)&a, &alen);
    f->port = ntohs(a.sin_port);
    const char *old = getenv("ERL_EPMD_PORT");
    f->had_port = old != NULL;
    if (old)
        snprintf(f->saved_port, sizeof f->saved_port, "%s", old);
    char port[16];
    snprintf(port, sizeof port, "%u", (unsigned)f->port);
    setenv("ERL_EPMD_PORT", port, 1);
}

void fe_drop(fake_epmd *f)
{
    for (fe_client *c = f->clients; c; c = c->next)
        client_close(c);
}

void fe_close(fake_epmd *f)
{
    fe_drop(f);
    uv_close((uv_handle_t *)&f->server, NULL);
    if (f->had_port)
        setenv("ERL_EPMD_PORT", f->saved_port, 1);
    else
        unsetenv("ERL_EPMD_PORT");
}
