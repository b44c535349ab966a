/*
 * Unit tests of the connection layer on its own (cnode/transport.h, conn.c):
 * framing, ticks, batched writes, the write queue limit and transport errors,
 * driven through a small in-memory transport whose writes can be held in
 * flight or made to fail. The peer's side of the handshake is the real
 * handshake module; frames carry messages to a registered sink process, so
 * what the connection cut is checked by what arrived.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/proc.h"
#include "cnode/protocol.h"
#include "test/fake_peer.h"

/* ---- An in-memory transport with knobs ---- */

typedef struct fake {
    cn_conn *conn;
    const char *name;   /* the peer's node name */
    cn_hs hs;           /* the peer's side of the handshake */
    cn_buf out;         /* what the node wrote */
    int writes;
    int fail_write;     /* a write returns this at once (0: writes work) */
    int hold;           /* writes stay in flight until the test completes them */
    int in_flight;
    int closed;
} fake;

static int fake_write(cn_conn *c, const char *data, size_t len)
{
    fake *k = cn_conn_transport_data(c);
    if (k->fail_write)
        return k->fail_write;
    k->writes++;
    cn_buf_append(&k->out, data, len);
    if (k->hold)
        k->in_flight = 1;
    else
        cn_conn_written(c, 0);
    return 0;
}

static void fake_close(cn_conn *c)
{
    fake *k = cn_conn_transport_data(c);
    /* As a TCP close does, a write still in flight is cancelled first. */
    if (k->in_flight) {
        k->in_flight = 0;
        cn_conn_written(c, -ECANCELED);
    }
    k->closed = 1;
    k->conn = NULL;
    cn_conn_closed(c);
}

static const cn_transport fake_transport = {fake_write, fake_close, 0};

/* ---- The node, a sink, and peers ---- */

typedef struct fx {
    uv_loop_t loop;
    cn_node *node;
    cn_proc *sink;
    long got[256];      /* the integers the sink received, in order */
    int ngot;
    fake a, b;
} fx;

static void sink_message(cn_proc *p, const char *buf, size_t len)
{
    (void)len;
    fx *f = cn_proc_data(p);
    int i = 0, ver;
    long v = -1;
    assert_int_equal(ei_decode_version(buf, &i, &ver), 0);
    assert_int_equal(ei_decode_long(buf, &i, &v), 0);
    assert_true(f->ngot < 256);
    f->got[f->ngot++] = v;
}

static const cn_proc_ops sink_ops = {.message = sink_message};

static void run(fx *f)
{
    for (int i = 0; i < 4; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

static uint32_t fixed_random(void *ctx)
{
    (void)ctx;
    return 0x12345678u;
}

static fx *start_with(const cn_node_config *cfg_in)
{
    fx *f = test_calloc(1, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    cn_node_config cfg = *cfg_in;
    cfg.name = FP_NODE;
    cfg.cookie = "k";
    cfg.no_epmd = 1;
    assert_int_equal(cn_node_new(&f->loop, &cfg, &f->node), 0);
    f->sink = cn_proc_spawn(f->node, &sink_ops, f);
    assert_int_equal(cn_proc_register(f->sink, "sink"), 0);
    return f;
}

static fx *start(void)
{
    cn_node_config cfg = {0};
    return start_with(&cfg);
}

static void node_closed(cn_node *node)
{
    (void)node;
}

static void stop(fx *f)
{
    cn_proc_exit(f->sink, NULL, 0);
    cn_node_close(f->node, node_closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(cn_node_free(f->node), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    cn_buf_free(&f->a.out);
    cn_buf_free(&f->b.out);
    test_free(f);
}

/* A new incoming connection from `name` over k, handshake not yet played. */
static void attach(fx *f, fake *k, const char *name)
{
    memset(k, 0, sizeof *k);
    cn_buf_init(&k->out);
    k->name = name;
    k->conn = cn_conn_new(f->node, &fake_transport, 0);
    cn_conn_set_transport_data(k->conn, k);
    cn_conn_set_addr(k->conn, "fake:1");
    cn_conn_start_handshake(k->conn, NULL);
    cn_hs_config hc = {
        .role = CN_HS_CONNECT, .our_name = name, .cookie = "k", .our_flags = CN_DFLAGS,
        .our_creation = 777, .random32 = fixed_random, .expect_peer = FP_NODE,
    };
    assert_int_equal(cn_hs_init(&k->hs, &hc), 0);
}

/*
 * Plays the peer's side of the handshake. `after_reply` (may be NULL) is fed in
 * the same cn_conn_feed as the peer's challenge reply, the message that
 * completes the node's side.
 */
static void handshake(fx *f, fake *k, const cn_buf *after_reply)
{
    cn_buf tx;
    cn_buf_init(&tx);
    assert_int_equal(cn_hs_start(&k->hs, &tx), 0);
    for (int round = 0; round < 10 && !cn_hs_done(&k->hs); round++) {
        if (tx.len > 0) {
            if (after_reply && tx.len > 2 && tx.data[2] == 'r')
                cn_buf_append(&tx, after_reply->data, after_reply->len);
            cn_conn_feed(k->conn, tx.data, tx.len);
            cn_buf_reset(&tx);
        }
        run(f);
        int n = cn_hs_feed(&k->hs, k->out.data, k->out.len, &tx);
        assert_true(n >= 0);
        cn_buf_consume(&k->out, (size_t)n);
    }
    assert_true(cn_hs_done(&k->hs));
    assert_string_equal(cn_conn_peer(k->conn), k->name);
    cn_buf_free(&tx);
    cn_buf_reset(&k->out);
    k->writes = 0;
}

static void connect_peer(fx *f, fake *k, const char *name)
{
    attach(f, k, name);
    handshake(f, k, NULL);
}

/* Appends frame number v: REG_SEND to sink carrying the integer v. */
static void frame_to_sink(cn_buf *b, long v)
{
    erlang_pid from;
    fp_pid(&from, 1);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &from, "sink");
    ei_x_new_with_version(&msg);
    ei_x_encode_long(&msg, v);
    fp_frame(b, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
}

static void append_tick(cn_buf *b)
{
    cn_buf_put_u32(b, 0);
}

static cn_node_stats stats(fx *f)
{
    cn_node_stats st;
    cn_node_get_stats(f->node, &st);
    return st;
}

/* Counts the complete frames in b that are not ticks; asserts nothing is left over. */
static int count_frames(const cn_buf *b, int *ticks)
{
    size_t off = 0;
    int n = 0;
    while (b->len - off >= 4) {
        uint32_t len = cn_get_u32(b->data + off);
        assert_true(b->len - off - 4 >= len);
        if (len == 0 && ticks)
            (*ticks)++;
        else
            n++;
        off += 4 + len;
    }
    assert_int_equal(off, b->len);
    return n;
}

/* ---- Frames in ---- */

/* Hands len bytes to the connection, through cn_conn_feed or read in place. */
static void deliver(cn_conn *c, const char *data, size_t len, int in_place)
{
    if (!in_place) {
        cn_conn_feed(c, data, len);
        return;
    }
    char *room;
    size_t roomlen;
    cn_conn_read_buf(c, len, &room, &roomlen);
    assert_true(roomlen >= len);
    if (len > 0)
        memcpy(room, data, len);
    cn_conn_read_done(c, len);
}

/* Two frames and ticks, split in two reads at every byte boundary, both through feed and read_buf. */
static void frames_split_at_every_byte_boundary(void **state)
{
    (void)state;
    fx *f = start();
    connect_peer(f, &f->a, FP_PEER);
    cn_buf all;
    cn_buf_init(&all);
    append_tick(&all);
    frame_to_sink(&all, 1);
    size_t end1 = all.len;
    append_tick(&all);
    frame_to_sink(&all, 2);
    uint64_t frames = stats(f).frames_in;
    for (size_t cut = 0; cut <= all.len; cut++) {
        for (int in_place = 0; in_place < 2; in_place++) {
            f->ngot = 0;
            deliver(f->a.conn, all.data, cut, in_place);
            /* The first part delivers exactly the frames it holds whole. */
            assert_int_equal(f->ngot, (cut >= end1) + (cut == all.len));
            deliver(f->a.conn, all.data + cut, all.len - cut, in_place);
            assert_int_equal(f->ngot, 2);
            assert_int_equal(f->got[0], 1);
            assert_int_equal(f->got[1], 2);
        }
    }
    /* Ticks are not frames. */
    assert_int_equal(stats(f).frames_in - frames, 2 * 2 * (all.len + 1));
    assert_int_equal(stats(f).connections, 1);
    cn_buf_free(&all);
    stop(f);
}

static void several_frames_in_one_feed(void **state)
{
    (void)state;
    fx *f = start();
    connect_peer(f, &f->a, FP_PEER);
    cn_buf all;
    cn_buf_init(&all);
    for (long i = 0; i < 100; i++)
        frame_to_sink(&all, i);
    cn_conn_feed(f->a.conn, all.data, all.len);
    assert_int_equal(f->ngot, 100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(f->got[i], i);
    cn_buf_free(&all);
    stop(f);
}

static void handshake_then_frames_in_the_same_feed(void **state)
{
    (void)state;
    fx *f = start();
    cn_buf after;
    cn_buf_init(&after);
    frame_to_sink(&after, 7);
    append_tick(&after);
    frame_to_sink(&after, 8);
    attach(f, &f->a, FP_PEER);
    handshake(f, &f->a, &after);
    assert_int_equal(f->ngot, 2);
    assert_int_equal(f->got[0], 7);
    assert_int_equal(f->got[1], 8);
    cn_buf_free(&after);
    stop(f);
}

/* A length over the limit is garbage: that connection goes, the other one stays. */
static void an_oversized_frame_drops_only_its_connection(void **state)
{
    (void)state;
    fx *f = start();
    connect_peer(f, &f->a, "a@127.0.0.1");
    connect_peer(f, &f->b, "b@127.0.0.1");
    assert_int_equal(stats(f).connections, 2);
    /* The largest frame allowed (256 MiB) is waited for, not refused. */
    cn_buf hdr;
    cn_buf_init(&hdr);
    cn_buf_put_u32(&hdr, 256u * 1024 * 1024);
    cn_conn_feed(f->b.conn, hdr.data, hdr.len);
    assert_int_equal(f->b.closed, 0);
    cn_buf_reset(&hdr);
    cn_buf_put_u32(&hdr, 256u * 1024 * 1024 + 1);
    cn_conn_feed(f->a.conn, hdr.data, hdr.len);
    assert_int_equal(f->a.closed, 1);
    assert_int_equal(stats(f).connections, 1);
    cn_buf_free(&hdr);
    /* b still waits for its big frame; a fresh peer c is served meanwhile. */
    fake c;
    connect_peer(f, &c, "c@127.0.0.1");
    cn_buf one;
    cn_buf_init(&one);
    frame_to_sink(&one, 5);
    cn_conn_feed(c.conn, one.data, one.len);
    assert_int_equal(f->ngot, 1);
    assert_int_equal(f->got[0], 5);
    cn_buf_free(&one);
    stop(f);
    cn_buf_free(&c.out);
}

/* ---- Ticks ---- */

static void a_quiet_connection_sends_ticks(void **state)
{
    (void)state;
    cn_node_config cfg = {.net_ticktime = 1};
    fx *f = start_with(&cfg);
    connect_peer(f, &f->a, FP_PEER);
    assert_int_equal(cn_node_start(f->node, NULL), 0);
    /* The tick timer fires every net_ticktime / 4; the first tick ends the wait. */
    while (f->a.out.len < 4)
        uv_run(&f->loop, UV_RUN_ONCE);
    int ticks = 0;
    assert_int_equal(count_frames(&f->a.out, &ticks), 0);
    assert_true(ticks >= 1);
    assert_int_equal(f->a.closed, 0);
    stop(f);
}

static void a_silent_handshake_is_dropped_after_its_timeout(void **state)
{
    (void)state;
    cn_node_config cfg = {.handshake_timeout_ms = 1};
    fx *f = start_with(&cfg);
    attach(f, &f->a, FP_PEER);
    assert_int_equal(stats(f).pending, 1);
    while (!f->a.closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(stats(f).pending, 0);
    assert_int_equal(stats(f).connections, 0);
    stop(f);
}

static void the_peer_closing_its_end_closes_the_connection(void **state)
{
    (void)state;
    fx *f = start();
    connect_peer(f, &f->a, FP_PEER);
    cn_conn_ended(f->a.conn, 0);
    assert_int_equal(f->a.closed, 1);
    assert_int_equal(stats(f).connections, 0);
    stop(f);
}

/* ---- Logs ---- */

/* Points stderr at a temporary file; returns the saved descriptor for end_capture. */
static int begin_capture(FILE **tmp)
{
    *tmp = tmpfile();
    assert_non_null(*tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(*tmp), STDERR_FILENO) >= 0);
    return saved;
}

/* Restores stderr and returns what was written (static storage). */
static const char *end_capture(FILE *tmp, int saved)
{
    static char out[16384];
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, sizeof out - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    return out;
}

/*
 * A peer chooses its node name, and the BEAM accepts line breaks after the '@':
 * every line that names the peer shows it escaped, so no line can be forged
 * (issue 9, 7). Both the peer that connects and the one that leaves after its
 * name are named in the log.
 */
static void peer_names_are_escaped_in_the_log(void **state)
{
    (void)state;
    cn_log_level saved_level = cn_log_threshold;
    cn_log_threshold = CN_LOG_INFO;
    FILE *tmp;
    int saved = begin_capture(&tmp);
    fx *f = start();
    connect_peer(f, &f->a, "evil@127.0.0.1\nERROR [conn] forged one");
    cn_conn_ended(f->a.conn, 0);
    attach(f, &f->b, "evil\nERROR [node] forged two@127.0.0.1");
    cn_buf tx;
    cn_buf_init(&tx);
    assert_int_equal(cn_hs_start(&f->b.hs, &tx), 0);
    cn_conn_feed(f->b.conn, tx.data, tx.len);
    run(f);
    /* A newline in the alive part: refused (status nok) as erts refuses it, and logged. */
    assert_true(f->b.closed);
    cn_buf_free(&tx);
    stop(f);
    const char *out = end_capture(tmp, saved);
    cn_log_threshold = saved_level;
    assert_non_null(strstr(out, "connected to evil@127.0.0.1\\nERROR [conn] forged one"));
    assert_non_null(strstr(out, "evil\\nERROR [node] forged two@127.0.0.1"));
    /* No line starts with what the peer wrote after its line break. */
    for (const char *line = out; *line; line = strchr(line, '\n') + 1) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        size_t n = (size_t)(end - line);
        if (memmem(line, n, "forged", 6) != NULL && memmem(line, n, "evil", 4) == NULL)
            fail_msg("a forged line: %.*s", (int)n, line);
        if (strncmp(line, "ERROR", 5) == 0)
            fail_msg("a forged line: %.*s", (int)(end - line), line);
    }
}

/* ---- Frames out ---- */

static void sink_pid_of_peer(erlang_pid *pid)
{
    fp_pid(pid, 9);
}

/* Sends the integer v from the sink to the peer's pid 9. */
static int send_to_peer(fx *f, long v, size_t pad)
{
    erlang_pid to;
    sink_pid_of_peer(&to);
    ei_x_buff msg;
    ei_x_new_with_version(&msg);
    ei_x_encode_tuple_header(&msg, 2);
    ei_x_encode_long(&msg, v);
    char *zeros = calloc(1, pad + 1);
    ei_x_encode_binary(&msg, zeros, (long)pad);
    free(zeros);
    int rc = cn_send(f->sink, &to, msg.buff, (size_t)msg.index);
    ei_x_free(&msg);
    return rc;
}

static void many_frames_in_a_turn_leave_in_one_write(void **state)
{
    (void)state;
    fx *f = start();
    connect_peer(f, &f->a, FP_PEER);
    uint64_t writes = stats(f).writes;
    for (long i = 0; i < 100; i++)
        assert_int_equal(send_to_peer(f, i, 0), 0);
    assert_int_equal(f->a.writes, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->a.writes, 1);
    assert_int_equal(stats(f).writes - writes, 1);
    assert_int_equal(count_frames(&f->a.out, NULL), 100);
    /* Frames queued while a write is in flight leave together when it completes. */
    cn_buf_reset(&f->a.out);
    f->a.hold = 1;
    send_to_peer(f, 1, 0);
    run(f);
    assert_int_equal(f->a.writes, 2);
    for (long i = 0; i < 10; i++)
        send_to_peer(f, i, 0);
    run(f);
    assert_int_equal(f->a.writes, 2);
    f->a.in_flight = 0;
    f->a.hold = 0;
    cn_conn_written(f->a.conn, 0);
    run(f);
    assert_int_equal(f->a.writes, 3);
    assert_int_equal(count_frames(&f->a.out, NULL), 11);
    stop(f);
}

/* A peer that stops reading is dropped once the queue passes the limit. */
static void the_write_queue_limit_drops_a_peer_that_stopped_reading(void **state)
{
    (void)state;
    cn_node_config cfg = {.max_write_queue = 4096};
    fx *f = start_with(&cfg);
    connect_peer(f, &f->a, FP_PEER);
    f->a.hold = 1;
    assert_int_equal(send_to_peer(f, 0, 1000), 0);
    run(f);
    assert_int_equal(f->a.in_flight, 1);
    int rc = 0, sent = 0;
    while (rc == 0 && sent < 100) {
        rc = send_to_peer(f, sent, 1000);
        sent++;
    }
    assert_int_equal(rc, CN_EFULL);
    /* Queued up to the limit (about 4 KiB of 1 KiB frames), then dropped. */
    assert_true(sent >= 3 && sent <= 5);
    assert_int_equal(f->a.closed, 1);
    assert_int_equal(stats(f).connections, 0);
    /* Later sends find no connection. */
    assert_int_equal(send_to_peer(f, 1, 0), CN_ENOCONN);
    stop(f);
}

static void a_write_error_closes_the_connection(void **state)
{
    (void)state;
    fx *f = start();
    /* Refused at once by the transport. */
    connect_peer(f, &f->a, "a@127.0.0.1");
    f->a.fail_write = -EPIPE;
    erlang_pid to;
    fp_pid(&to, 9);
    strcpy(to.node, "a@127.0.0.1");
    ei_x_buff msg;
    ei_x_new_with_version(&msg);
    ei_x_encode_atom(&msg, "x");
    assert_int_equal(cn_send(f->sink, &to, msg.buff, (size_t)msg.index), 0);
    run(f);
    assert_int_equal(f->a.closed, 1);
    /* Failed later, when the transport reports the write. */
    connect_peer(f, &f->b, "b@127.0.0.1");
    f->b.hold = 1;
    strcpy(to.node, "b@127.0.0.1");
    assert_int_equal(cn_send(f->sink, &to, msg.buff, (size_t)msg.index), 0);
    run(f);
    assert_int_equal(f->b.in_flight, 1);
    f->b.in_flight = 0;
    cn_conn_written(f->b.conn, -ECONNRESET);
    assert_int_equal(f->b.closed, 1);
    assert_int_equal(stats(f).connections, 0);
    ei_x_free(&msg);
    stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frames_split_at_every_byte_boundary),
        cmocka_unit_test(several_frames_in_one_feed),
        cmocka_unit_test(handshake_then_frames_in_the_same_feed),
        cmocka_unit_test(an_oversized_frame_drops_only_its_connection),
        cmocka_unit_test(a_quiet_connection_sends_ticks),
        cmocka_unit_test(a_silent_handshake_is_dropped_after_its_timeout),
        cmocka_unit_test(the_peer_closing_its_end_closes_the_connection),
        cmocka_unit_test(peer_names_are_escaped_in_the_log),
        cmocka_unit_test(many_frames_in_a_turn_leave_in_one_write),
        cmocka_unit_test(the_write_queue_limit_drops_a_peer_that_stopped_reading),
        cmocka_unit_test(a_write_error_closes_the_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
