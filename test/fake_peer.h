/*
 * A fake remote node for unit tests: a real cn_node (no epmd) on its own loop,
 * one connection over an in-memory transport, and the peer's side of the
 * handshake played with the real handshake module. Tests then send control
 * frames as an OTP node would and read back what the node wrote.
 */
#ifndef TEST_FAKE_PEER_H
#define TEST_FAKE_PEER_H

#include <ei.h>
#include <uv.h>

#include "cnode/buf.h"
#include "cnode/handshake.h"
#include "cnode/node.h"
#include "cnode/protocol.h"
#include "cnode/transport.h"

#define FP_NODE "cnode@127.0.0.1"
#define FP_PEER "peer@127.0.0.1"

/*
 * The flags of a peer of OTP 24 to 27: ALIAS without OTP 28's ALTACT_SIG, so
 * replies to its calls come as ALIAS_SEND. CN_DFLAGS plays an OTP 28+ peer.
 */
#define FP_FLAGS_ALIAS (CN_DFLAGS & ~DFLAG_ALTACT_SIG)

typedef struct fake_peer {
    uv_loop_t loop;
    cn_node *node;
    cn_conn *conn;
    cn_buf out;         /* what the node wrote and the test has not read yet */
    int writes;         /* calls to the transport's write */
    size_t largest_write; /* the longest of them, in bytes */
    int closed;         /* the node closed the connection */
    cn_hs hs;
    uint64_t flags;     /* the capability flags the peer advertises */
} fake_peer;

/* Starts the node and connects the peer; 0, or the handshake's error. */
int fp_setup(fake_peer *fp, const char *node_cookie, const char *peer_cookie, uint64_t peer_flags);
/* As fp_setup, with the node's config (its name and no_epmd are set here). */
int fp_setup_with(fake_peer *fp, const cn_node_config *node_cfg, const char *peer_cookie, uint64_t peer_flags);
/* Closes the node and asserts every handle was closed. */
void fp_teardown(fake_peer *fp);
/* Runs a few loop turns, so queued work and writes happen. */
void fp_run(fake_peer *fp);
/* Sends one frame: control term and optional message, each a complete versioned ei_x_buff. */
void fp_send(fake_peer *fp, const ei_x_buff *ctl, const ei_x_buff *msg);
/* Builds the bytes of one frame (length prefix included) into out, without sending. */
void fp_frame(cn_buf *out, const ei_x_buff *ctl, const ei_x_buff *msg);

/* A frame the node sent, decoded just enough to test it. */
typedef struct fp_frame_view {
    long op;
    const char *buf;    /* the frame (after the length prefix) */
    size_t len;
    int ctl;            /* index of the control tuple's first element after the op */
    int msg;            /* index of the message's version byte, or -1 */
    cn_buf storage;
} fp_frame_view;

/* Pops the next non-tick frame; 0, or -1 if there is none. Free with fp_view_free. */
int fp_next(fake_peer *fp, fp_frame_view *v);
void fp_view_free(fp_frame_view *v);

/* Pids and refs of the fake peer's processes. */
void fp_pid(erlang_pid *pid, unsigned num);
void fp_ref(erlang_ref *ref, unsigned a, unsigned b, unsigned c);

/* Encoders for the control messages tests send. */
void fp_ctl_reg_send(ei_x_buff *x, const erlang_pid *from, const char *name);
void fp_ctl_monitor(ei_x_buff *x, int op, const erlang_pid *from, const char *name, const erlang_pid *to,
                    const erlang_ref *ref);
/* Sends that control message (no payload) through fp_send: encoded, sent, freed. */
void fp_send_monitor(fake_peer *fp, int op, const erlang_pid *from, const char *name, const erlang_pid *to,
                     const erlang_ref *ref);
/* A $gen_call message {'$gen_call', {From, Tag}, Request-atom}; alias: tag is [alias | Ref]. */
void fp_msg_call(ei_x_buff *x, const erlang_pid *from, const erlang_ref *ref, int alias, const char *req);
void fp_msg_cast(ei_x_buff *x, const char *req);
/* GenServer.cast(name, req-atom) from the peer's pid number `from`, then runs the loop. */
void fp_cast(fake_peer *fp, unsigned from, const char *name, const char *req);

/*
 * Added for the tests of servers whose requests are not atoms.
 *
 * fp_msg_request encodes {Label, {From, [alias | Ref]}, Req} into x (a new buffer,
 * with version byte; free it with ei_x_free): label "$gen_call" makes a
 * GenServer.call, "system" a :sys request. req is one complete term without a
 * version byte, req_len bytes long; it is copied.
 */
void fp_msg_request(ei_x_buff *x, const char *label, const erlang_pid *from, const erlang_ref *ref,
                    const char *req, size_t req_len);
/*
 * Sends that request to the registered name from the peer's pid number `from`,
 * with tag [alias | fp_ref(refn, 0, 0)], and runs the loop.
 */
void fp_request(fake_peer *fp, const char *label, unsigned from, unsigned refn, const char *name,
                const char *req, size_t req_len);
/*
 * Pops the next frame, asserts it is an ALIAS_SEND carrying a reply {Tag, Reply},
 * and points *index at Reply inside v->buf. 0, or -1 when no frame is pending.
 * Free v with fp_view_free.
 */
int fp_next_reply(fake_peer *fp, fp_frame_view *v, int *index);
/*
 * As fp_next_reply, but returns Reply printed by ei_s_print_term with every space
 * removed ("{error,{unknown_call,foo}}"), or NULL when no frame is pending.
 * The string is malloc'd: the caller frees it.
 */
char *fp_next_reply_text(fake_peer *fp);

/*
 * Added for the sys reply shapes. Pops the next frame, asserts it is a call to the
 * peer's rex, {'$gen_call', {Pid, Tag}, {call, Mod, Fun, Args, user}} for mod:fun, and
 * answers it as rex does: {Tag, Answer} to Pid, answer being one term without a
 * version byte (copied). 0, or -1 when no frame is pending.
 */
int fp_answer_rex(fake_peer *fp, const char *mod, const char *fun, const char *answer, size_t len);
/* Answers the server's application:get_key(stdlib, vsn) with {ok, Vsn} (asserts it was asked). */
void fp_answer_stdlib(fake_peer *fp, const char *vsn);

#endif
