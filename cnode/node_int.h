/*
 * Private to cnode/: the structures of the runtime's core and the internal
 * functions its files call on each other. No other folder includes this file
 * (libuv's internal.h pattern).
 *
 * The files of the core, each with one job, and who calls whom. Calls point
 * down this list. The ways up are callbacks, as a libuv stream reports a read
 * through its read_cb: the connection layer's two events (a frame arrived, a
 * connection is gone) go through node->conn_events, set by node.c, and the
 * target that dialed a connection hears of its end through the callback it
 * gave (cn__conn_lost_cb). The inline primitives below (wake, maybe_closed)
 * belong to the node struct itself.
 *
 *   node.c       lifecycle of a node: new, start, close, free; the listener and
 *                the epmd registration; accessors
 *   target.c     --connect targets: epmd lookup, address, dial, backoff
 *   sched.c      end-of-turn work: run queue, flush, zombies, busy poll, coalescing
 *   tcp.c        the TCP transport on libuv (cnode/transport.h)
 *   tls.c        TLS between tcp.c and conn.c, when the node has a TLS context
 *   route.c      where a message, link or exit signal to a pid goes: a local
 *                process or a connection; what a lost connection takes with it
 *   dist_recv.c  a frame's control tuple decoded and dispatched
 *   proc.c       processes, names, links, monitors, exit signals, local queue
 *   alias.c      the caller's side of gen:call: monitors of remote names, and
 *                the aliases their replies come back to
 *   dist_send.c  control messages encoded into a connection's frames
 *   conn.c       the connection state machine: handshake, framing, batched
 *                writes, ticks
 *
 * Ownership: the node owns its connections (all_conns), targets, processes and
 * monitors. A link or monitor to a remote process is on two lists: its local
 * process's and the connection's it goes through; whoever removes it from one
 * removes it from both.
 */
#ifndef CN_NODE_INT_H
#define CN_NODE_INT_H

#include <assert.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>
#include <ei.h>
#include <uthash.h>
#include <utlist.h>

#include "cnode/buf.h"
#include "cnode/cpu_watch.h"
#include "cnode/epmd.h"
#include "cnode/handshake.h"
#include "cnode/metrics.h"
#include "cnode/node.h"
#include "cnode/proc.h"
#include "cnode/tls.h"
#include "cnode/transport.h"

typedef struct cn_link cn_link;
typedef struct cn_monitor cn_monitor;
typedef struct cn_target cn_target;
typedef struct cn_alias cn_alias;

/* The far end of a link or monitor: a remote pid (conn set) or a local one (conn NULL). */
typedef struct cn_peer_pid {
    cn_conn *conn;
    uint32_t num, serial, creation;
} cn_peer_pid;

/*
 * A link between local process `local` and `other`. A link between two local
 * processes is two entries, one on each side.
 */
struct cn_link {
    cn_proc *local;
    cn_peer_pid other;
    cn_link **route;            /* other.conn's list of links; NULL when other is local */
    cn_link *p_next, *p_prev;   /* in local->links */
    cn_link *c_next, *c_prev;   /* in *route */
};

/* The monitors whose watchers a connection reaches, and how many: a connection's loss takes them all. */
typedef struct cn_monitor_list {
    cn_monitor *head;
    size_t count;
    /*
     * The connection is gone and these monitors with it; they leave the tables
     * a batch per loop turn (cn__proc_reclaim), and meanwhile nothing is sent
     * for them and no lookup finds them. The list is freed with its last one.
     */
    int orphan;
    struct cn_monitor_list *next_orphan;    /* in node->orphans */
} cn_monitor_list;

/* Monitors are found by (connection, reference); keys compare as raw bytes (unused words zero). */
typedef struct cn_monitor_key {
    cn_conn *conn;
    uint32_t len;
    uint32_t n[5];
} cn_monitor_key;

/*
 * The monitor table (mon_table.c) is split in this many open-addressing tables
 * by a hash of the key: a table doubles by rehashing every entry at once, which
 * for a peer's half a million monitors in one table held the loop 183 ms; a
 * shard's doubling moves a 64th of them.
 */
#define CN__MONITOR_SHARDS 64

/* A slot of a shard: the monitor (NULL: empty) and its key's hash. */
typedef struct cn_mon_slot {
    uint64_t h;
    cn_monitor *m;
} cn_mon_slot;

/* One shard: mask + 1 slots (a power of two), count of them used. */
typedef struct cn_mon_shard {
    cn_mon_slot *slots;
    size_t mask;
    size_t count;
} cn_mon_shard;

typedef struct cn_mon_table {
    cn_mon_shard shards[CN__MONITOR_SHARDS];
    uint64_t seed;                  /* keys the hash: a peer cannot choose colliding references */
} cn_mon_table;

/* A remote process `watcher` monitors local process `target`. */
struct cn_monitor {
    cn_monitor_key key;
    uint32_t ref_creation;
    cn_proc *target;
    cn_peer_pid watcher;
    int by_name;                    /* monitored by registered name: DOWN names it */
    cn_monitor_list *route;         /* the watcher's connection's list of monitors */
    cn_monitor *t_next, *t_prev;    /* in target->monitors; t_next also links the free lists */
    cn_monitor *c_next, *c_prev;    /* in *route */
};

struct cn_proc {
    cn_node *node;
    uint32_t num;
    UT_hash_handle hh;              /* node->procs, by num */
    UT_hash_handle hh_name;         /* node->names, by name */
    char name[MAXATOMLEN_UTF8];     /* UTF-8, any legal atom (cn_proc_register) */
    const cn_proc_ops *ops;
    void *data;
    int trap_exit;
    int dead;
    cn_link *links;
    cn_monitor *monitors;
    cn_proc *zombie_next;
};

/* A message or exit signal between local processes, waiting for the run queue. */
typedef struct cn_local_msg {
    struct cn_local_msg *next, *prev;
    uint32_t to;                    /* destination pid number */
    uint32_t from;                  /* sender pid number (exit signals) */
    int kind;                       /* CN_LMSG_* */
    size_t len;
    char data[];
} cn_local_msg;

enum { CN_LMSG_MESSAGE = 0, CN_LMSG_EXIT_LINK = 1, CN_LMSG_EXIT2 = 2 };

/*
 * A connection's life: CONNECTING (outgoing, the transport dials) -> HANDSHAKE
 * -> UP -> CLOSING, or CLOSING from any earlier state. Incoming connections
 * start in HANDSHAKE. CLOSING ends when the transport and the handshake timer
 * have both released the connection, which is then freed.
 */
enum cn_conn_state { CN_CONN_CONNECTING, CN_CONN_HANDSHAKE, CN_CONN_UP, CN_CONN_CLOSING };

/*
 * A piece of a queued write that is not in the write buffer: len bytes of a
 * blob, sent after the buffer's first `at` bytes (conn.c). The connection holds
 * the blob until the piece is written.
 */
typedef struct cn__seg {
    size_t at;
    const char *data;
    size_t len;
    cn_blob *blob;
} cn__seg;

/* The segments of one write buffer, in order of `at`; bytes counts their lengths. */
typedef struct cn__segs {
    cn__seg *v;
    unsigned n, cap;
    size_t bytes;
} cn__segs;

/* Told when a connection closes (was_up: it had finished the handshake). */
typedef void (*cn__conn_lost_cb)(cn_conn *c, void *arg, int was_up);

struct cn_conn {
    cn_node *node;
    const cn_transport *tp;
    void *tp_data;
    int state;
    int outgoing;                   /* we initiated it (--connect) */
    cn_hs hs;
    char peer_name[256];
    char dialed[256];               /* the node an outgoing connection was made for, or "" */
    uint64_t peer_flags;
    uint32_t peer_creation;
    char addr[64];                  /* "ip:port", for logs */
    cn_buf rbuf;                    /* bytes read and not yet cut into frames */
    cn_blob *big;                   /* a large frame being read, at its announced length */
    size_t big_have;                /* the bytes of it read so far */
    cn_buf wbuf;                    /* frames queued this turn */
    cn__segs wsegs;                 /* wbuf's pieces that stay in their blobs */
    cn_buf wflight;                 /* bytes handed to the transport, not yet written */
    cn__segs fsegs;                 /* wflight's pieces that stay in their blobs */
    size_t fpos;                    /* wflight is written up to here */
    unsigned fnext;                 /* and fsegs up to this one */
    int writing;
    int wsync;                      /* inside tp->write: a completion there is not followed up */
    int framing;                    /* a frame is begun and not ended (at frame_start) */
    size_t frame_start;
    unsigned frame_seg0;            /* wsegs.n when the frame began */
    int dirty;                      /* on node->dirty */
    cn_conn *dirty_next, *dirty_prev;
    uint64_t last_read, last_write; /* uv_now() of the last traffic, for ticks */
    UT_hash_handle hh;              /* node->conns, by peer_name, once UP */
    cn_conn *all_next, *all_prev;   /* node->all_conns */
    cn_link *links;                 /* links whose far end is reached through here */
    cn_monitor_list *monitors;      /* monitors whose watcher is reached through here (owned) */
    cn__conn_lost_cb lost_cb;       /* the owner that dialed it, if any */
    void *lost_arg;
    uv_timer_t hs_timer;            /* the handshake must finish before it fires */
    int holds;                      /* the transport and the timer: freed when both let go */
};

/* What the connection layer reports to the layers above it (see the top of this file). */
typedef struct cn__conn_events {
    /* A complete frame (after its length). A negative return drops the connection. */
    int (*frame)(cn_conn *c, const char *frame, size_t len);
    /* c is closing: whatever went through it is gone. */
    void (*lost)(cn_conn *c);
} cn__conn_events;

struct cn_node {
    uv_loop_t *loop;
    char name[256];
    char alive[256];
    char host[256];
    char cookie[256];
    uint32_t creation;
    uint16_t port;
    int family;                     /* AF_INET or AF_INET6 (cn_node_config's family) */
    unsigned net_ticktime;
    unsigned handshake_timeout_ms;
    size_t max_write_queue;
    int no_epmd;
    cn_tls_ctx *tls;                /* owned; NULL: plain TCP (inet_tcp), else TLS (inet_tls) */
    int started;
    int closing;
    unsigned coalesce_us;
    uint64_t coalesce_mark;         /* messages_in at the end of the last turn */
    unsigned cast_pause_us;
    uint64_t frames_mark;           /* stats.frames_out at the end of the last turn */
    unsigned busy_poll_us;
    uint64_t spin_until;            /* uv_hrtime() until which the loop polls without blocking */
    cn_cpu_watch cpu_watch;         /* whether a core is to spare for that (sched.c) */
    unsigned busy_turns;            /* light turns that still pause after a heavy one (sched.c) */
    uint64_t peak_batch;            /* the largest turn lately, in requests, and when (sched.c) */
    uint64_t peak_at;

    const cn__conn_events *conn_events;
    uv_tcp_t listener;
    uv_timer_t tick_timer;
    uv_check_t check;               /* end of turn: run queue, flush, zombies */
    uv_idle_t idle;                 /* keeps the loop from blocking while work is queued */
    cn_epmd_reg epmd;
    int epmd_open;                  /* the registration holds handles: close must wait for them */
    int epmd_registered;            /* the first registration succeeded: renewals go to status_cb */
    int open_handles;               /* handles (and the epmd registration) not yet closed */
    void (*ready_cb)(cn_node *, int);
    void (*status_cb)(cn_node *, int);
    void (*closed_cb)(cn_node *);
    int closed;                     /* close finished: cn_node_free may free it */
    void *data;                     /* the user's (cn_node_set_data) */

    cn_conn *conns;                 /* UP connections by peer name */
    cn_conn *all_conns;
    cn_conn *dirty;                 /* connections with queued output */
    cn_node_flush_hook *flush_hooks; /* run before each flush of the turn's output */
    struct cn__tcp_conn *tcp_paused; /* TCP connections past this turn's read budget (tcp.c) */
    uint64_t turn;                  /* loop turns ended (sched.c): read budgets count per turn */
    cn_target *targets;

    cn_proc *procs;                 /* by pid number */
    cn_proc *names;                 /* by registered name */
    uint32_t next_num;
    uint64_t next_ref;
    uint64_t next_unlink_id;
    cn_proc *zombies;

    cn_mon_table monitors;           /* remote monitors by (conn, ref) (mon_table.c) */
    cn_monitor *free_monitors;      /* recycled, so a call allocates nothing */
    unsigned free_monitor_count;    /* at most MONITOR_SPARE (proc.c): the rest is freed */
    cn_monitor_list *orphans;       /* lost connections' monitor lists, emptied a batch a turn */
    cn_monitor *doomed_monitors;    /* a lost connection's, freed a batch a turn (cn__proc_reclaim) */
    size_t monitors_freed;          /* since the allocator last gave memory back to the system */
    cn_alias *aliases;              /* active aliases of local processes, by id (alias.c) */
    cn_alias *free_aliases;         /* recycled, so a call allocates nothing */
    unsigned free_alias_count;
    cn_local_msg *run_queue;
    cn_buf scratch;                 /* a reason rebuilt with its version byte (dist_recv.c) */
    /*
     * The peer whose frame is being handled (dist_recv.c sets it around the
     * dispatch), NULL otherwise: what cn_proc_msg_origin reports.
     */
    const char *delivering_from;
    cn_blob *delivering_blob;       /* the blob of the large frame being handled (cn_proc_msg_blob) */

    cn_node_stats stats;
};

/* ---- The node's shared primitives ---- */

static inline void cn__idle_noop(uv_idle_t *h) { (void)h; }

/* There is work for the end of this turn: keep the loop from blocking in poll. */
static inline void cn__node_wake(cn_node *node)
{
    /* A closing node's idle handle is being closed and must not start again. */
    if (!node->closing)
        uv_idle_start(&node->idle, cn__idle_noop);
}

/* The erlang_pid of the far end of a link or monitor. */
static inline void cn__peer_to_pid(const cn_node *node, const cn_peer_pid *pp, erlang_pid *out)
{
    const char *name = pp->conn ? pp->conn->peer_name : node->name;
    memcpy(out->node, name, strlen(name) + 1);
    out->num = pp->num;
    out->serial = pp->serial;
    out->creation = pp->creation;
}

/*
 * Ends a close once everything the node owns has let go: its handles, its
 * connections and its targets. Called by each of them as it goes.
 */
static inline void cn__node_maybe_closed(cn_node *node)
{
    if (!node->closing || node->closed || node->open_handles > 0 || node->all_conns != NULL ||
        node->targets != NULL)
        return;
    node->closed = 1;
    void (*cb)(cn_node *) = node->closed_cb;
    node->closed_cb = NULL;
    if (cb)
        cb(node);
}

/* Counters of cn_node_stats never go below zero. */
#define CN__STAT_DEC(node, field)                                        \
    do {                                                                 \
        assert((node)->stats.field > 0);                                 \
        (node)->stats.field--;                                           \
    } while (0)

/* sched.c */
void cn__sched_init(cn_node *node);
void cn__sched_close(cn_node *node, uv_close_cb cb);

/* target.c */
void cn__targets_close(cn_node *node);

/* tcp.c */
int cn__tcp_accept(cn_node *node, uv_stream_t *server);
/*
 * Dials addr for an outgoing connection to node `dialed`. Every outcome, an
 * immediate failure too, ends with lost_cb(arg) once the connection closes.
 */
void cn__tcp_connect(cn_node *node, const struct sockaddr *addr, const char *dialed,
                     cn__conn_lost_cb lost_cb, void *arg);
/* End of turn: connections that spent their read budget read again. */
void cn__tcp_resume(cn_node *node);
/* For tls.c: writes ciphertext; the end is reported by cn__tls_conn_written, maybe before it returns. */
int cn__tcp_write_raw(struct cn__tcp_conn *t, const char *data, size_t len);
/* For tls.c: writes what the socket takes at once (an alert, close_notify), and forgets the rest. */
void cn__tcp_try_write(struct cn__tcp_conn *t, const char *data, size_t len);

/*
 * tls.c: one connection's TLS layer, made by tcp.c for c and its TCP stream t
 * (client: we dialed) and freed with t (cn__tls_conn_free). tcp.c hands it
 * what it reads (into the room of cn__tls_conn_read_buf, then read_done) and
 * the ends of its writes; it hands the connection the plaintext, and reports
 * a failure with cn_conn_ended after a log line naming the peer's address.
 */
typedef struct cn__tls_conn cn__tls_conn;
cn__tls_conn *cn__tls_conn_new(cn_conn *c, struct cn__tcp_conn *t, int client);
void cn__tls_conn_free(cn__tls_conn *l);
/* The client's TCP stream is up: its first TLS message goes; the distribution handshake waits for TLS. */
void cn__tls_conn_start(cn__tls_conn *l);
void cn__tls_conn_read_buf(cn__tls_conn *l, char **base, size_t *len);
void cn__tls_conn_read_done(cn__tls_conn *l, size_t n);
/* The connection's write (transport.h): encrypted and written, cn_conn_written once it is. */
int cn__tls_conn_write(cn__tls_conn *l, const char *data, size_t len);
void cn__tls_conn_written(cn__tls_conn *l, int status);
/* The connection closes: close_notify if it can go at once; nothing more is reported but an owed write. */
void cn__tls_conn_close(cn__tls_conn *l);

/* conn.c */
void cn__conn_set_owner(cn_conn *c, const char *dialed, cn__conn_lost_cb cb, void *arg);
/* The outgoing connection's transport is connected: the handshake starts. */
void cn__conn_connected(cn_conn *c);
void cn__conn_flush_dirty(cn_node *node);
/* Runs the flush hooks (cn_node_add_flush_hook): called just before cn__conn_flush_dirty. */
void cn__node_before_flush(cn_node *node);
/* The reference whose counter is id, as cn_node_make_ref makes it (alias.c reads id back). */
void cn__node_ref(const cn_node *node, uint64_t id, erlang_ref *out);
void cn__conn_close_all(cn_node *node);
void cn__conn_tick_all(cn_node *node);
cn_conn *cn__conn_find(cn_node *node, const char *peer_name);
/*
 * Starts a frame in c->wbuf with room for reserve more bytes; *start is the offset
 * of its length field, for cn__frame_end. CN_ENOCONN when the connection is not up,
 * CN_EFULL when the peer stopped reading (the connection is then dropped).
 */
int cn__frame_begin(cn_conn *c, size_t reserve, size_t *start);
void cn__frame_end(cn_conn *c, size_t start);
/*
 * Adds to the begun frame len bytes at data, which lie in blob, as a piece the
 * write sends from the blob (held until written) instead of copying it.
 */
void cn__frame_segment(cn_conn *c, const char *data, size_t len, cn_blob *blob);
/* Takes back a begun frame (an encoder failed). */
void cn__frame_abort(cn_conn *c, size_t start);

/* dist_recv.c */
int cn__dist_recv_frame(cn_conn *c, const char *frame, size_t len);

/* dist_send.c: a message is n pieces (cn_piece in node.h), at least one. */
int cn__dist_send(cn_conn *c, const erlang_pid *from, const erlang_pid *to, const cn_piece *msg, int n);
int cn__dist_reg_send(cn_conn *c, const erlang_pid *from, const char *name, const cn_piece *msg, int n);
int cn__dist_alias_send(cn_conn *c, const erlang_pid *from, const erlang_ref *alias, const cn_piece *msg, int n);
int cn__dist_altact_alias_send(cn_conn *c, const erlang_pid *from, const erlang_ref *alias, const cn_piece *msg,
                               int n);
/* MONITOR_P_EXIT for monitor m of the local process tpid (registered as name, or NULL). */
int cn__dist_monitor_exit(cn_conn *c, const cn_monitor *m, const erlang_pid *tpid, const char *name,
                          const char *reason, size_t len);
/*
 * MONITOR_P_EXIT as a reply to a MONITOR_P whose target does not exist: name
 * (name_len bytes of UTF-8, NUL bytes allowed) echoes the name it asked for, or
 * is NULL for a monitor by pid (tpid).
 */
int cn__dist_monitor_p_exit(cn_conn *c, const char *name, size_t name_len, const erlang_pid *tpid,
                            const erlang_pid *watcher, const erlang_ref *ref, const char *reason, size_t len);
int cn__dist_exit(cn_conn *c, int op_plain, const erlang_pid *from, const cn_peer_pid *to, const char *reason, size_t len);
int cn__dist_link(cn_conn *c, const erlang_pid *from, const cn_peer_pid *to);
/* UNLINK_ID (op 35) or UNLINK_ID_ACK (op 36). */
int cn__dist_unlink_id(cn_conn *c, int op, uint64_t id, const erlang_pid *from, const cn_peer_pid *to);

/* MONITOR_P or DEMONITOR_P (op) from `from` to the process registered as name on c's peer. */
int cn__dist_monitor_p(cn_conn *c, int op, const erlang_pid *from, const char *name, const erlang_ref *ref);

/* alias.c */
/* A message to alias ref: to its process; CN_ENOPROC (dropped) when no active alias is ref. */
int cn__alias_deliver(cn_node *node, const erlang_ref *ref, const char *msg, size_t len);
/* The DOWN msg of the monitor ref to its process, which also ends the alias; or CN_ENOPROC. */
int cn__alias_down(cn_node *node, const erlang_ref *ref, const char *msg, size_t len);
/* Connection c to node peer is lost: each monitor through it gets its DOWN with 'noconnection'. */
void cn__alias_conn_lost(cn_node *node, const cn_conn *c, const char *peer);
/* Starts {'DOWN', Ref, process, ...: the caller appends Who and Reason. */
void cn__alias_down_head(ei_x_buff *x, const erlang_ref *ref);
void cn__alias_free_all(cn_node *node);

/* route.c */
void cn__route_conn_down(cn_conn *c);

/*
 * mon_table.c: remote monitors by key. The caller finds before it adds (keys
 * are unique) and deletes only a monitor that is in the table. Nothing here
 * allocates a monitor or touches its lists.
 */
void cn__monitor_key(cn_monitor_key *k, cn_conn *c, const erlang_ref *ref);
void cn__mon_table_init(cn_mon_table *t, uint64_t seed);
/* Frees the shards; the table must be empty. */
void cn__mon_table_free(cn_mon_table *t);
cn_monitor *cn__mon_table_find(cn_mon_table *t, const cn_monitor_key *k);
void cn__mon_table_add(cn_mon_table *t, cn_monitor *m);
void cn__mon_table_del(cn_mon_table *t, cn_monitor *m);

/* proc.c */
int cn__is_local(const cn_node *node, const erlang_pid *pid);
/* The process registered as the name[0..len) (UTF-8, NUL bytes allowed: then none), or NULL. */
cn_proc *cn__proc_whereis_n(cn_node *node, const char *name, size_t len);
/* The local process with this pid, live or exiting this turn, or NULL. */
cn_proc *cn__proc_by_pid(cn_node *node, const erlang_pid *pid);
void cn__proc_deliver(cn_proc *p, const char *msg, size_t len);
/* An exit signal from remote or local `from`: reason with its version byte. */
void cn__proc_exit_signal(cn_proc *p, const erlang_pid *from, const char *reason, size_t len, int from_link);
/* Links p to other; route is the list of other's connection (NULL for a local other). */
void cn__link_add(cn_proc *p, const cn_peer_pid *other, cn_link **route);
int cn__link_remove(cn_proc *p, const cn_peer_pid *other);
/* The halves of cn_proc_link / cn_proc_unlink for a pid of this node. */
int cn__proc_link_local(cn_proc *p, const erlang_pid *pid);
void cn__proc_unlink_local(cn_proc *p, const erlang_pid *pid);
/* A remote watcher (over c, whose list of monitors is route) monitors target. */
void cn__monitor_add(cn_proc *target, cn_conn *c, cn_monitor_list *route, const erlang_pid *watcher,
                     const erlang_ref *ref, int by_name);
void cn__monitor_remove(cn_node *node, cn_conn *c, const erlang_ref *ref);
/*
 * A connection's lists of links and monitors, as the connection goes: the
 * monitors go (the list is taken over: from now on the node owns it), and
 * every linked process gets an exit signal 'noconnection'.
 */
void cn__proc_conn_lost(cn_node *node, cn_link **links, cn_monitor_list *monitors);
void cn__proc_enqueue(cn_node *node, uint32_t to, uint32_t from, int kind, const char *data, size_t len);
void cn__proc_run_queue(cn_node *node, unsigned budget);
void cn__proc_free_zombies(cn_node *node);
/*
 * End of turn: frees a batch of the monitors lost connections left, and gives
 * freed memory back to the system once a lot was freed. Nonzero while more
 * remains, so the loop keeps turning until it is done.
 */
int cn__proc_reclaim(cn_node *node);
/* Sets up the tables of processes and monitors (cn_node_new). */
void cn__proc_init(cn_node *node);
/* Frees every process, queued message and recycled monitor (cn_node_free). */
void cn__proc_free_all(cn_node *node);

#endif
