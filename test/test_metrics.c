/*
 * Unit tests of cnode/metrics.h (the registry, the text, the map) and of
 * cnode/metrics_http.h (a scrape over a real socket on a real loop, also while
 * another client holds a connection open and says nothing).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <cmocka.h>

#include "cnode/error.h"
#include "cnode/mem.h"
#include "cnode/metrics.h"
#include "cnode/metrics_http.h"

static double seven(void *arg)
{
    (void)arg;
    return 7;
}

/* A small registry: a counter with a label that needs escaping, a gauge, a histogram. */
static cn_metrics *small_registry(void)
{
    cn_metrics *m = cn_metrics_new();
    cn_labels a = {{"server", "counter", "result", "ok"}};
    cn_labels b = {{"server", "we\"ird\\", "result", "ok"}};
    cn_counter *c = cn_metrics_counter(m, "cnode_calls_total", "Calls.", &a);
    cn_counter_inc(c);
    cn_counter_inc(c);
    cn_counter_inc(cn_metrics_counter(m, "cnode_calls_total", "Calls.", &b));
    cn_metrics_gauge(m, "cnode_depth", "Depth.", NULL, seven, NULL);
    cn_histogram *h = cn_metrics_histogram(m, "cnode_sync_seconds", "Sync.", NULL);
    cn_metrics_observe(h, 5000);       /* 5 us: the first bucket */
    cn_metrics_observe(h, 3000000);    /* 3 ms: le 0.005 */
    cn_metrics_observe(h, 20000000000u); /* 20 s: only +Inf */
    return m;
}

static void the_same_series_is_found_again(void **state)
{
    (void)state;
    cn_metrics *m = cn_metrics_new();
    cn_labels a = {{"server", "x", NULL, NULL}}, b = {{"server", "y", NULL, NULL}};
    cn_counter *c1 = cn_metrics_counter(m, "n_total", "N.", &a);
    cn_counter *c2 = cn_metrics_counter(m, "n_total", "N.", &a);
    cn_counter *c3 = cn_metrics_counter(m, "n_total", "N.", &b);
    assert_ptr_equal(c1, c2);
    assert_ptr_not_equal(c1, c3);
    cn_metrics_free(m);
}

static const char expected_text[] =
    "# HELP cnode_calls_total Calls.\n"
    "# TYPE cnode_calls_total counter\n"
    "cnode_calls_total{server=\"counter\",result=\"ok\"} 2\n"
    "cnode_calls_total{server=\"we\\\"ird\\\\\",result=\"ok\"} 1\n"
    "# HELP cnode_depth Depth.\n"
    "# TYPE cnode_depth gauge\n"
    "cnode_depth 7\n"
    "# HELP cnode_sync_seconds Sync.\n"
    "# TYPE cnode_sync_seconds histogram\n"
    "cnode_sync_seconds_bucket{le=\"1e-05\"} 1\n"
    "cnode_sync_seconds_bucket{le=\"2.5e-05\"} 1\n"
    "cnode_sync_seconds_bucket{le=\"5e-05\"} 1\n"
    "cnode_sync_seconds_bucket{le=\"0.0001\"} 1\n"
    "cnode_sync_seconds_bucket{le=\"0.00025\"} 1\n"
    "cnode_sync_seconds_bucket{le=\"0.0005\"} 1\n"
    "cnode_sync_seconds_bucket{le=\"0.001\"} 1\n"
    "cnode_sync_seconds_bucket{le=\"0.0025\"} 1\n"
    "cnode_sync_seconds_bucket{le=\"0.005\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"0.01\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"0.025\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"0.05\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"0.1\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"0.25\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"0.5\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"1\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"2.5\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"5\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"10\"} 2\n"
    "cnode_sync_seconds_bucket{le=\"+Inf\"} 3\n"
    "cnode_sync_seconds_sum 20.003005\n"
    "cnode_sync_seconds_count 3\n";

static void renders_the_exposition_format(void **state)
{
    (void)state;
    cn_metrics *m = small_registry();
    size_t len;
    char *text = cn_metrics_render(m, &len);
    assert_string_equal(text, expected_text);
    assert_int_equal(len, strlen(expected_text));
    free(text);
    cn_metrics_free(m);
}

static void a_removed_gauge_reads_zero_and_another_owner_keeps_it(void **state)
{
    (void)state;
    cn_metrics *m = cn_metrics_new();
    int a, b;
    cn_series *s = cn_metrics_gauge(m, "g", "G.", NULL, seven, &a);
    /* A restarted owner took it over: the old owner's remove leaves it alone. */
    assert_ptr_equal(cn_metrics_gauge(m, "g", "G.", NULL, seven, &b), s);
    cn_metrics_gauge_remove(m, s, &a);
    size_t len;
    char *text = cn_metrics_render(m, &len);
    assert_non_null(strstr(text, "\ng 7\n"));
    free(text);
    cn_metrics_gauge_remove(m, s, &b);
    text = cn_metrics_render(m, &len);
    assert_non_null(strstr(text, "\ng 0\n"));
    free(text);
    cn_metrics_free(m);
}

/* The map, printed by ei, as an Elixir user would see its shape. */
static void encodes_the_map(void **state)
{
    (void)state;
    cn_metrics *m = small_registry();
    ei_x_buff x;
    cn_x_new_with_version(&x);
    cn_metrics_encode(m, &x);
    char *s = NULL;
    int i = 1; /* after the version byte */
    int pr = ei_s_print_term(&s, x.buff, &i);
    assert_true(pr > 0);
    assert_int_equal(i, x.index);
    /* ei prints binaries as their bytes: "counter" and "ok". */
    assert_string_equal(s, "#{calls_total => #{#{server => #Bin<99,111,117,110,116,101,114>, result => #Bin<111,107>} => 2, "
                           "#{server => #Bin<119,101,34,105,114,100,92>, result => #Bin<111,107>} => 1}, "
                           "depth => 7.000000, sync_seconds => #{count => 3, sum => 20.003005, buckets => "
                           "[{0.000010, 1}, {0.000025, 1}, {0.000050, 1}, {0.000100, 1}, {0.000250, 1}, "
                           "{0.000500, 1}, {0.001000, 1}, {0.002500, 1}, {0.005000, 2}, {0.010000, 2}, "
                           "{0.025000, 2}, {0.050000, 2}, {0.100000, 2}, {0.250000, 2}, {0.500000, 2}, "
                           "{1.000000, 2}, {2.500000, 2}, {5.000000, 2}, {10.000000, 2}, {infinity, 3}]}}");
    free(s);
    ei_x_free(&x);
    cn_metrics_free(m);
}

static void the_default_registry_has_the_runtime_figures(void **state)
{
    (void)state;
    uint64_t before = cn_metrics_fixed[CN_MET_REFUSED_COOKIE];
    cn_metrics_refused(CN_ECOOKIE);
    assert_int_equal(cn_metrics_fixed[CN_MET_REFUSED_COOKIE], before + 1);
    size_t len;
    char *text = cn_metrics_render(cn_metrics_default(), &len);
    char line[96];
    snprintf(line, sizeof line, "cnode_handshake_refusals_total{cause=\"bad_cookie\"} %llu\n",
             (unsigned long long)(before + 1));
    assert_non_null(strstr(text, line));
    assert_non_null(strstr(text, "# TYPE cnode_journal_sync_seconds histogram\n"));
    free(text);
}

/* ---- The endpoint over a socket ---- */

typedef struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    const char *request;    /* NULL: connect and say nothing */
    char got[65536];
    size_t len;
    int done;
} client;

typedef struct scrape {
    cn_metrics_http *http;
    client idle, real;
} scrape;

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    client *c = h->data;
    b->base = c->got + c->len;
    b->len = sizeof c->got - 1 - c->len;
}

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    client *c = s->data;
    if (n > 0) {
        c->len += (size_t)n;
        c->got[c->len] = '\0';
        return;
    }
    if (n < 0) {
        c->done = 1;
        scrape *sc = s->loop->data;
        /* The real scrape is over: close the idle client and the endpoint, and the loop ends. */
        uv_close((uv_handle_t *)&sc->idle.tcp, on_closed);
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        cn_metrics_http_close(sc->http);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    client *c = req->data;
    assert_int_equal(status, 0);
    if (c->request == NULL)
        return;
    uv_buf_t b = uv_buf_init((char *)c->request, (unsigned)strlen(c->request));
    assert_int_equal(uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, NULL), 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read), 0);
}

static void dial(uv_loop_t *loop, client *c, unsigned port, const char *request)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", (int)port, &a);
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c->creq.data = c;
    c->request = request;
    assert_int_equal(uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&a, on_connect), 0);
}

static void serves_a_scrape_beside_an_idle_client(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    cn_metrics *m = small_registry();
    scrape *sc = cn_calloc(1, sizeof *sc);
    loop.data = sc;
    assert_int_equal(cn_metrics_http_start(&loop, "127.0.0.1:0", m, &sc->http), 0);
    unsigned port = cn_metrics_http_port(sc->http);
    assert_true(port > 0);
    dial(&loop, &sc->idle, port, NULL);
    dial(&loop, &sc->real, port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(sc->real.done);
    assert_non_null(strstr(sc->real.got, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(sc->real.got, "text/plain; version=0.0.4"));
    assert_non_null(strstr(sc->real.got, "\r\n\r\n# HELP cnode_calls_total Calls.\n"));
    assert_non_null(strstr(sc->real.got, "cnode_sync_seconds_count 3\n"));
    assert_int_equal(uv_loop_close(&loop), 0);
    free(sc);
    cn_metrics_free(m);
}

static void refuses_a_bad_address(void **state)
{
    (void)state;
    cn_metrics_http *h = NULL;
    cn_metrics *m = cn_metrics_new();
    assert_true(cn_metrics_http_start(uv_default_loop(), "localhost:9100", m, &h) < 0);
    assert_true(cn_metrics_http_start(uv_default_loop(), "127.0.0.1", m, &h) < 0);
    assert_true(cn_metrics_http_start(uv_default_loop(), "127.0.0.1:70000", m, &h) < 0);
    assert_null(h);
    cn_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_same_series_is_found_again),
        cmocka_unit_test(renders_the_exposition_format),
        cmocka_unit_test(a_removed_gauge_reads_zero_and_another_owner_keeps_it),
        cmocka_unit_test(encodes_the_map),
        cmocka_unit_test(the_default_registry_has_the_runtime_figures),
        cmocka_unit_test(serves_a_scrape_beside_an_idle_client),
        cmocka_unit_test(refuses_a_bad_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
