/*
 * A C node under attack, for the fuzz harnesses and the corpus generator: a real
 * cn_node (no epmd) on its own loop, one connection over an in-memory transport,
 * the peer's side of the handshake played by the real handshake module, and a few
 * processes a peer can reach: the rate limiter and the counter (gen_servers), and
 * two bare processes, "sink" (echoes {Pid, Msg} as Msg to Pid) and "trap" (traps
 * exits). No cmocka here: libFuzzer calls this once per input.
 */
#ifndef TEST_FUZZ_NODE_H
#define TEST_FUZZ_NODE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cnode/buf.h"
#include "cnode/node.h"
#include "genserver/counter.h"
#include "genserver/rate_limiter.h"

#define FN_NODE "cnode@127.0.0.1"
#define FN_PEER "peer@127.0.0.1"
#define FN_COOKIE "fuzz"
/*
 * The node picks a random creation when it runs without epmd, so a corpus cannot
 * hold the node's real pids. Inputs write this creation instead, and fn_feed puts
 * the node's own in its place before the bytes reach the node.
 */
#define FN_CREATION_MARK 0xC0DEC0DEu

typedef struct fuzz_node {
    uv_loop_t loop;
    cn_node *node;
    cn_conn *conn;
    cn_buf out;             /* what the node wrote to the peer */
    int closed;             /* the node dropped the connection */
    rate_limiter_config rl_cfg;
    counter_config counter_cfg;
    gs_server *rl, *counter;
} fuzz_node;

/* Starts the node and its processes and completes the handshake. 0, or -1. */
int fn_setup(fuzz_node *fn);
/* Stops what is still running, closes the node and frees everything. */
void fn_teardown(fuzz_node *fn);
/* Feeds the peer's bytes (the creation mark replaced), then runs a few loop turns. */
void fn_feed(fuzz_node *fn, const uint8_t *data, size_t len);
/* Runs a few loop turns without waiting. */
void fn_run(fuzz_node *fn);

#endif
