/*
 * Private to genserver/: the server struct and what the behaviour
 * (genserver.c: dispatch, replies, timers, continue, stop) and the system
 * messages (gs_sys.c: the sys module's protocol) share. Never included from
 * another folder: a server's callbacks see only genserver/genserver.h.
 */
#ifndef GS_GENSERVER_INT_H
#define GS_GENSERVER_INT_H

#include <stddef.h>
#include <stdint.h>
#include <ei.h>

#include "cnode/buf.h"
#include "genserver/genserver.h"
#include "genserver/journal.h"
#include "genserver/gs_metrics_int.h"
#include "genserver/sys_shape.h"

/* A message held back while the server is suspended, continuing or in a replace_state. */
typedef struct gs_msg {
    struct gs_msg *next;
    size_t len;
    char data[];
} gs_msg;

/* A gs_send_after timer; the message it delivers follows the struct. */
typedef struct gs_timer {
    uv_timer_t h;
    gs_server *s;
    int64_t id;
    struct gs_timer *prev, *next;  /* in the server's timers (utlist DL) */
    size_t len;
    char data[];
} gs_timer;

/*
 * A part of the reply in s->out that is not copied into it: len bytes of the
 * request's blob that belong at index `at` of s->out (genserver.c, put_echo).
 */
typedef struct gs_hole {
    int at;
    const char *data;
    size_t len;
} gs_hole;

/* A reply echoes at most two parts of its request: the tag, and an unknown call's request. */
#define GS_HOLES 2

struct gs_server {
    cn_proc *proc;
    cn_node *node;
    const gs_callbacks *cb;
    void *user;
    char name[MAXATOMLEN_UTF8];     /* the registered name, UTF-8, or "" */
    int suspended;
    int continuing;
    int stopping;
    int draining;
    gs_msg *q_head, *q_tail;
    gs_timer *timers;
    int64_t next_timer_id;
    uv_timer_t timeout;     /* the gen_server timeout of the last callback result */
    uv_timer_t cont_timer;  /* runs handle_continue on the next loop turn */
    int handles_open;
    erlang_pid parent;
    int has_parent;
    ei_x_buff out, reason, cont;
    cn_blob *msg_blob;          /* the blob the call being handled lies in (do_call), or NULL */
    gs_hole holes[GS_HOLES];    /* parts of the reply in s->out left in msg_blob */
    int nholes;
    /*
     * A system request waiting for the caller's node (gs_sys.c): its rex running a
     * replace_state fun, or telling its stdlib version. While sys_from is set the
     * server handles nothing else.
     */
    gs_from *sys_from;
    erlang_ref sys_tag;
    int64_t sys_timer;
    int sys_wait;               /* what is awaited (gs_sys.c) */
    gs_sys_shape sys_shape;     /* the reply shape of the pending replace_state */
    char *sys_held;             /* the request held until the stdlib version is known */
    gs_sys_cache sys_callers;   /* which sys each calling node runs */
    unsigned sys_refused;       /* system messages dropped by gs__sys_foreign */
    /*
     * Group commit (gs_hold.c): the journal, the node's group of journaled
     * servers (one flush hook for all of them), the replies it holds.
     */
    gs_journal *journal;
    struct gs__group *group;
    gs_server *gprev, *gnext;   /* in group's list (utlist DL) */
    cn_buf held;                /* this turn's replies */
    cn_buf waiting;             /* earlier turns' replies, waiting for a sync (power mode) */
    gs_metrics *met;            /* a named server's figures (gs_metrics.c), else NULL */
};

/* ---- genserver.c, for gs_sys.c ---- */

/* Compares an atom in any of its encodings at b[idx] with an ASCII name, without decoding. */
int gs__atom_at(const char *b, int idx, const char *atom);
/* Decodes {Pid, Tag} at *i (the From of a call or a system message); 0 or CN_EDECODE. */
int gs__decode_from(const char *b, int *i, gs_from *from);
/* Starts {Tag, ...} in s->out for a reply to from; returns the index where the reply goes. */
int gs__begin_reply(gs_server *s, const gs_from *from);
/*
 * Sends a complete reply (with version byte) to from's alias or pid; held
 * until the end of the turn while the server's journal has records to commit.
 * When msg is s->out, the parts of the reply left in the request's blob
 * (s->holes) go with it, also when it is held (gs_hold.c keeps the blob).
 */
int gs__send_reply(gs_server *s, const gs_from *from, const char *msg, size_t len);
/* Sends a reply now, whatever the journal holds. */
int gs__send_now(gs_server *s, const gs_from *from, const char *msg, size_t len);
/* Ends the server from inside: terminate, then the process exits with reason (with version byte). */
void gs__stop_with(gs_server *s, const char *reason, size_t len);
/* Handles the held-back messages in order while the server may. */
void gs__drain(gs_server *s);

/* ---- gs_hold.c, for genserver.c ---- */

/* Keeps a reply (copied) until the journal's commit at the end of the turn. */
void gs__hold_reply(gs_server *s, const gs_from *from, const char *msg, size_t len);
/* Frees what is still held (nothing, after a final gs__settle that succeeded) and its blob references. */
void gs__hold_free(gs_server *s);
/*
 * A server stopping or leaving its journal: the turn's records are written
 * and everything is made durable now, in the loop, and every reply leaves
 * (refused if that failed). Nothing without a journal. (Each turn's commit is
 * the node's flush hook's, gs_hold.c.)
 */
void gs__settle(gs_server *s);

/* ---- gs_sys.c, for genserver.c ---- */

/*
 * The :sys protocol acts only for the node a request came from: every reply
 * goes to From, and a replace_state asks From's node's rex to run the fun, so
 * a From on another node would make the server a deputy that sends to, and
 * runs code on, a node that never asked (the BEAM has no such path: the fun
 * runs inside the server). Returns 1 when b is a system message whose From
 * pid is not on origin (cn_proc_msg_origin at its arrival): the caller drops
 * it, unanswered; the first per server is logged as a warning.
 */
int gs__sys_foreign(gs_server *s, const char *b, const char *origin);
/* Is this a system message {system, From, Request}? Sets *from and *req (the request's index). */
int gs__is_system(const char *b, gs_from *from, int *req);
/* Answers a system message: get_state, get_status, suspend, resume, terminate, replace_state. */
void gs__handle_system(gs_server *s, const gs_from *from, const char *b, int req);
/*
 * While a system request waits (s->sys_from set): takes the message if it is the
 * awaited answer or the wait's timeout, and finishes the request.
 * Returns 1 when it took the message, 0 when the caller should hold it back.
 */
int gs__sys_take(gs_server *s, const char *b);
/* Frees what the system messages hold: a pending request, the callers' cache. */
void gs__sys_release(gs_server *s);

#endif
