#include "test/fuzz/fuzz_node.h"

#include <stdlib.h>
#include <string.h>
#include <ei.h>

#include "cnode/handshake.h"
#include "cnode/log.h"
#include "cnode/proc.h"
#include "cnode/protocol.h"
#include "cnode/transport.h"

static int fake_write(cn_conn *c, const char *data, size_t len)
{
    fuzz_node *fn = cn_conn_transport_data(c);
    /* What the node says is not examined; keeping a little lets a handshake finish. */
    if (fn->out.len < 65536)
        cn_buf_append(&fn->out, data, len);
    cn_conn_written(c, 0);
    return 0;
}

static void fake_close(cn_conn *c)
{
    fuzz_node *fn = cn_conn_transport_data(c);
    fn->closed = 1;
    fn->conn = NULL;
    cn_conn_closed(c);
}

static const cn_transport fake_transport = {fake_write, fake_close, 0};

static uint32_t fixed_random(void *ctx)
{
    (void)ctx;
    return 0x12345678u;
}

void fn_run(fuzz_node *fn)
{
    for (int i = 0; i < 4; i++)
        uv_run(&fn->loop, UV_RUN_NOWAIT);
}

/* "sink": a message {Pid, Msg} sends Msg to Pid, so replies to peers are exercised. */
static void sink_message(cn_proc *p, const char *buf, size_t len)
{
    int i = 1, arity;
    erlang_pid to;
    if (len < 2 || ei_decode_tuple_header(buf, &i, &arity) < 0 || arity != 2 ||
        ei_decode_pid(buf, &i, &to) < 0)
        return;
    /* The rest of the message is one term: send it with a version byte of its own. */
    size_t n = len - (size_t)i;
    char *msg = malloc(n + 1);
    if (msg == NULL)
        return;
    msg[0] = (char)CN_VERSION_MAGIC;
    memcpy(msg + 1, buf + i, n);
    cn_send(p, &to, msg, n + 1);
    free(msg);
}

static void quiet_message(cn_proc *p, const char *buf, size_t len)
{
    (void)p;
    (void)buf;
    (void)len;
}

static const cn_proc_ops sink_ops = {sink_message, NULL};
static const cn_proc_ops trap_ops = {quiet_message, NULL};

static int start_processes(fuzz_node *fn)
{
    fn->rl_cfg = (rate_limiter_config){.max_requests = 3, .window_ms = 60000};
    fn->counter_cfg = (counter_config){.initial = 0};
    if (rate_limiter_start(fn->node, &fn->rl_cfg, "rate_limiter", NULL, &fn->rl) != 0 ||
        counter_start(fn->node, &fn->counter_cfg, "counter", NULL, &fn->counter) != 0)
        return -1;
    cn_proc *sink = cn_proc_spawn(fn->node, &sink_ops, fn);
    cn_proc *trap = cn_proc_spawn(fn->node, &trap_ops, fn);
    if (sink == NULL || trap == NULL || cn_proc_register(sink, "sink") != 0 ||
        cn_proc_register(trap, "trap") != 0)
        return -1;
    cn_proc_trap_exit(trap, 1);
    return 0;
}

/* Plays the peer's side of the handshake until it completes, as an OTP node would. */
static int handshake(fuzz_node *fn)
{
    cn_hs hs;
    cn_hs_config hc = {
        .role = CN_HS_CONNECT,
        .our_name = FN_PEER,
        .cookie = FN_COOKIE,
        .our_flags = CN_DFLAGS,
        .our_creation = 777,
        .random32 = fixed_random,
        .expect_peer = FN_NODE,
    };
    cn_buf tx;
    cn_buf_init(&tx);
    if (cn_hs_init(&hs, &hc) != 0 || cn_hs_start(&hs, &tx) != 0) {
        cn_buf_free(&tx);
        return -1;
    }
    int rc = 0;
    for (int round = 0; round < 10 && !cn_hs_done(&hs) && rc >= 0 && fn->conn; round++) {
        if (tx.len) {
            cn_conn_feed(fn->conn, tx.data, tx.len);
            cn_buf_reset(&tx);
        }
        fn_run(fn);
        rc = cn_hs_feed(&hs, fn->out.data, fn->out.len, &tx);
        if (rc > 0)
            cn_buf_consume(&fn->out, (size_t)rc);
    }
    if (rc >= 0 && tx.len && fn->conn) {
        cn_conn_feed(fn->conn, tx.data, tx.len);
        fn_run(fn);
    }
    cn_buf_free(&tx);
    cn_buf_reset(&fn->out);
    return rc >= 0 && cn_hs_done(&hs) && fn->conn ? 0 : -1;
}

int fn_setup(fuzz_node *fn)
{
    memset(fn, 0, sizeof *fn);
    cn_buf_init(&fn->out);
    cn_log_threshold = CN_LOG_NONE;
    if (uv_loop_init(&fn->loop) != 0)
        return -1;
    cn_node_config cfg = {.name = FN_NODE, .cookie = FN_COOKIE, .no_epmd = 1};
    if (cn_node_new(&fn->loop, &cfg, &fn->node) != 0)
        return -1;
    fn->conn = cn_conn_new(fn->node, &fake_transport, 0);
    if (fn->conn == NULL)
        return -1;
    cn_conn_set_transport_data(fn->conn, fn);
    cn_conn_start_handshake(fn->conn, NULL);
    if (start_processes(fn) != 0)
        return -1;
    return handshake(fn);
}

/* Replaces every FN_CREATION_MARK in b with the node's creation. */
static void put_creation(fuzz_node *fn, uint8_t *b, size_t len)
{
    uint32_t creation = cn_node_creation(fn->node);
    for (size_t i = 0; i + 4 <= len; i++)
        if (cn_get_u32(b + i) == FN_CREATION_MARK)
            cn_set_u32(b + i, creation);
}

void fn_feed(fuzz_node *fn, const uint8_t *data, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (copy == NULL)
        return;
    memcpy(copy, data, len);
    put_creation(fn, copy, len);
    if (fn->conn)
        cn_conn_feed(fn->conn, (const char *)copy, len);
    free(copy);
    fn_run(fn);
}

static void node_closed(cn_node *node)
{
    (void)node;
}

/* Stops whatever the input left running; an input may have killed any of them. */
static void stop_processes(fuzz_node *fn)
{
    if (cn_proc_whereis(fn->node, "rate_limiter"))
        gs_stop(fn->rl, "shutdown");
    if (cn_proc_whereis(fn->node, "counter"))
        gs_stop(fn->counter, "shutdown");
    const char *bare[] = {"sink", "trap"};
    for (size_t i = 0; i < 2; i++) {
        cn_proc *p = cn_proc_whereis(fn->node, bare[i]);
        if (p)
            cn_proc_exit(p, NULL, 0);
    }
}

void fn_teardown(fuzz_node *fn)
{
    if (fn->node != NULL) {
        stop_processes(fn);
        cn_node_close(fn->node, node_closed);
        uv_run(&fn->loop, UV_RUN_DEFAULT);
        if (cn_node_free(fn->node) != 0)
            abort();
    }
    if (uv_loop_close(&fn->loop) != 0)
        abort();
    cn_buf_free(&fn->out);
}
