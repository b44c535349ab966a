/*
 * The node (cnode/node.h): its loop turns and its close.
 *
 * Loop turns: busy polling after light turns and the coalescing pause after
 * heavy ones, observed through cn_node_get_stats over the in-memory transport.
 * No test here measures time: each asserts what the loop chose to do, counted
 * by the node itself.
 *
 * Close: the callback fires exactly once, on a later turn, whatever the node
 * was doing (not started, registering with epmd, registered, looking a
 * --connect target up, resolving its host, dialing it, in its handshake), and
 * cn_node_free refuses the node until then. A fake epmd and a silent peer in
 * the same loop hold the node in each of those states. "Promptly" is counted in
 * loop turns that never block: once closed, nothing the node owns may wait for
 * a timer or the network (an epmd lookup's 5 s timeout, a name resolution).
 *
 * Origin: cn_proc_msg_origin names the node a message came from, whatever its
 * contents claim. Losing epmd: a node whose registration epmd drops registers
 * again, keeping its creation, and reports a name taken meanwhile.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "cnode/addr.h"
#include "cnode/buf.h"
#include "cnode/cpu_watch.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/node.h"
#include "cnode/proc.h"
#include "cnode/protocol.h"
#include "test/fake_epmd.h"
#include "test/fake_peer.h"
#include "test/fake_stat.h"

typedef struct fx {
    fake_peer fp;
    cn_proc *sink;
    int got;
    int answer;     /* the sink answers each message to the peer's pid 1 */
} fx;

static void sink_message(cn_proc *p, const char *buf, size_t len)
{
    (void)buf;
    (void)len;
    fx *f = cn_proc_data(p);
    f->got++;
    if (!f->answer)
        return;
    erlang_pid to;
    fp_pid(&to, 1);
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_atom(&x, "ok");
    assert_int_equal(cn_send(p, &to, x.buff, (size_t)x.index), 0);
    ei_x_free(&x);
}

static const cn_proc_ops sink_ops = {.message = sink_message};

static fx *start_cfg(const cn_node_config *cfg)
{
    fx *f = test_calloc(1, sizeof *f);
    assert_int_equal(fp_setup_with(&f->fp, cfg, "k", FP_FLAGS_ALIAS), 0);
    f->sink = cn_proc_spawn(f->fp.node, &sink_ops, f);
    assert_non_null(f->sink);
    assert_int_equal(cn_proc_register(f->sink, "sink"), 0);
    return f;
}

static fx *start(unsigned busy_poll_us, unsigned coalesce_us)
{
    cn_node_config cfg = {.cookie = "k", .busy_poll_us = busy_poll_us, .coalesce_us = coalesce_us};
    return start_cfg(&cfg);
}

static void stop(fx *f)
{
    fp_teardown(&f->fp);
    test_free(f);
}

/* n messages to "sink" in one read, then the loop turns of fp_run. */
static void send_batch(fx *f, int n)
{
    cn_buf b;
    cn_buf_init(&b);
    erlang_pid from;
    fp_pid(&from, 1);
    for (int i = 0; i < n; i++) {
        ei_x_buff ctl, msg;
        fp_ctl_reg_send(&ctl, &from, "sink");
        ei_x_new_with_version(&msg);
        ei_x_encode_long(&msg, i);
        fp_frame(&b, &ctl, &msg);
        ei_x_free(&ctl);
        ei_x_free(&msg);
    }
    cn_conn_feed(f->fp.conn, b.data, b.len);
    cn_buf_free(&b);
    fp_run(&f->fp);
}

static cn_node_stats stats(fx *f)
{
    cn_node_stats st;
    cn_node_get_stats(f->fp.node, &st);
    return st;
}

static void a_light_turn_keeps_the_loop_polling(void **state)
{
    (void)state;
    fx *f = start(1000, 150);
    assert_int_equal(stats(f).polls, 0);
    send_batch(f, 1);
    assert_int_equal(f->got, 1);
    cn_node_stats st = stats(f);
    assert_true(st.polls > 0);
    assert_int_equal(st.pauses, 0);
    /* The polling turns after the request found nothing, and each yielded the core. */
    assert_true(st.yields > 0);
    assert_true(st.yields < st.polls + 1);
    stop(f);
}

typedef struct hook_probe {
    cn_node_flush_hook hook;
    fx *f;
    int calls;
    int got_at_first;       /* messages delivered when the hook first ran */
    uint64_t frames_at_first;
    int remove_self;
} hook_probe;

/* Runs before the turn's output is written: what it sends leaves with the turn's. */
static void probe_hook(cn_node_flush_hook *h)
{
    hook_probe *p = h->data;
    if (p->calls++ == 0) {
        p->got_at_first = p->f->got;
        p->frames_at_first = stats(p->f).frames_out;
        erlang_pid to;
        fp_pid(&to, 1);
        char msg[16];
        int n = 0;
        ei_encode_version(msg, &n);
        ei_encode_atom(msg, &n, "hooked");
        assert_int_equal(cn_send(p->f->sink, &to, msg, (size_t)n), 0);
    }
    if (p->remove_self)
        cn_node_remove_flush_hook(p->f->fp.node, h);
}

static void flush_hooks_run_after_the_turns_messages_before_its_output(void **state)
{
    (void)state;
    fx *f = start(0, 0);
    hook_probe a = {.hook = {.cb = probe_hook}, .f = f, .remove_self = 1};
    hook_probe b = {.hook = {.cb = probe_hook}, .f = f};
    a.hook.data = &a;
    b.hook.data = &b;
    cn_node_add_flush_hook(f->fp.node, &a.hook);
    cn_node_add_flush_hook(f->fp.node, &b.hook);
    send_batch(f, 3);
    /* Both ran in the turn that delivered the batch, after it; a removed itself. */
    assert_int_equal(a.calls, 1);
    assert_true(b.calls >= 1);
    assert_int_equal(a.got_at_first, 3);
    assert_int_equal(b.got_at_first, 3);
    /* Their two sends went out to the peer. */
    assert_true(stats(f).frames_out >= a.frames_at_first + 2);
    send_batch(f, 1);
    assert_int_equal(a.calls, 1);
    cn_node_remove_flush_hook(f->fp.node, &b.hook);
    int calls = b.calls;
    send_batch(f, 1);
    assert_int_equal(b.calls, calls);
    stop(f);
}

static void other_hook(cn_node_flush_hook *h)
{
    (void)h;
}

/* A hook is found by its callback: the first added with it, until it is removed. */
static void a_flush_hook_is_found_by_its_callback(void **state)
{
    (void)state;
    fx *f = start(0, 0);
    cn_node *node = f->fp.node;
    hook_probe a = {.hook = {.cb = probe_hook}, .f = f};
    hook_probe b = {.hook = {.cb = probe_hook}, .f = f};
    cn_node_flush_hook other = {.cb = other_hook};
    assert_null(cn_node_find_flush_hook(node, probe_hook));
    cn_node_add_flush_hook(node, &other);
    cn_node_add_flush_hook(node, &a.hook);
    cn_node_add_flush_hook(node, &b.hook);
    assert_ptr_equal(cn_node_find_flush_hook(node, probe_hook), &a.hook);
    assert_ptr_equal(cn_node_find_flush_hook(node, other_hook), &other);
    cn_node_remove_flush_hook(node, &a.hook);
    assert_ptr_equal(cn_node_find_flush_hook(node, probe_hook), &b.hook);
    cn_node_remove_flush_hook(node, &b.hook);
    cn_node_remove_flush_hook(node, &other);
    assert_null(cn_node_find_flush_hook(node, probe_hook));
    assert_null(cn_node_find_flush_hook(node, other_hook));
    stop(f);
}

static void no_busy_polling_when_it_is_off(void **state)
{
    (void)state;
    fx *f = start(0, 150);
    send_batch(f, 1);
    send_batch(f, 3);
    assert_int_equal(f->got, 4);
    assert_int_equal(stats(f).polls, 0);
    assert_int_equal(stats(f).yields, 0);
    assert_int_equal(stats(f).pauses, 0);
    stop(f);
}

/* Sleeps past the interval of the node's CPU watch (cnode/cpu_watch.h). */
static void past_the_cpu_watch_interval(void)
{
    struct timespec ts = {0, (long)(CN_CPU_WATCH_INTERVAL_NS + 10000000)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/*
 * With cpu_stat_path, a light turn polls on only while the other processes
 * leave a core to spare. The file stands for /proc/stat: the first turn takes
 * a baseline (a core is to spare until an interval says otherwise); then every
 * CPU busy with others for the whole interval; then every CPU idle.
 */
static void no_busy_polling_without_a_core_to_spare(void **state)
{
    (void)state;
    char path[] = "/tmp/test_node_stat.XXXXXX";
    fs_temp_stat(path);
    fs_write_stat(path, 1000, 1000);
    cn_node_config cfg = {.cookie = "k", .busy_poll_us = 1000, .coalesce_us = 150, .cpu_stat_path = path};
    fx *f = start_cfg(&cfg);
    send_batch(f, 1);
    assert_true(stats(f).polls > 0);
    assert_int_equal(stats(f).no_spare, 0);

    fs_write_stat(path, 1000000, 1000);
    past_the_cpu_watch_interval();
    uint64_t polls = stats(f).polls;
    send_batch(f, 1);
    assert_int_equal(f->got, 2);
    assert_int_equal(stats(f).polls, polls);
    assert_int_equal(stats(f).no_spare, 1);

    fs_write_stat(path, 1000000, 1000000);
    past_the_cpu_watch_interval();
    send_batch(f, 1);
    assert_int_equal(f->got, 3);
    assert_true(stats(f).polls > polls);
    assert_int_equal(stats(f).no_spare, 1);
    stop(f);
    unlink(path);
}

static void a_heavy_turn_pauses_instead_of_polling(void **state)
{
    (void)state;
    fx *f = start(1000, 1);
    send_batch(f, 16);
    assert_int_equal(f->got, 16);
    cn_node_stats st = stats(f);
    assert_int_equal(st.pauses, 1);
    assert_int_equal(st.polls, 0);
    /* After that, 8 is heavy too: many callers are about. */
    send_batch(f, 8);
    assert_int_equal(stats(f).pauses, 2);
    assert_int_equal(stats(f).polls, 0);
    /* Seven is still a light turn: it polls on when no heavy turn came before. */
    fx *g = start(1000, 1);
    send_batch(g, 7);
    assert_int_equal(stats(g).pauses, 0);
    assert_true(stats(g).polls > 0);
    stop(g);
    stop(f);
}

/*
 * A few callers, all answered in one turn, send nothing more during a pause:
 * turns of 8 never pause while no turn lately served 16 (sched.c's
 * COALESCE_MIN_PEAK).
 */
static void a_few_callers_never_pause(void **state)
{
    (void)state;
    fx *f = start(1000, 1);
    for (int i = 0; i < 5; i++)
        send_batch(f, 8);
    assert_int_equal(f->got, 40);
    assert_int_equal(stats(f).pauses, 0);
    assert_true(stats(f).polls > 0);
    stop(f);
}

/* The light turns right after a heavy one pause too (sched.c's COALESCE_HOLD_TURNS), then polling resumes. */
static void light_turns_after_a_heavy_one_pause_for_a_while(void **state)
{
    (void)state;
    fx *f = start(1000, 1);
    send_batch(f, 16);
    assert_int_equal(stats(f).pauses, 1);
    int held = 0;
    while (stats(f).polls == 0 && held < 100) {
        send_batch(f, 1);
        held++;
    }
    assert_int_equal(f->got, 16 + held);
    /* Eight light turns paused; the ninth polled on. */
    assert_int_equal(held, 9);
    assert_int_equal(stats(f).pauses, 1 + 8);
    /* A heavy turn holds the pauses again. */
    send_batch(f, 16);
    uint64_t polls = stats(f).polls;
    send_batch(f, 1);
    assert_int_equal(stats(f).polls, polls);
    assert_int_equal(stats(f).pauses, 1 + 8 + 2);
    stop(f);
}

/*
 * A heavy turn that wrote nothing (a cast stream) pauses cast_pause_us, not
 * coalesce_us; the light turns held after it, and a heavy turn that answered,
 * pause as before.
 */
static void a_heavy_turn_of_casts_pauses_longer(void **state)
{
    (void)state;
    cn_node_config cfg = {.cookie = "k", .busy_poll_us = 1000, .coalesce_us = 1, .cast_pause_us = 2};
    fx *f = start_cfg(&cfg);
    send_batch(f, 16);
    assert_int_equal(f->got, 16);
    assert_int_equal(stats(f).pauses, 1);
    assert_int_equal(stats(f).cast_pauses, 1);
    send_batch(f, 1);
    assert_int_equal(stats(f).pauses, 2);
    assert_int_equal(stats(f).cast_pauses, 1);
    f->answer = 1;
    uint64_t frames = stats(f).frames_out;
    send_batch(f, 16);
    assert_int_equal(f->got, 33);
    assert_int_equal(stats(f).frames_out, frames + 16);
    assert_int_equal(stats(f).pauses, 3);
    assert_int_equal(stats(f).cast_pauses, 1);
    stop(f);
}

/* While a remote process monitors one of ours (a call in flight), a turn that wrote nothing pauses as before. */
static void a_call_in_flight_keeps_the_short_pause(void **state)
{
    (void)state;
    cn_node_config cfg = {.cookie = "k", .busy_poll_us = 1000, .coalesce_us = 1, .cast_pause_us = 2};
    fx *f = start_cfg(&cfg);
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 7);
    fp_ref(&ref, 7, 2, 3);
    fp_send_monitor(&f->fp, DOP_MONITOR_P, &from, "sink", NULL, &ref);
    fp_run(&f->fp);
    assert_int_equal(stats(f).monitors, 1);
    send_batch(f, 16);
    assert_int_equal(f->got, 16);
    assert_int_equal(stats(f).pauses, 1);
    assert_int_equal(stats(f).cast_pauses, 0);
    /* The monitor gone, the same turn takes the cast pause. */
    fp_send_monitor(&f->fp, DOP_DEMONITOR_P, &from, "sink", NULL, &ref);
    fp_run(&f->fp);
    assert_int_equal(stats(f).monitors, 0);
    send_batch(f, 16);
    assert_int_equal(stats(f).cast_pauses, 1);
    stop(f);
}

/* cast_pause_us no longer than coalesce_us (0 included, the struct's default) changes nothing. */
static void a_cast_pause_no_longer_than_coalescing_is_not_taken(void **state)
{
    (void)state;
    for (unsigned cast_pause_us = 0; cast_pause_us <= 1; cast_pause_us++) {
        cn_node_config cfg = {.cookie = "k", .busy_poll_us = 1000, .coalesce_us = 1, .cast_pause_us = cast_pause_us};
        fx *f = start_cfg(&cfg);
        send_batch(f, 16);
        assert_int_equal(stats(f).pauses, 1);
        assert_int_equal(stats(f).cast_pauses, 0);
        stop(f);
    }
}

static void coalescing_off_means_every_turn_polls(void **state)
{
    (void)state;
    fx *f = start(1000, 0);
    send_batch(f, 20);
    assert_int_equal(f->got, 20);
    assert_int_equal(stats(f).pauses, 0);
    assert_true(stats(f).polls > 0);
    stop(f);
}

static void a_quiet_node_stops_polling_after_the_window(void **state)
{
    (void)state;
    fx *f = start(1, 150);
    send_batch(f, 1);
    /* Sleep well past the 1 us window: the next turn must give up polling. */
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
    fp_run(&f->fp);
    uint64_t polls = stats(f).polls;
    fp_run(&f->fp);
    fp_run(&f->fp);
    assert_int_equal(stats(f).polls, polls);
    /* And a new request opens a new window. */
    send_batch(f, 1);
    assert_int_equal(f->got, 2);
    stop(f);
}

/* ---- The close contract ---- */

typedef struct srv srv;

typedef struct srv_client {
    uv_tcp_t tcp;
    uv_write_t w;
    srv *srv;
    char buf[512];
    size_t got;
    int open;
} srv_client;

/*
 * A test-owned TCP server in the node's loop. As a fake epmd (answer set) it
 * answers PORT_PLEASE2 with `answer_port` and ALIVE2 with success; otherwise it
 * reads and stays silent, as a peer that never finishes a handshake.
 */
struct srv {
    uv_tcp_t tcp;
    uint16_t port;
    int answer;
    uint16_t answer_port;
    int accepted;
    int requests;               /* whole length-prefixed messages read */
    int eofs;                   /* clients that hung up */
    void (*on_request)(void);   /* before the answer */
    srv_client *clients[16];
    int nclients;
};

/* Clients are freed by closing_end, once the loop has run their close callbacks. */
static void client_close(srv_client *c)
{
    if (!c->open)
        return;
    c->open = 0;
    uv_close((uv_handle_t *)&c->tcp, NULL);
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    srv_client *c = h->data;
    if (c->got == sizeof c->buf)
        c->got = 0;
    *buf = uv_buf_init(c->buf + c->got, (unsigned)(sizeof c->buf - c->got));
}

static void answer(srv_client *c, unsigned char tag)
{
    static unsigned char reply[64];
    size_t n = 0;
    if (tag == 122) { /* PORT2_RESP: ok, port, normal node, TCP, versions 6..5, name "peer", no extra */
        unsigned char r[] = {119, 0, (unsigned char)(c->srv->answer_port >> 8), (unsigned char)c->srv->answer_port,
                             77, 0, 0, 6, 0, 5, 0, 4, 'p', 'e', 'e', 'r', 0, 0};
        memcpy(reply, r, n = sizeof r);
    } else if (tag == 120) { /* ALIVE2_X_RESP: ok, creation 5 */
        unsigned char r[] = {118, 0, 0, 0, 0, 5};
        memcpy(reply, r, n = sizeof r);
    } else {
        return;
    }
    uv_buf_t b = uv_buf_init((char *)reply, (unsigned)n);
    assert_int_equal(uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, NULL), 0);
}

static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    srv_client *c = s->data;
    if (nread < 0) {
        c->srv->eofs++;
        client_close(c);
        return;
    }
    c->got += (size_t)nread;
    while (c->got >= 2 && c->got >= 2 + (size_t)cn_get_u16(c->buf)) {
        size_t len = 2 + (size_t)cn_get_u16(c->buf);
        unsigned char tag = len > 2 ? (unsigned char)c->buf[2] : 0;
        c->srv->requests++;
        memmove(c->buf, c->buf + len, c->got - len);
        c->got -= len;
        if (c->srv->on_request)
            c->srv->on_request();
        if (c->srv->answer)
            answer(c, tag);
    }
}

static void srv_connection(uv_stream_t *server, int status)
{
    assert_int_equal(status, 0);
    srv *s = server->data;
    srv_client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->srv = s;
    c->tcp.data = c;
    c->open = 1;
    uv_tcp_init(server->loop, &c->tcp);
    assert_int_equal(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
    assert_true(s->nclients < 16);
    s->clients[s->nclients++] = c;
    s->accepted++;
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
}

/* Listens on host only (127.0.0.1, or ::1 for the IPv6 tests) at a free port. */
static void srv_start_at(uv_loop_t *loop, srv *s, int answering, const char *host)
{
    memset(s, 0, sizeof *s);
    s->answer = answering;
    struct sockaddr_storage a;
    assert_int_equal(cn_addr_literal(strchr(host, ':') ? AF_INET6 : AF_INET, host, 0, &a), 0);
    assert_int_equal(uv_tcp_init(loop, &s->tcp), 0);
    s->tcp.data = s;
    assert_int_equal(uv_tcp_bind(&s->tcp, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->tcp, 8, srv_connection), 0);
    int alen = sizeof a;
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&a, &alen);
    s->port = cn_addr_port((struct sockaddr *)&a);
}

static void srv_stop(srv *s)
{
    for (int i = 0; i < s->nclients; i++)
        client_close(s->clients[i]);
    uv_close((uv_handle_t *)&s->tcp, NULL);
}

typedef struct closing {
    uv_loop_t loop;
    cn_node *node;
    srv epmd, peer;
    int closes;
    int free_in_callback;       /* cn_node_free from inside the close callback */
    int readies, ready_status;
    char saved_port[16];
    int had_port;
} closing;

static closing *the_closing;

static void on_closed(cn_node *node)
{
    assert_ptr_equal(node, the_closing->node);
    the_closing->closes++;
    if (the_closing->free_in_callback) {
        assert_int_equal(cn_node_free(node), 0);
        the_closing->node = NULL;
    }
}

static void on_ready(cn_node *node, int status)
{
    (void)node;
    the_closing->readies++;
    the_closing->ready_status = status;
}

/* A node on a fresh loop, with a fake epmd (answering or not) that the node will use. */
/*
 * A node of family (AF_INET: closing@127.0.0.1, AF_INET6: closing@::1), with
 * the fake epmd and the silent peer listening on that family's loopback only.
 */
static closing *closing_new_family(int epmd_answers, int no_epmd, int family)
{
    const char *host = family == AF_INET6 ? "::1" : "127.0.0.1";
    closing *c = test_calloc(1, sizeof *c);
    the_closing = c;
    assert_int_equal(uv_loop_init(&c->loop), 0);
    srv_start_at(&c->loop, &c->epmd, epmd_answers, host);
    srv_start_at(&c->loop, &c->peer, 0, host);
    c->epmd.answer_port = c->peer.port;
    const char *old = getenv("ERL_EPMD_PORT");
    c->had_port = old != NULL;
    if (old)
        snprintf(c->saved_port, sizeof c->saved_port, "%s", old);
    char port[16];
    snprintf(port, sizeof port, "%u", (unsigned)c->epmd.port);
    setenv("ERL_EPMD_PORT", port, 1);
    cn_node_config cfg = {.name = family == AF_INET6 ? "closing@::1" : "closing@127.0.0.1",
                          .cookie = "k", .no_epmd = no_epmd, .family = family};
    assert_int_equal(cn_node_new(&c->loop, &cfg, &c->node), 0);
    return c;
}

static closing *closing_new(int epmd_answers, int no_epmd)
{
    return closing_new_family(epmd_answers, no_epmd, AF_INET);
}

static void run_until(closing *c, const int *flag, int at_least)
{
    while (*flag < at_least)
        uv_run(&c->loop, UV_RUN_ONCE);
}

/* Closes the node: not at once, not twice, and within turns that never block. */
static void close_promptly(closing *c)
{
    cn_node_close(c->node, on_closed);
    assert_int_equal(c->closes, 0);
    assert_int_equal(cn_node_free(c->node), CN_EBUSY);
    /* The node may be freed inside the callback: nothing may touch it afterwards. */
    for (int turn = 0; turn < 50 && c->closes == 0; turn++)
        uv_run(&c->loop, UV_RUN_NOWAIT);
    assert_int_equal(c->closes, 1);
}

static void closing_end(closing *c)
{
    srv_stop(&c->epmd);
    srv_stop(&c->peer);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(c->closes, 1);
    assert_int_equal(cn_node_free(c->node), 0); /* NULL when the callback freed it */
    assert_int_equal(uv_loop_close(&c->loop), 0);
    for (int i = 0; i < c->epmd.nclients; i++)
        free(c->epmd.clients[i]);
    for (int i = 0; i < c->peer.nclients; i++)
        free(c->peer.clients[i]);
    if (c->had_port)
        setenv("ERL_EPMD_PORT", c->saved_port, 1);
    else
        unsetenv("ERL_EPMD_PORT");
    test_free(c);
}

static void close_before_start(void **state)
{
    (void)state;
    assert_int_equal(cn_node_free(NULL), 0);
    closing *c = closing_new(0, 1);
    close_promptly(c);
    closing_end(c);
}

static void close_after_start_without_epmd(void **state)
{
    (void)state;
    closing *c = closing_new(0, 1);
    assert_int_equal(cn_node_start(c->node, on_ready), 0);
    assert_int_equal(c->readies, 1);
    assert_int_equal(c->ready_status, 0);
    close_promptly(c);
    closing_end(c);
}

/* epmd took the connection and the ALIVE2 request but has not answered. */
static void close_while_registering(void **state)
{
    (void)state;
    closing *c = closing_new(0, 0);
    assert_int_equal(cn_node_start(c->node, on_ready), 0);
    run_until(c, &c->epmd.requests, 1);
    close_promptly(c);
    uv_run(&c->loop, UV_RUN_NOWAIT);
    /* The registration was cancelled: no ready callback, ever. */
    assert_int_equal(c->readies, 0);
    closing_end(c);
}

static void close_while_registered(void **state)
{
    (void)state;
    closing *c = closing_new(1, 0);
    assert_int_equal(cn_node_start(c->node, on_ready), 0);
    run_until(c, &c->readies, 1);
    assert_int_equal(c->ready_status, 0);
    assert_int_equal(cn_node_creation(c->node), 5);
    int hung_up = c->epmd.eofs;
    close_promptly(c);
    /* Closing the registration's connection is what unregisters. */
    run_until(c, &c->epmd.eofs, hung_up + 1);
    closing_end(c);
}

/* The lookup of a --connect target waits for epmd's answer (its own timeout is 5 s). */
static void close_while_looking_up_a_target(void **state)
{
    (void)state;
    closing *c = closing_new(0, 1);
    assert_int_equal(cn_node_connect(c->node, "peer@127.0.0.1"), 0);
    run_until(c, &c->epmd.requests, 1);
    close_promptly(c);
    assert_int_equal(c->peer.accepted, 0);
    closing_end(c);
}

/*
 * The target's host is a name: after epmd answers, getaddrinfo runs in libuv's
 * thread pool. The pool (one thread, see main) is held busy from the moment epmd
 * gets the request, so the resolution is queued, not running, when the node
 * closes: the close must cancel it rather than wait.
 */
static uv_sem_t pool_sem;
static uv_work_t pool_blocker;
static int pool_blocked;

static void block_work(uv_work_t *w)
{
    (void)w;
    uv_sem_wait(&pool_sem);
}

static void block_done(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
    pool_blocked = 0;
}

static void block_the_pool(void)
{
    if (pool_blocked)
        return;
    pool_blocked = 1;
    assert_int_equal(uv_queue_work(&the_closing->loop, &pool_blocker, block_work, block_done), 0);
}

static void close_while_resolving_a_target(void **state)
{
    (void)state;
    closing *c = closing_new(1, 1);
    assert_int_equal(uv_sem_init(&pool_sem, 0), 0);
    c->epmd.on_request = block_the_pool;
    assert_int_equal(cn_node_connect(c->node, "peer@localhost"), 0);
    /*
     * The lookup hangs up once it has the answer; its callback, which starts the
     * resolution, ran in the same loop turn, before this side could see the hang-up.
     */
    run_until(c, &c->epmd.eofs, 1);
    close_promptly(c);
    uv_sem_post(&pool_sem);
    while (pool_blocked)
        uv_run(&c->loop, UV_RUN_ONCE);
    uv_sem_destroy(&pool_sem);
    assert_int_equal(c->peer.accepted, 0);
    closing_end(c);
}

/* epmd answered and the node dialed the peer: the connection is being set up. */
static void close_while_dialing_a_target(void **state)
{
    (void)state;
    closing *c = closing_new(1, 1);
    assert_int_equal(cn_node_connect(c->node, "peer@127.0.0.1"), 0);
    run_until(c, &c->epmd.eofs, 1);
    cn_node_stats st;
    cn_node_get_stats(c->node, &st);
    assert_int_equal(st.pending, 1);
    close_promptly(c);
    closing_end(c);
}

/* The node freed from its own close callback, with a connection and a target to let go. */
static void free_inside_the_close_callback(void **state)
{
    (void)state;
    closing *c = closing_new(1, 1);
    c->free_in_callback = 1;
    assert_int_equal(cn_node_connect(c->node, "peer@127.0.0.1"), 0);
    run_until(c, &c->peer.requests, 1);
    close_promptly(c);
    assert_null(c->node);
    closing_end(c);
}

/* The peer accepted and read our name, and never answers. */
static void close_during_a_handshake(void **state)
{
    (void)state;
    closing *c = closing_new(1, 1);
    assert_int_equal(cn_node_connect(c->node, "peer@127.0.0.1"), 0);
    run_until(c, &c->peer.requests, 1);
    close_promptly(c);
    run_until(c, &c->peer.eofs, 1);
    closing_end(c);
}

/* ---- Where a message came from ---- */

typedef struct origin_fx {
    int got;
    char origin[64];
} origin_fx;

static void origin_message(cn_proc *p, const char *buf, size_t len)
{
    (void)buf, (void)len;
    origin_fx *o = cn_proc_data(p);
    o->got++;
    snprintf(o->origin, sizeof o->origin, "%s", cn_proc_msg_origin(p));
}

static const cn_proc_ops origin_ops = {.message = origin_message};

/* The peer's name for what its frames deliver, ours for a local send and outside a delivery. */
static void the_origin_is_where_a_message_came_from(void **state)
{
    (void)state;
    fake_peer fp;
    assert_int_equal(fp_setup(&fp, "k", "k", CN_DFLAGS), 0);
    origin_fx o = {0};
    cn_proc *p = cn_proc_spawn(fp.node, &origin_ops, &o);
    assert_int_equal(cn_proc_register(p, "o"), 0);
    assert_string_equal(cn_proc_msg_origin(p), FP_NODE);

    /* From the peer, even when the sender's pid names another node. */
    erlang_pid from;
    fp_pid(&from, 1);
    strcpy(from.node, "third@127.0.0.1");
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &from, "o");
    fp_msg_cast(&msg, "hello");
    fp_send(&fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    assert_int_equal(o.got, 1);
    assert_string_equal(o.origin, FP_PEER);
    assert_string_equal(cn_proc_msg_origin(p), FP_NODE);

    /* From a local process. */
    cn_proc *local = cn_proc_spawn(fp.node, &origin_ops, &o);
    char hello[16];
    size_t n = cn_term_atom(hello, "hello");
    assert_int_equal(cn_send_name(local, "o", NULL, hello, n), 0);
    fp_run(&fp);
    assert_int_equal(o.got, 2);
    assert_string_equal(o.origin, FP_NODE);
    fp_teardown(&fp);
}

/* ---- Losing epmd ---- */

typedef struct lost {
    uv_loop_t loop;
    fake_epmd epmd;
    cn_node *node;
    int readies, ready_status;
    int nstatus, status[4];
    int closes;
    cn_log_level saved_level;
} lost;

static void lost_ready(cn_node *node, int status)
{
    lost *l = cn_node_data(node);
    l->readies++;
    l->ready_status = status;
}

static void lost_status(cn_node *node, int status)
{
    lost *l = cn_node_data(node);
    assert_true(l->nstatus < 4);
    l->status[l->nstatus++] = status;
}

static void lost_closed(cn_node *node)
{
    lost *l = cn_node_data(node);
    l->closes++;
}

/* A node registered with a fake epmd that follows script (its first answer: creation 100). */
static lost *lost_new(const fe_act *script, size_t n)
{
    lost *l = test_calloc(1, sizeof *l);
    assert_int_equal(uv_loop_init(&l->loop), 0);
    fe_start(&l->loop, &l->epmd, script, n);
    cn_node_config cfg = {.name = "lost@127.0.0.1", .cookie = "k", .status_cb = lost_status};
    assert_int_equal(cn_node_new(&l->loop, &cfg, &l->node), 0);
    cn_node_set_data(l->node, l);
    assert_int_equal(cn_node_start(l->node, lost_ready), 0);
    while (l->readies == 0)
        uv_run(&l->loop, UV_RUN_ONCE);
    assert_int_equal(l->ready_status, 0);
    assert_int_equal(cn_node_creation(l->node), 100);
    /* The loss and the refusal are logged on purpose here. */
    l->saved_level = cn_log_threshold;
    cn_log_threshold = CN_LOG_NONE;
    return l;
}

static void lost_end(lost *l)
{
    cn_node_close(l->node, lost_closed);
    fe_close(&l->epmd);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    assert_int_equal(l->closes, 1);
    assert_int_equal(cn_node_free(l->node), 0);
    assert_int_equal(uv_loop_close(&l->loop), 0);
    cn_log_threshold = l->saved_level;
    test_free(l);
}

/*
 * epmd restarts and hands out creation 101: the node registers again but keeps
 * 100, so a pid it gave out before still reaches its process and new pids and
 * references are of the same incarnation.
 */
static void a_renewed_registration_keeps_the_creation(void **state)
{
    (void)state;
    static const fe_act script[] = {FE_OK, FE_OK};
    lost *l = lost_new(script, 2);
    /* No message ever reaches these processes: sink_ops never runs. */
    cn_proc *before = cn_proc_spawn(l->node, &sink_ops, NULL);
    erlang_pid pid;
    cn_proc_pid(before, &pid);
    fe_drop(&l->epmd);
    while (l->nstatus == 0)
        uv_run(&l->loop, UV_RUN_ONCE);
    assert_int_equal(l->status[0], 0);
    assert_int_equal(l->epmd.requests, 2);
    assert_int_equal(cn_node_creation(l->node), 100);
    assert_ptr_equal(cn_proc_by_pid(l->node, &pid), before);
    erlang_pid after;
    cn_proc_pid(cn_proc_spawn(l->node, &sink_ops, NULL), &after);
    assert_int_equal(after.creation, 100);
    erlang_ref ref;
    cn_node_make_ref(l->node, &ref);
    assert_int_equal(ref.creation, 100);
    lost_end(l);
}

/* Another node took the name while epmd had none for us: status_cb hears CN_ENOTALIVE, once. */
static void a_name_taken_meanwhile_is_reported(void **state)
{
    (void)state;
    static const fe_act script[] = {FE_OK, FE_TAKEN};
    lost *l = lost_new(script, 2);
    fe_drop(&l->epmd);
    while (l->nstatus == 0)
        uv_run(&l->loop, UV_RUN_ONCE);
    assert_int_equal(l->status[0], CN_ENOTALIVE);
    assert_int_equal(l->readies, 1);
    /* The node itself still runs until its owner closes it; the close finds no registration. */
    lost_end(l);
}

/* Closing the node while its registration waits to be renewed. */
static void close_while_renewing(void **state)
{
    (void)state;
    static const fe_act script[] = {FE_OK, FE_SILENT};
    lost *l = lost_new(script, 2);
    fe_drop(&l->epmd);
    while (l->epmd.requests < 2)
        uv_run(&l->loop, UV_RUN_ONCE);
    lost_end(l);
    /* lost_end asserted the one close; no status was ever reported. */
}

/* ---- IPv6 (inet6_tcp) ---- */

/* Whether ::1 can be bound here (it can on the project's machines). */
static int ipv6_loopback_usable(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void on_probe_connected(uv_connect_t *req, int status)
{
    *(int *)req->data = status == 0 ? 1 : -1;
}

/*
 * A node of family AF_INET6 registers with the epmd on ::1, looks a --connect
 * target up there and dials it at its IPv6 address, and takes a connection
 * from ::1 on its listener. The fake epmd and peer listen on ::1 only, so none
 * of it can have gone over IPv4.
 */
static void an_ipv6_node_registers_dials_and_accepts_over_ipv6(void **state)
{
    (void)state;
    if (!ipv6_loopback_usable())
        skip();
    closing *c = closing_new_family(1, 0, AF_INET6);
    assert_int_equal(cn_node_start(c->node, on_ready), 0);
    run_until(c, &c->readies, 1);
    assert_int_equal(c->ready_status, 0);
    assert_int_equal(cn_node_creation(c->node), 5);
    assert_int_equal(cn_node_connect(c->node, "peer@::1"), 0);
    run_until(c, &c->peer.accepted, 1);

    uv_tcp_t probe;
    uv_connect_t req;
    int connected = 0;
    struct sockaddr_storage a;
    cn_addr_loopback(AF_INET6, cn_node_port(c->node), &a);
    assert_int_equal(uv_tcp_init(&c->loop, &probe), 0);
    req.data = &connected;
    assert_int_equal(uv_tcp_connect(&req, &probe, (struct sockaddr *)&a, on_probe_connected), 0);
    cn_node_stats st = {0};
    while (connected == 0 || st.pending < 2) {
        uv_run(&c->loop, UV_RUN_ONCE);
        cn_node_get_stats(c->node, &st);
    }
    assert_int_equal(connected, 1);
    uv_close((uv_handle_t *)&probe, NULL);
    close_promptly(c);
    closing_end(c);
}

/* Families other than IPv4 and IPv6 are refused; IPv6 node names split at the first '@'. */
static void node_families_and_ipv6_names(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    cn_node *node = NULL;
    cn_node_config bad = {.name = "n@::1", .cookie = "k", .no_epmd = 1, .family = AF_UNIX};
    assert_int_equal(cn_node_new(&loop, &bad, &node), -EINVAL);
    cn_node_config cfg = {.name = "n@::1", .cookie = "k", .no_epmd = 1, .family = AF_INET6};
    assert_int_equal(cn_node_new(&loop, &cfg, &node), 0);
    assert_string_equal(cn_node_name(node), "n@::1");
    assert_int_equal(cn_node_connect(node, "peer@fe80::1%lo"), 0);
    assert_int_equal(cn_node_connect(node, "peer@"), -EINVAL);
    assert_int_equal(cn_node_connect(node, "peer@::1@x"), -EINVAL);
    cn_node_close(node, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(cn_node_free(node), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    /* One thread in libuv's pool, so close_while_resolving_a_target can hold it. */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_light_turn_keeps_the_loop_polling),
        cmocka_unit_test(flush_hooks_run_after_the_turns_messages_before_its_output),
        cmocka_unit_test(a_flush_hook_is_found_by_its_callback),
        cmocka_unit_test(no_busy_polling_when_it_is_off),
        cmocka_unit_test(no_busy_polling_without_a_core_to_spare),
        cmocka_unit_test(a_heavy_turn_pauses_instead_of_polling),
        cmocka_unit_test(a_few_callers_never_pause),
        cmocka_unit_test(light_turns_after_a_heavy_one_pause_for_a_while),
        cmocka_unit_test(a_heavy_turn_of_casts_pauses_longer),
        cmocka_unit_test(a_call_in_flight_keeps_the_short_pause),
        cmocka_unit_test(a_cast_pause_no_longer_than_coalescing_is_not_taken),
        cmocka_unit_test(coalescing_off_means_every_turn_polls),
        cmocka_unit_test(a_quiet_node_stops_polling_after_the_window),
        cmocka_unit_test(close_before_start),
        cmocka_unit_test(close_after_start_without_epmd),
        cmocka_unit_test(close_while_registering),
        cmocka_unit_test(close_while_registered),
        cmocka_unit_test(close_while_looking_up_a_target),
        cmocka_unit_test(close_while_resolving_a_target),
        cmocka_unit_test(close_while_dialing_a_target),
        cmocka_unit_test(close_during_a_handshake),
        cmocka_unit_test(free_inside_the_close_callback),
        cmocka_unit_test(the_origin_is_where_a_message_came_from),
        cmocka_unit_test(a_renewed_registration_keeps_the_creation),
        cmocka_unit_test(a_name_taken_meanwhile_is_reported),
        cmocka_unit_test(close_while_renewing),
        cmocka_unit_test(an_ipv6_node_registers_dials_and_accepts_over_ipv6),
        cmocka_unit_test(node_families_and_ipv6_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
