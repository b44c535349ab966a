/*
 * The gen_server behaviour on top of cnode processes: dispatch of calls, casts
 * and other messages to the callbacks, replies, timers, handle_continue and
 * the stop paths. The system messages (the sys module) are in gs_sys.c; the
 * two share genserver_int.h.
 *
 * The hot path, a GenServer.call: the message is decoded just enough to find
 * the caller's pid, its tag and the request; the reply is encoded into a buffer
 * the server keeps, already holding {Tag, ...}, so the callback's ei_x_encode
 * writes the reply in place and nothing is allocated per call. A buffer that a
 * large tag, reply, reason or continue term grew past CN_BUF_KEEP shrinks back
 * once it is no longer needed (trim_buffers): a peer's 100 MB tag must not
 * stay with the server.
 *
 * Messages that arrive while the server is suspended (:sys.suspend) or still in
 * handle_continue are copied to a queue and handled afterwards, in order;
 * system messages still get through a suspended server, as in OTP.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/term.h"
#include "genserver/genserver_int.h"

static void handle(gs_server *s, const char *buf, size_t len);

void *gs_data(const gs_server *s) { return s->user; }
void gs_set_data(gs_server *s, void *user) { s->user = user; }
cn_proc *gs_proc(const gs_server *s) { return s->proc; }
cn_node *gs_node(const gs_server *s) { return s->node; }
void gs_self(const gs_server *s, erlang_pid *out) { cn_proc_pid(s->proc, out); }

int gs__atom_at(const char *b, int idx, const char *atom)
{
    unsigned char tag = (unsigned char)b[idx];
    size_t n, want = strlen(atom);
    const char *p;
    if (tag == ERL_SMALL_ATOM_UTF8_EXT || tag == ERL_SMALL_ATOM_EXT) {
        n = (unsigned char)b[idx + 1];
        p = b + idx + 2;
    } else if (tag == ERL_ATOM_UTF8_EXT || tag == ERL_ATOM_EXT) {
        n = ((size_t)(unsigned char)b[idx + 1] << 8) | (unsigned char)b[idx + 2];
        p = b + idx + 3;
    } else {
        return 0;
    }
    return n == want && memcmp(p, atom, n) == 0;
}

int gs_term_is_atom(const gs_term *t, const char *atom)
{
    return gs__atom_at(t->buf, t->index, atom);
}

/* ---- Buffers ---- */

/* An ei_x_buff's room, back to CN_BUF_KEEP when it grew past it and is empty now. */
static void shrink_x(ei_x_buff *x)
{
    if (x->buffsz <= CN_BUF_KEEP)
        return;
    x->buff = cn_realloc(x->buff, CN_BUF_KEEP);
    x->buffsz = CN_BUF_KEEP;
    x->index = 0;
}

/*
 * After a message: the reply has gone and the reason has been used; the
 * continue term is still needed while a handle_continue is pending.
 */
static void trim_buffers(gs_server *s)
{
    if (s->stopping)
        return;
    shrink_x(&s->out);
    shrink_x(&s->reason);
    if (!s->continuing)
        shrink_x(&s->cont);
}

/* ---- Timers ---- */

static void handle_closed(uv_handle_t *h)
{
    gs_server *s = h->data;
    if (--s->handles_open == 0) {
        ei_x_free(&s->out);
        ei_x_free(&s->reason);
        ei_x_free(&s->cont);
        free(s);
    }
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void timer_unlink(gs_server *s, gs_timer *t)
{
    DL_DELETE(s->timers, t);
    t->h.data = t;
    uv_close((uv_handle_t *)&t->h, timer_closed);
}

static void timer_fired(uv_timer_t *h)
{
    gs_timer *t = (gs_timer *)h;
    gs_server *s = t->s;
    /* Unlink first: the message may stop the server, which closes its timers. */
    DL_DELETE(s->timers, t);
    cn_proc *p = s->proc;
    if (cn_proc_alive(p))
        handle(s, t->data, t->len);
    t->h.data = t;
    uv_close((uv_handle_t *)&t->h, timer_closed);
}

int64_t gs_send_after(gs_server *s, uint64_t ms, const char *msg, size_t len)
{
    gs_timer *t = cn_malloc(sizeof *t + len);
    uv_timer_init(cn_node_loop(s->node), &t->h);
    t->s = s;
    t->id = ++s->next_timer_id;
    t->len = len;
    memcpy(t->data, msg, len);
    DL_PREPEND(s->timers, t);
    uv_timer_start(&t->h, timer_fired, ms, 0);
    return t->id;
}

int gs_cancel_timer(gs_server *s, int64_t id)
{
    for (gs_timer *t = s->timers; t; t = t->next) {
        if (t->id == id) {
            uv_timer_stop(&t->h);
            timer_unlink(s, t);
            return 0;
        }
    }
    return CN_ENOPROC;
}

static void on_timeout(uv_timer_t *h)
{
    gs_server *s = h->data;
    char buf[16];
    size_t n = cn_term_atom(buf, "timeout");
    if (cn_proc_alive(s->proc))
        handle(s, buf, n);
}

/* ---- Stopping ---- */

static void release(gs_server *s)
{
    /* The held replies go (or are refused) while the process can still send them. */
    gs__settle(s);
    gs_set_journal(s, NULL);
    gs__hold_free(s);
    gs__sys_release(s);
    gs__metrics_free(s, s->met);
    s->met = NULL;
    if (s->cb->cleanup)
        s->cb->cleanup(s);
    s->user = NULL;
    while (s->timers)
        timer_unlink(s, s->timers);
    while (s->q_head) {
        gs_msg *m = s->q_head;
        s->q_head = m->next;
        free(m);
    }
    s->q_tail = NULL;
    uv_close((uv_handle_t *)&s->timeout, handle_closed);
    uv_close((uv_handle_t *)&s->cont_timer, handle_closed);
}

static int reason_is_quiet(const char *r, size_t len)
{
    gs_term t = {r, 1};
    if (len < 2)
        return 1;
    if (gs_term_is_atom(&t, "normal") || gs_term_is_atom(&t, "shutdown"))
        return 1;
    /* {shutdown, _} */
    int i = 1, arity;
    if (ei_decode_tuple_header(r, &i, &arity) == 0 && arity == 2 && gs__atom_at(r, i, "shutdown"))
        return 1;
    return 0;
}

static void log_stop(gs_server *s, const char *reason, size_t len)
{
    if (reason_is_quiet(reason, len))
        return;
    (void)len;
    char *text = cn_term_sprint(reason, 1);
    CN_ERROR("genserver", "%s (%s) terminating: %s", s->name[0] ? s->name : "server",
             s->cb->module ? s->cb->module : "?", text ? text : "?");
    free(text);
}

static void run_terminate(gs_server *s, const char *reason, size_t len)
{
    (void)len;
    /* What the turn appended is made durable before terminate's snapshot, and the replies answered. */
    gs__settle(s);
    if (s->cb->terminate) {
        gs_term t = {reason, 1};
        s->cb->terminate(s, &t);
    }
}

void gs__stop_with(gs_server *s, const char *reason, size_t len)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    log_stop(s, reason, len);
    run_terminate(s, reason, len);
    release(s);
    cn_proc_exit(s->proc, reason, len);
}

void gs_stop(gs_server *s, const char *reason_atom)
{
    char buf[300];
    size_t n = cn_term_atom(buf, reason_atom);
    gs__stop_with(s, buf, n);
}

/* The process is dying from outside (exit signal, kill, node shutdown). */
static void on_exiting(cn_proc *p, cn_exit_cause cause, const char *reason, size_t len)
{
    gs_server *s = cn_proc_data(p);
    if (s->stopping)
        return;
    s->stopping = 1;
    if (cause != CN_EXIT_KILL) {
        log_stop(s, reason, len);
        run_terminate(s, reason, len);
    }
    release(s);
}

/* ---- Replies ---- */

/*
 * A reply echoes parts of the call it answers: the tag, which a peer may make
 * 100 MB long, and an unknown call's request. Copying such a part into s->out
 * would cost a loop turn the time to touch that much fresh memory (s->out
 * shrinks after a large message, so every large call pays it). When the call
 * came in a blob (cn_proc_msg_blob), a large part is left there instead: a
 * hole in s->out stands for it, and the reply goes out in pieces, the part
 * sent from the blob (cn_send_pieces).
 */
static void put_echo(gs_server *s, const char *p, size_t len)
{
    if (len >= CN_BLOB_SHARE_MIN && s->nholes < GS_HOLES && cn_blob_holds(s->msg_blob, p, len)) {
        s->holes[s->nholes++] = (gs_hole){s->out.index, p, len};
        return;
    }
    ei_x_append_buf(&s->out, p, (int)len);
}

/* The reply in s->out (len bytes) with its holes filled from the blob, as pieces. */
static int send_with_holes(gs_server *s, const gs_from *from, size_t len)
{
    cn_piece pc[2 * GS_HOLES + 1];
    int n = 0;
    size_t pos = 0;
    for (int k = 0; k < s->nholes; k++) {
        const gs_hole *h = &s->holes[k];
        assert((size_t)h->at >= pos && (size_t)h->at <= len);
        pc[n++] = (cn_piece){s->out.buff + pos, (size_t)h->at - pos, NULL};
        pc[n++] = (cn_piece){h->data, h->len, s->msg_blob};
        pos = (size_t)h->at;
    }
    pc[n++] = (cn_piece){s->out.buff + pos, len - pos, NULL};
    if (from->has_alias)
        return cn_send_alias_pieces(s->proc, &from->alias, &from->pid, pc, n);
    return cn_send_pieces(s->proc, &from->pid, pc, n);
}

int gs__send_reply(gs_server *s, const gs_from *from, const char *msg, size_t len)
{
    if (s->journal != NULL && gs_journal_holding(s->journal)) {
        gs__hold_reply(s, from, msg, len);
        return 0;
    }
    return gs__send_now(s, from, msg, len);
}

int gs__send_now(gs_server *s, const gs_from *from, const char *msg, size_t len)
{
    if (s->nholes > 0 && msg == s->out.buff)
        return send_with_holes(s, from, len);
    if (from->has_alias)
        return cn_send_alias(s->proc, &from->alias, &from->pid, msg, len);
    return cn_send(s->proc, &from->pid, msg, len);
}

int gs__begin_reply(gs_server *s, const gs_from *from)
{
    s->out.index = 0;
    s->nholes = 0;
    ei_x_encode_version(&s->out);
    ei_x_encode_tuple_header(&s->out, 2);
    put_echo(s, from->tag, (size_t)from->tag_len);
    return s->out.index;
}

int gs_reply(gs_server *s, const gs_from *from, const char *reply, size_t len)
{
    ei_x_buff x;
    cn_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_append_buf(&x, from->tag, from->tag_len);
    ei_x_append_buf(&x, reply, (int)len);
    int rc = gs__send_reply(s, from, x.buff, (size_t)x.index);
    ei_x_free(&x);
    return rc;
}

gs_from *gs_from_dup(const gs_from *from)
{
    gs_from *f = cn_malloc(sizeof *f + (size_t)from->tag_len);
    *f = *from;
    char *tag = (char *)(f + 1);
    memcpy(tag, from->tag, (size_t)from->tag_len);
    f->tag = tag;
    return f;
}

void gs_from_free(gs_from *from)
{
    free(from);
}

/* ---- Results ---- */

static void reset_result(gs_server *s, gs_result *res)
{
    s->reason.index = 0;
    s->cont.index = 0;
    res->reply = &s->out;
    res->reason = &s->reason;
    res->cont = &s->cont;
    res->timeout_ms = -1;
}

static void schedule_continue(gs_server *s);

/* Applies what a callback returned, after any reply has been sent. */
static void apply(gs_server *s, gs_ret r, gs_result *res)
{
    if (r == GS_STOP) {
        char normal[16];
        if (s->reason.index == 0) {
            size_t n = cn_term_atom(normal, "normal");
            gs__stop_with(s, normal, n);
            return;
        }
        /* The reason buffer holds a bare term: give it a version byte. */
        ei_x_buff v;
        cn_x_new_with_version(&v);
        ei_x_append_buf(&v, s->reason.buff, s->reason.index);
        gs__stop_with(s, v.buff, (size_t)v.index);
        ei_x_free(&v);
        return;
    }
    if (s->cont.index > 0) {
        schedule_continue(s);
        return;
    }
    if (res->timeout_ms >= 0)
        uv_timer_start(&s->timeout, on_timeout, (uint64_t)res->timeout_ms, 0);
}

/* ---- Dispatch ---- */

/*
 * The tag is [alias | Ref] for OTP 24+ callers: a list of one element whose
 * tail is the reference, so the tag ends where the reference does; any other
 * tag is walked to its end. The pid and the alias are read by term.c's
 * decoders, which give what ei's give at a fraction of the cost (every call
 * decodes both). The message was walked when it arrived (cn_term_skip), so,
 * as for cn_term_skip_trusted, its end needs no bound here.
 */
int gs__decode_from(const char *b, int *i, gs_from *from)
{
    int arity;
    size_t at, node_len;
    if (ei_decode_tuple_header(b, i, &arity) < 0 || arity != 2)
        return CN_EDECODE;
    at = (size_t)*i;
    if (cn_term_decode_pid(b, SIZE_MAX, &at, &from->pid, &node_len) < 0)
        return CN_EDECODE;
    *i = (int)at;
    int start = *i;
    from->has_alias = 0;
    int j = *i, n;
    if (ei_decode_list_header(b, &j, &n) == 0 && n == 1 && gs__atom_at(b, j, "alias")) {
        cn_term_skip_trusted(b, &j);
        at = (size_t)j;
        if (cn_term_decode_ref(b, SIZE_MAX, &at, &from->alias, &node_len) == 0)
            from->has_alias = 1;
    }
    if (from->has_alias)
        *i = (int)at;
    else if (cn_term_skip_trusted(b, i) < 0)
        return CN_EDECODE;
    from->tag = b + start;
    from->tag_len = *i - start;
    return 0;
}

static void unknown(gs_server *s, const char *what, const char *b, int idx)
{
    if (cn_log_threshold > CN_LOG_WARNING)
        return;
    char *text = cn_term_sprint(b, idx);
    CN_WARN("genserver", "%s got an unknown %s: %s", s->name[0] ? s->name : "server", what, text ? text : "?");
    free(text);
}

static void do_call(gs_server *s, const char *b, int i)
{
    gs_from from;
    if (gs__decode_from(b, &i, &from) < 0) {
        unknown(s, "malformed call", b, 1);
        return;
    }
    s->msg_blob = cn_proc_msg_blob(s->proc);
    uint64_t t0 = s->met ? uv_hrtime() : 0;
    gs_term req = {b, i};
    gs_result res;
    reset_result(s, &res);
    int reply_at = gs__begin_reply(s, &from);
    gs_ret r = s->cb->handle_call ? s->cb->handle_call(s, &req, &from, &res) : GS_UNKNOWN;
    gs_ret handled = r;
    if (r == GS_UNKNOWN) {
        unknown(s, "call", b, i);
        s->out.index = reply_at;
        int e = i;
        cn_term_skip_trusted(b, &e);
        ei_x_encode_tuple_header(&s->out, 2);
        ei_x_encode_atom(&s->out, "error");
        ei_x_encode_tuple_header(&s->out, 2);
        ei_x_encode_atom(&s->out, "unknown_call");
        put_echo(s, b + i, (size_t)(e - i));
        r = GS_REPLY;
    }
    if (r == GS_REPLY || (r == GS_STOP && s->out.index > reply_at))
        gs__send_reply(s, &from, s->out.buff, (size_t)s->out.index);
    /* The holes were the request's bytes, and the request is the caller's only for this call. */
    s->msg_blob = NULL;
    s->nholes = 0;
    gs__metrics_call(s, handled, reply_at, t0);
    apply(s, r, &res);
}

static void do_simple(gs_server *s, const char *b, int i, int is_cast)
{
    gs_term msg = {b, i};
    gs_result res;
    reset_result(s, &res);
    gs_ret r;
    if (is_cast)
        r = s->cb->handle_cast ? s->cb->handle_cast(s, &msg, &res) : GS_UNKNOWN;
    else
        r = s->cb->handle_info ? s->cb->handle_info(s, &msg, &res) : GS_UNKNOWN;
    gs__metrics_simple(s, r, is_cast);
    if (r == GS_UNKNOWN) {
        unknown(s, is_cast ? "cast" : "message", b, i);
        r = GS_NOREPLY;
    }
    apply(s, r, &res);
}

/* Handles one message now. The caller has checked the server is not deferring. */
static void dispatch(gs_server *s, const char *b, size_t len)
{
    (void)len;
    if (uv_is_active((uv_handle_t *)&s->timeout))
        uv_timer_stop(&s->timeout);
    int i = 1, arity;
    if (ei_decode_tuple_header(b, &i, &arity) == 0) {
        if (arity == 3 && gs__atom_at(b, i, "$gen_call")) {
            cn_term_skip_trusted(b, &i);
            do_call(s, b, i);
            return;
        }
        if (arity == 2 && gs__atom_at(b, i, "$gen_cast")) {
            cn_term_skip_trusted(b, &i);
            do_simple(s, b, i, 1);
            return;
        }
    }
    do_simple(s, b, 1, 0);
}

static void defer(gs_server *s, const char *buf, size_t len)
{
    gs_msg *m = cn_malloc(sizeof *m + len);
    m->next = NULL;
    m->len = len;
    memcpy(m->data, buf, len);
    if (s->q_tail)
        s->q_tail->next = m;
    else
        s->q_head = m;
    s->q_tail = m;
}

/* One message, now or later: deferred while the server may not take it. */
static void handle_or_defer(gs_server *s, const char *buf, size_t len)
{
    gs_from from;
    int req;
    if (s->sys_from != NULL) {
        if (!gs__sys_take(s, buf))
            defer(s, buf, len);
        return;
    }
    if (s->continuing || s->q_head != NULL || s->suspended) {
        if (!s->continuing && gs__is_system(buf, &from, &req)) {
            gs__handle_system(s, &from, buf, req);
            return;
        }
        defer(s, buf, len);
        return;
    }
    if (gs__is_system(buf, &from, &req))
        gs__handle_system(s, &from, buf, req);
    else
        dispatch(s, buf, len);
}

static void handle(gs_server *s, const char *buf, size_t len)
{
    if (s->stopping)
        return;
    handle_or_defer(s, buf, len);
    trim_buffers(s);
}

/*
 * The next held-back message the server may handle now, taken off the queue: the
 * oldest one, or while suspended the oldest system message (a suspended OTP
 * server still answers those, in order). NULL when there is none.
 */
static gs_msg *next_held(gs_server *s)
{
    gs_msg *prev = NULL;
    for (gs_msg *m = s->q_head; m; prev = m, m = m->next) {
        gs_from from;
        int req;
        if (s->suspended && !gs__is_system(m->data, &from, &req))
            continue;
        if (prev)
            prev->next = m->next;
        else
            s->q_head = m->next;
        if (s->q_tail == m)
            s->q_tail = prev;
        return m;
    }
    return NULL;
}

/* Handles deferred messages in order, until none is left or the server defers again. */
void gs__drain(gs_server *s)
{
    if (s->draining)
        return;
    s->draining = 1;
    cn_proc *p = s->proc;
    gs_msg *m;
    while (!s->continuing && !s->stopping && s->sys_from == NULL && (m = next_held(s)) != NULL) {
        gs_from from;
        int req;
        if (gs__is_system(m->data, &from, &req))
            gs__handle_system(s, &from, m->data, req);
        else
            dispatch(s, m->data, m->len);
        free(m);
        if (!cn_proc_alive(p))
            break;
    }
    s->draining = 0;
}

static void run_continue(uv_timer_t *h)
{
    gs_server *s = h->data;
    if (s->stopping)
        return;
    /* Take the continue term out of s->cont: the callback may set a new one. */
    ei_x_buff term;
    cn_x_new(&term);
    ei_x_append_buf(&term, s->cont.buff, s->cont.index);
    gs_term t = {term.buff, 0};
    gs_result res;
    reset_result(s, &res);
    s->continuing = 0;
    gs_ret r = s->cb->handle_continue ? s->cb->handle_continue(s, &t, &res) : GS_UNKNOWN;
    if (r == GS_UNKNOWN) {
        unknown(s, "continue", term.buff, 0);
        r = GS_NOREPLY;
    }
    ei_x_free(&term);
    apply(s, r, &res);
    if (!s->stopping && !s->continuing)
        gs__drain(s);
    trim_buffers(s);
}

static void schedule_continue(gs_server *s)
{
    s->continuing = 1;
    uv_timer_start(&s->cont_timer, run_continue, 0, 0);
}

/* ---- Start ---- */

static void on_message(cn_proc *p, const char *buf, size_t len)
{
    gs_server *s = cn_proc_data(p);
    /* At arrival, while the origin is known: a system message may be held back and handled later. */
    if (gs__sys_foreign(s, buf, cn_proc_msg_origin(p)))
        return;
    handle(s, buf, len);
}

static const cn_proc_ops gs_ops = {on_message, on_exiting};

/* A server with its buffers and handles, not yet a process. */
static gs_server *server_new(cn_node *node, const gs_callbacks *cb, void *user)
{
    gs_server *s = cn_calloc(1, sizeof *s);
    cn_buf_init(&s->held);
    cn_buf_init(&s->waiting);
    s->node = node;
    s->cb = cb;
    s->user = user;
    cn_x_new(&s->out);
    cn_x_new(&s->reason);
    cn_x_new(&s->cont);
    uv_timer_init(cn_node_loop(node), &s->timeout);
    uv_timer_init(cn_node_loop(node), &s->cont_timer);
    s->timeout.data = s->cont_timer.data = s;
    s->handles_open = 2;
    return s;
}

/*
 * Runs init as proc_lib's start does: on stop or ignore the process ends
 * without terminate (cleanup runs), and the error says which.
 */
static int run_init(gs_server *s, const gs_options *opt)
{
    char nil[8];
    int ni = 0;
    ei_encode_version(nil, &ni);
    ei_encode_empty_list(nil, &ni);
    gs_term arg = {opt->arg ? opt->arg : nil, 1};
    gs_result res;
    reset_result(s, &res);
    gs_ret r = s->cb->init ? s->cb->init(s, &arg, &res) : GS_OK;
    if (r == GS_STOP || r == GS_IGNORE) {
        s->stopping = 1;
        release(s);
        char why[16];
        size_t n = cn_term_atom(why, r == GS_IGNORE ? "normal" : "shutdown");
        cn_proc_exit(s->proc, why, n);
        return r == GS_IGNORE ? CN_EIGNORED : CN_ESTOPPED;
    }
    apply(s, GS_OK, &res);
    return 0;
}

int gs_start(cn_node *node, const gs_callbacks *cb, void *user, const gs_options *opt, gs_server **out)
{
    gs_options none = {0};
    if (opt == NULL)
        opt = &none;
    gs_server *s = server_new(node, cb, user);
    if (opt->name && cn_proc_whereis(node, opt->name) != NULL) {
        /* release runs cleanup: the callbacks own user from the call on. */
        s->stopping = 1;
        release(s);
        return CN_EEXIST;
    }
    s->proc = cn_proc_spawn(node, &gs_ops, s);
    assert(s->proc != NULL); /* spawning only allocates, and allocation does not fail (cnode/mem.h) */
    if (opt->name) {
        snprintf(s->name, sizeof s->name, "%s", opt->name);
        cn_proc_register(s->proc, opt->name);
        s->met = gs__metrics_new(s, opt->name);
    }
    if (opt->parent) {
        cn_proc_pid(opt->parent, &s->parent);
        s->has_parent = 1;
        cn_proc_link(s->proc, &s->parent);
    }
    int rc = run_init(s, opt);
    if (rc == 0 && out)
        *out = s;
    return rc;
}
