/*
 * Private to cnode/: the structures shared by node.c, conn.c, dist.c and proc.c.
 * No other folder includes this file.
 */
#ifndef CN_NODE_INT_H
#define CN_NODE_INT_H

#include <stdint.h>
#include <uv.h>
#include <ei.h>
#include <uthash.h>

#include "cnode/buf.h"
#include "cnode/epmd.h"
#include "cnode/handshake.h"
#include "cnode/node.h"
#include "cnode/proc.h"
#include "cnode/transport.h"

typedef struct cn_link cn_link;
typedef struct cn_monitor cn_monitor;
typedef struct cn_target cn_target;

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
    cn_link *p_next, *p_prev;   /* in local->links */
    cn_link *c_next, *c_prev;   /* in other.conn->links, for remote ends */
};

/* Monitors are found by (connection, reference); the key is hashed as raw bytes. */
typedef struct cn_monitor_key {
    cn_conn *conn;
    uint32_t len;
    uint32_t n[5];
} cn_monitor_key;

/* A remote process `watcher` monitors local process `target`. */
struct cn_monitor {
    UT_hash_handle hh;
    cn_monitor_key key;
    uint32_t ref_creation;
    cn_proc *target;
    cn_peer_pid watcher;
    int by_name;                    /* monitored by registered name: DOWN names it */
    cn_monitor *t_next, *t_prev;    /* in target->monitors */
    cn_monitor *c_next, *c_prev;    /* in watcher.conn->monitors */
};

struct cn_proc {
    cn_node *node;
    uint32_t num;
    UT_hash_handle hh;              /* node->procs, by num */
    UT_hash_handle hh_name;         /* node->names, by name */
    char name[256];
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
    struct cn_local_msg *next;
    uint32_t to;                    /* destination pid number */
    uint32_t from;                  /* sender pid number (exit signals) */
    int kind;                       /* CN_LMSG_* */
    size_t len;
    char data[];
} cn_local_msg;

enum { CN_LMSG_MESSAGE = 0, CN_LMSG_EXIT_LINK = 1, CN_LMSG_EXIT2 = 2 };

enum cn_conn_state { CN_CONN_CONNECTING, CN_CONN_HANDSHAKE, CN_CONN_UP, CN_CONN_CLOSING };

struct cn_conn {
    cn_node *node;
    const cn_transport *tp;
    void *tp_data;
    int state;
    int outgoing;                   /* we initiated it (--connect or a send) */
    cn_hs hs;
    char peer_name[256];
    uint64_t peer_flags;
    uint32_t peer_creation;
    char addr[64];                  /* "ip:port", for logs */
    cn_buf rbuf;                    /* bytes read and not yet cut into frames */
    cn_buf wbuf;                    /* frames queued this turn */
    cn_buf wflight;                 /* bytes handed to the transport, not yet written */
    int writing;
    int dirty;                      /* on node->dirty */
    cn_conn *dirty_next;
    uint64_t last_read, last_write; /* uv_now() of the last traffic, for ticks */
    UT_hash_handle hh;              /* node->conns, by peer_name, once UP */
    cn_conn *all_next, *all_prev;   /* node->all_conns */
    cn_link *links;
    cn_monitor *monitors;
    cn_target *target;              /* the --connect entry that owns it, if any */
    uv_tcp_t tcp;
    uv_timer_t hs_timer;
    int handles_open;
    uv_write_t wreq;
    uv_connect_t creq;
};

/* A node we keep connecting to (--connect). */
struct cn_target {
    cn_node *node;
    char name[256];
    cn_conn *conn;
    uv_timer_t retry;
    unsigned backoff_ms;
    int looking_up;
    cn_target *next;
};

struct cn_node {
    uv_loop_t *loop;
    char name[256];
    char alive[256];
    char host[256];
    char cookie[256];
    uint32_t creation;
    uint16_t port;
    unsigned net_ticktime;
    unsigned handshake_timeout_ms;
    size_t max_write_queue;
    int no_epmd;
    int closing;
    unsigned coalesce_us;
    uint64_t coalesce_mark;         /* messages_in at the end of the last turn */
    unsigned busy_poll_us;
    uint64_t spin_until;            /* uv_hrtime() until which the loop polls without blocking */

    uv_tcp_t listener;
    uv_timer_t tick_timer;
    uv_check_t check;               /* end of turn: run queue, flush, zombies */
    uv_idle_t idle;                 /* keeps the loop from blocking while work is queued */
    cn_epmd_reg epmd;
    int epmd_started;               /* cn_epmd_register returned 0: unregister on close */
    int epmd_registered;
    int open_handles;
    void (*ready_cb)(cn_node *, int);
    void (*closed_cb)(cn_node *);
    int closed;                     /* close finished: cn_node_free may free it */
    void *data;                     /* the user's (cn_node_set_data) */

    cn_conn *conns;                 /* UP connections by peer name */
    cn_conn *all_conns;
    cn_conn *dirty;                 /* connections with queued output */
    cn_target *targets;

    cn_proc *procs;                 /* by pid number */
    cn_proc *names;                 /* by registered name */
    uint32_t next_num;
    uint64_t next_ref;
    cn_proc *zombies;

    cn_monitor *monitors;           /* by (conn, ref) */
    cn_monitor *free_monitors;      /* recycled, so a call allocates nothing */
    cn_local_msg *rq_head, *rq_tail;

    cn_node_stats stats;
};

/* conn.c */
void cn__conn_close(cn_conn *c, const char *why);
void cn__conn_mark_dirty(cn_conn *c);
void cn__conn_flush(cn_conn *c);
int cn__conn_accept_tcp(cn_node *node, uv_stream_t *server);
int cn__conn_connect_tcp(cn_node *node, cn_target *t, const struct sockaddr *addr);
void cn__conn_tick_all(cn_node *node);
cn_conn *cn__conn_find(cn_node *node, const char *peer_name);
/*
 * Starts a frame in c->wbuf with room for reserve more bytes; *start is the offset
 * of its length field, for cn__frame_end. CN_ENOCONN when the connection is not up,
 * CN_EFULL when the peer stopped reading (the connection is then dropped).
 */
int cn__frame_begin_at(cn_conn *c, size_t reserve, size_t *start);
void cn__frame_end(cn_conn *c, size_t start);

/* node.c */
void cn__node_wake(cn_node *node);
void cn__node_maybe_closed(cn_node *node);
void cn__target_retry(cn_target *t);

/* dist.c */
int cn__dist_handle_frame(cn_conn *c, const char *frame, size_t len);
int cn__dist_send(cn_conn *c, const erlang_pid *from, const erlang_pid *to, const char *msg, size_t len);
int cn__dist_reg_send(cn_conn *c, const erlang_pid *from, const char *name, const char *msg, size_t len);
int cn__dist_alias_send(cn_conn *c, const erlang_pid *from, const erlang_ref *alias, const char *msg, size_t len);
int cn__dist_monitor_exit(cn_conn *c, const cn_proc *target, const cn_monitor *m, const char *reason, size_t len);
int cn__dist_exit(cn_conn *c, int op_plain, const erlang_pid *from, const cn_peer_pid *to, const char *reason, size_t len);
int cn__dist_link(cn_conn *c, const erlang_pid *from, const cn_peer_pid *to);
/* UNLINK_ID (op 35) or UNLINK_ID_ACK (op 36). */
int cn__dist_unlink_id(cn_conn *c, int op, uint64_t id, const erlang_pid *from, const cn_peer_pid *to);

/* proc.c */
void cn__pid_of_peer(const cn_node *node, const cn_peer_pid *pp, erlang_pid *out);
cn_proc *cn__proc_by_pid(cn_node *node, const erlang_pid *pid);
void cn__proc_deliver(cn_proc *p, const char *msg, size_t len);
/* An exit signal from remote or local `from`: reason with its version byte. */
void cn__proc_exit_signal(cn_proc *p, const erlang_pid *from, const char *reason, size_t len, int from_link);
int cn__link_add(cn_proc *p, const cn_peer_pid *other);
int cn__link_remove(cn_proc *p, const cn_peer_pid *other);
int cn__monitor_add(cn_proc *target, cn_conn *c, const erlang_pid *watcher, const erlang_ref *ref, int by_name);
void cn__monitor_remove(cn_node *node, cn_conn *c, const erlang_ref *ref);
void cn__conn_drop_links_monitors(cn_conn *c);
void cn__run_queue(cn_node *node, unsigned budget);
void cn__free_zombies(cn_node *node);
void cn__local_enqueue(cn_node *node, uint32_t to, uint32_t from, int kind, const char *data, size_t len);
int cn__is_local(const cn_node *node, const erlang_pid *pid);

#endif
