/*
 * The node: one libuv loop that is a member of an Erlang cluster.
 *
 * A cn_node owns the listening socket, the EPMD registration, every
 * distribution connection and every local process. Everything runs on the one
 * loop the caller passes in; nothing here blocks except cn_node_start's one-off
 * check that an epmd is running.
 */
#ifndef CN_NODE_H
#define CN_NODE_H

#include <stdint.h>
#include <uv.h>
#include <ei.h>

#include "cnode/blob.h"
#include "cnode/tls.h"

typedef struct cn_node cn_node;
typedef struct cn_proc cn_proc;
typedef struct cn_conn cn_conn;

typedef struct cn_node_config {
    const char *name;               /* "alive@host", required */
    const char *cookie;             /* required */
    uint16_t port;                  /* 0: any free port */
    /*
     * The distribution's address family, as erl's -proto_dist: AF_INET (0
     * means it; inet_tcp) or AF_INET6 (inet6_tcp). An AF_INET6 node listens on
     * :: (IPv4 peers too, where the system allows both on one socket),
     * registers with the epmd on ::1, and resolves the host part of the nodes
     * it dials, an IPv6 literal ("cnode@::1") or a host name, to an IPv6
     * address, where it asks their epmd and dials them, as inet6_tcp_dist does.
     * Another family makes cn_node_new fail with -EINVAL.
     */
    int family;
    unsigned net_ticktime;          /* seconds, as erl's net_ticktime; 0 means 60 */
    unsigned handshake_timeout_ms;  /* 0 means 7000, as erl's net_setuptime */
    size_t max_write_queue;         /* bytes queued for one peer before it is dropped; 0: 64 MiB */
    int no_epmd;                    /* tests: neither start nor register with epmd */
    /*
     * NULL: distribution over plain TCP (inet_tcp). Else over TLS (inet_tls),
     * every connection, accepted and dialed, with these options (tls.h);
     * borrowed, read by cn_node_new only.
     */
    const cn_tls_config *tls;
    /*
     * After a loop turn that served 8 or more requests, pause this many
     * microseconds (at most 1000) before polling again, so busy peers' requests
     * are read and answered in larger batches. 0 turns it off.
     */
    unsigned coalesce_us;
    /*
     * After such a turn that queued no frame while no remote process monitors
     * one of ours (it took only casts, and no GenServer.call is in flight),
     * pause this long instead: at most 1000 microseconds, used only when
     * longer than coalesce_us, so 0 (the default of this struct) keeps
     * coalesce_us; the program's is 500. A cast stream waits for no answer:
     * the longer the pause, the more of its casts each read takes, and the
     * fewer TCP segments the sender's kernel sends for them.
     */
    unsigned cast_pause_us;
    /*
     * After a loop turn that served fewer requests than that (at least one), keep
     * polling without blocking for this many microseconds (at most 1000) before
     * sleeping, so the callers' next requests are picked up without a wakeup.
     * 0 (the default of this struct; the program's is 200) turns it off.
     */
    unsigned busy_poll_us;
    /*
     * Busy poll only while the CPUs the node may run on have a core to spare:
     * over the last 200 ms, the other processes left at least one of them
     * (cnode/cpu_watch.h), read from this file in /proc/stat's format; copied.
     * NULL (the default of this struct) polls whenever busy_poll_us says so;
     * the program's is "/proc/stat". Where the callers keep every core busy
     * (a co-located BEAM node calling from 8 processes on two cores) the spin
     * took a core from them, and the node then sleeps between requests.
     */
    const char *cpu_stat_path;
    /*
     * Optional: what happens to the epmd registration after cn_node_start's
     * ready_cb reported 0. When epmd drops the registration (it died or was
     * restarted) the node keeps serving its connections and registers again
     * (see cn_epmd_register for the backoff); then status_cb(node, status):
     *   0             registered again. The node keeps its creation, as erts
     *                 does (OTP's erl_epmd ignores the creation of a renewed
     *                 registration): every pid and reference it handed out
     *                 stays valid, and new ones are the same incarnation's.
     *   CN_ENOTALIVE  epmd gave the name to another node meanwhile. Peers can
     *                 no longer find us, and whoever asks epmd for the name
     *                 reaches the other node: the owner should stop the node.
     *                 Nothing is retried after it.
     */
    void (*status_cb)(cn_node *node, int status);
} cn_node_config;

/*
 * Creates a node on loop. The config strings are copied. Returns 0 and the node in
 * *out, or a negative error. The node is not yet listening: see cn_node_start.
 */
int cn_node_new(uv_loop_t *loop, const cn_node_config *cfg, cn_node **out);

/*
 * Listens and registers with epmd. ready_cb is called once: status 0 when the node is
 * reachable, or a negative error (CN_ENOTALIVE when the name is taken, -EADDRINUSE...).
 */
int cn_node_start(cn_node *node, void (*ready_cb)(cn_node *node, int status));

/* Connects to NODE by itself and keeps reconnecting, with backoff, while the node lives. */
int cn_node_connect(cn_node *node, const char *peer_name);

/*
 * Closes every connection, unregisters from epmd and closes every handle the node
 * owns, as uv_close does for a handle. Local processes must have exited first
 * (the application's shutdown does that): the node frees any left without
 * telling their behaviours. done_cb (may be NULL) is always called, exactly once, from a later
 * turn of the loop, whether or not the node was ever started; after it the node
 * may be freed with cn_node_free. A second close is a broken contract (asserted).
 */
void cn_node_close(cn_node *node, void (*done_cb)(cn_node *node));
/*
 * Frees a node whose close has completed. A node that is not closed is not
 * freed: CN_EBUSY, and nothing changes. NULL is 0.
 */
int cn_node_free(cn_node *node);

/* The user's pointer, as libuv's handle->data: the node never touches it. */
void cn_node_set_data(cn_node *node, void *data);
void *cn_node_data(const cn_node *node);

/*
 * Work that must be done once per loop turn just before the turn's output is
 * written: a journal that makes the turn's state changes durable before the
 * replies acknowledging them leave (group commit). The hook may send messages:
 * what it queues is written by the same flush. The caller owns the struct and
 * keeps it alive until cn_node_remove_flush_hook; fields other than cb and data
 * are the node's. Hooks run in the order they were added, also once when the
 * node closes (cn_node_close flushes what is queued). A hook may remove itself
 * (or add others, which run from the next turn) while it runs.
 */
typedef struct cn_node_flush_hook {
    void (*cb)(struct cn_node_flush_hook *hook);
    void *data;
    struct cn_node_flush_hook *prev, *next;  /* the node's list (utlist DL) */
} cn_node_flush_hook;
void cn_node_add_flush_hook(cn_node *node, cn_node_flush_hook *hook);
void cn_node_remove_flush_hook(cn_node *node, cn_node_flush_hook *hook);
/*
 * The first hook added with this cb, or NULL: a layer that keeps one hook per
 * node for all its users (genserver/'s journals) finds it here, without a
 * table of nodes of its own.
 */
cn_node_flush_hook *cn_node_find_flush_hook(const cn_node *node, void (*cb)(cn_node_flush_hook *hook));

const char *cn_node_name(const cn_node *node);
uint32_t cn_node_creation(const cn_node *node);
uint16_t cn_node_port(const cn_node *node);
uv_loop_t *cn_node_loop(const cn_node *node);
/* Monotonic milliseconds of the loop (uv_now), the clock every server uses. */
uint64_t cn_node_now(const cn_node *node);

/* A new reference made by this node, unique for its life (make_ref()). */
void cn_node_make_ref(cn_node *node, erlang_ref *out);

/* Counts of live things, for logs, tests and the benchmark. */
typedef struct cn_node_stats {
    unsigned connections;   /* connections that finished the handshake */
    unsigned pending;       /* connections still in the handshake */
    unsigned processes;
    unsigned monitors;
    unsigned links;
    uint64_t frames_in, frames_out, writes;
    uint64_t messages_in;   /* messages delivered to local processes from peers */
    uint64_t alias_sends;   /* messages to aliases sent as ALIAS_SEND (OTP 24-27 peers) */
    uint64_t altact_sends;  /* messages to aliases sent as ALTACT_SIG_SEND (OTP 28+ peers) */
    uint64_t polls;         /* loop turns that polled on without blocking (busy_poll_us) */
    uint64_t yields;        /* of those, turns that found nothing and yielded the core */
    uint64_t no_spare;      /* turns that would have polled on, but no core was to spare (cpu_stat_path) */
    uint64_t pauses;        /* coalescing pauses taken (coalesce_us or cast_pause_us) */
    uint64_t cast_pauses;   /* of those, the longer ones after a turn that queued no frame */
} cn_node_stats;
void cn_node_get_stats(const cn_node *node, cn_node_stats *st);

/*
 * Sends a message (an external term with its version byte, borrowed) from a local
 * process to any pid, local or remote. Local delivery is queued and happens on a
 * later turn of the loop; remote delivery is queued on the connection and written
 * at the end of this turn. A pid on a node we are not connected to is dropped, as
 * a send to a dead pid is in Erlang; the return value says so (CN_ENOCONN).
 */
int cn_send(cn_proc *from, const erlang_pid *to, const char *msg, size_t len);
/* Sends to a registered name on this node or on another node we are connected to. */
int cn_send_name(cn_proc *from, const char *name, const char *node, const char *msg, size_t len);
/*
 * Sends to a process alias (OTP 24+), as the reply to a call whose tag was
 * [alias | Alias]: as ALTACT_SIG_SEND to a peer that has ALTACT_SIG (OTP 28+),
 * as ALIAS_SEND to one that has only ALIAS (OTP 24-27). Falls back to a plain
 * send to fallback_pid when the peer negotiated neither.
 */
int cn_send_alias(cn_proc *from, const erlang_ref *alias, const erlang_pid *fallback_pid,
                  const char *msg, size_t len);

/*
 * A message in pieces, sent as their concatenation: for a message one of whose
 * parts lives in a blob (a tag echoed from a large request, cnode/blob.h). A
 * piece with a blob, at least CN_BLOB_SHARE_MIN bytes long and within the blob,
 * goes out from the blob itself: the connection holds the blob until the bytes
 * are written, and no copy is made. Every other piece is copied, as cn_send
 * copies its message. The pieces and what they point to are borrowed for the call.
 */
typedef struct cn_piece {
    const char *data;
    size_t len;
    cn_blob *blob;      /* the blob data lies in, or NULL */
} cn_piece;
/* cn_send and cn_send_alias for a message in n pieces (n >= 1). */
int cn_send_pieces(cn_proc *from, const erlang_pid *to, const cn_piece *pc, int n);
int cn_send_alias_pieces(cn_proc *from, const erlang_ref *alias, const erlang_pid *fallback_pid,
                         const cn_piece *pc, int n);

/*
 * The node the message p is being handed came from, for a behaviour that must
 * act only for its sender's node (a :sys request, for one): during
 * ops->message, the peer's node name for a message that arrived from a
 * connection, this node's name for one sent by a local process. A message's
 * contents (a From pid, a node name) are whatever the sender chose to write;
 * this is where the runtime saw it come from. Outside a delivery it is this
 * node's name. Borrowed: valid until ops->message returns.
 */
const char *cn_proc_msg_origin(const cn_proc *p);

/*
 * The blob the message p is being handed lies in, during ops->message, or NULL:
 * a large frame is read into a blob (cnode/blob.h), so a behaviour that echoes
 * a large part of the message can send it from there (cn_piece) instead of
 * copying it. Borrowed: cn_blob_hold to keep it past ops->message.
 */
cn_blob *cn_proc_msg_blob(const cn_proc *p);

#endif
