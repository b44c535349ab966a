/*
 * The system messages of a gen_server: what the sys module sends as
 * {system, From, Request} and expects back, as OTP's gen_server answers it.
 *
 *   get_state, get_status      the state (callbacks' get_state) and
 *                              gen_server:format_status/2's layout
 *   suspend, resume            a suspended server holds back every message but
 *                              system ones, and handles them in order on resume
 *   {terminate, Reason}        replies ok, then stops with Reason (terminate runs)
 *   {replace_state, Fun}       the fun runs on the caller's node (see below)
 *
 * Anything else gets {error, {unknown_system_msg, Request}}.
 *
 * Every request is served only for the node it came from (gs__sys_foreign):
 * replies go to From, and the fun of a replace_state only to From's node.
 */
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/term.h"
#include "genserver/genserver_int.h"

/* How long a replace_state waits for the fun's node before giving up. */
#define REPLACE_STATE_TIMEOUT_MS 5000

static void encode_state(gs_server *s, ei_x_buff *x)
{
    if (s->cb->get_state == NULL || s->cb->get_state(s, x) < 0)
        ei_x_encode_atom(x, "undefined");
}

/* {error, {Kind, Detail}} with an atom detail. */
static void encode_error(ei_x_buff *x, const char *kind, const char *detail)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "error");
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, kind);
    ei_x_encode_atom(x, detail);
}

/* {"Name", Value-atom-or-pid} entries of format_status's data lists. */
static void encode_status_data(gs_server *s, ei_x_buff *x, const erlang_pid *parent)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "data");
    ei_x_encode_list_header(x, 3);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_string(x, "Status");
    ei_x_encode_atom(x, s->suspended ? "suspended" : "running");
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_string(x, "Parent");
    ei_x_encode_pid(x, parent);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_string(x, "Logged events");
    ei_x_encode_empty_list(x);
    ei_x_encode_empty_list(x);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "data");
    ei_x_encode_list_header(x, 1);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_string(x, "State");
    encode_state(s, x);
    ei_x_encode_empty_list(x);
}

static void sys_status(gs_server *s, ei_x_buff *x)
{
    erlang_pid self;
    gs_self(s, &self);
    const erlang_pid *parent = s->has_parent ? &s->parent : &self;
    /* {status, Pid, {module, gen_server}, [PDict, SysState, Parent, Debug, Misc]} */
    ei_x_encode_tuple_header(x, 4);
    ei_x_encode_atom(x, "status");
    ei_x_encode_pid(x, &self);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "module");
    ei_x_encode_atom(x, "gen_server");
    ei_x_encode_list_header(x, 5);
    ei_x_encode_empty_list(x);
    ei_x_encode_atom(x, s->suspended ? "suspended" : "running");
    ei_x_encode_pid(x, parent);
    ei_x_encode_empty_list(x);
    /* Misc, as gen_server:format_status/2 lays it out. */
    char header[320];
    snprintf(header, sizeof header, "Status for generic server %s", s->name[0] ? s->name : "");
    ei_x_encode_list_header(x, 3);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "header");
    ei_x_encode_string(x, header);
    encode_status_data(s, x, parent);
    ei_x_encode_empty_list(x);
    ei_x_encode_empty_list(x);
}

/*
 * :sys.replace_state(server, fun): C cannot run an Erlang fun, so the server
 * asks the fun's own node to: a call to its rex server, {call, erlang, apply,
 * [Fun, [State]], user}. Until the answer (or a timeout) arrives the server
 * handles nothing else, as an OTP server is busy inside its fun. Returns 0 when
 * the request went out, or a negative error (then the caller replies at once).
 */
static int start_replace_state(gs_server *s, const gs_from *from, const char *b, int fun)
{
    if (s->cb->put_state == NULL)
        return CN_ENOPROC;
    int fun_end = fun;
    if (cn_term_skip_trusted(b, &fun_end) < 0)
        return CN_EDECODE;
    erlang_pid self;
    gs_self(s, &self);
    cn_node_make_ref(s->node, &s->sys_tag);
    ei_x_buff m;
    cn_x_new_with_version(&m);
    ei_x_encode_tuple_header(&m, 3);
    ei_x_encode_atom(&m, "$gen_call");
    ei_x_encode_tuple_header(&m, 2);
    ei_x_encode_pid(&m, &self);
    ei_x_encode_ref(&m, &s->sys_tag);
    ei_x_encode_tuple_header(&m, 5);
    ei_x_encode_atom(&m, "call");
    ei_x_encode_atom(&m, "erlang");
    ei_x_encode_atom(&m, "apply");
    ei_x_encode_list_header(&m, 2);
    ei_x_append_buf(&m, b + fun, fun_end - fun);
    ei_x_encode_list_header(&m, 1);
    encode_state(s, &m);
    ei_x_encode_empty_list(&m);
    ei_x_encode_empty_list(&m);
    ei_x_encode_atom(&m, "user");
    int rc = cn_send_name(s->proc, "rex", from->pid.node, m.buff, (size_t)m.index);
    ei_x_free(&m);
    if (rc < 0)
        return rc;
    s->sys_from = gs_from_dup(from);
    char msg[32];
    size_t n = cn_term_atom(msg, "$gs_replace_state_timeout");
    s->sys_timer = gs_send_after(s, REPLACE_STATE_TIMEOUT_MS, msg, n);
    return 0;
}

/* Finishes a pending replace_state with rex's answer at b[result], or with an error reason atom. */
static void finish_replace_state(gs_server *s, const char *b, int result, const char *error)
{
    gs_from *from = s->sys_from;
    s->sys_from = NULL;
    gs_cancel_timer(s, s->sys_timer);
    gs__begin_reply(s, from);
    ei_x_buff *x = &s->out;
    if (error == NULL) {
        int i = result, arity;
        /* {badrpc, Reason}: the fun failed on its node. */
        if (ei_decode_tuple_header(b, &i, &arity) == 0 && arity == 2 && gs__atom_at(b, i, "badrpc")) {
            error = "fun_failed";
        } else {
            gs_term t = {b, result};
            if (s->cb->put_state(s, &t) < 0)
                error = "state_refused";
        }
    }
    if (error == NULL)
        encode_state(s, x);
    else
        encode_error(x, "callback_failed", error);
    gs__send_reply(s, from, x->buff, (size_t)x->index);
    gs_from_free(from);
    gs__drain(s);
}

/*
 * While replace_state waits: is this rex's answer {Tag, Result}? Sets *result.
 * Only the node asked to run the fun may answer: our references are easy to
 * guess, and from anywhere else the answer would be a state injection.
 */
static int is_sys_answer(gs_server *s, const char *b, int *result)
{
    int i = 1, arity;
    erlang_ref tag;
    if (ei_decode_tuple_header(b, &i, &arity) < 0 || arity != 2 || ei_decode_ref(b, &i, &tag) < 0)
        return 0;
    if (tag.len != s->sys_tag.len || memcmp(tag.n, s->sys_tag.n, sizeof tag.n[0] * (size_t)tag.len) != 0 ||
        tag.creation != s->sys_tag.creation || strcmp(tag.node, s->sys_tag.node) != 0)
        return 0;
    if (strcmp(cn_proc_msg_origin(s->proc), s->sys_from->pid.node) != 0)
        return 0;
    *result = i;
    return 1;
}

int gs__sys_take(gs_server *s, const char *b)
{
    int result;
    if (is_sys_answer(s, b, &result)) {
        finish_replace_state(s, b, result, NULL);
        return 1;
    }
    if (gs__atom_at(b, 1, "$gs_replace_state_timeout")) {
        finish_replace_state(s, b, 0, "timeout");
        return 1;
    }
    return 0;
}

/* {terminate, Reason}: replies ok, then stops with Reason (b[reason]) as terminate's reason. */
static void sys_terminate(gs_server *s, const gs_from *from, const char *b, int reason)
{
    ei_x_encode_atom(&s->out, "ok");
    gs__send_reply(s, from, s->out.buff, (size_t)s->out.index);
    int end = reason;
    cn_term_skip_trusted(b, &end);
    ei_x_buff v;
    cn_x_new_with_version(&v);
    ei_x_append_buf(&v, b + reason, end - reason);
    gs__stop_with(s, v.buff, (size_t)v.index);
    ei_x_free(&v);
}

/* Is the request one of the atoms we answer? Then its reply is encoded into x. */
static int sys_atom_request(gs_server *s, const char *b, int req, ei_x_buff *x)
{
    if (gs__atom_at(b, req, "get_state")) {
        encode_state(s, x);
    } else if (gs__atom_at(b, req, "get_status")) {
        sys_status(s, x);
    } else if (gs__atom_at(b, req, "suspend")) {
        s->suspended = 1;
        ei_x_encode_atom(x, "ok");
    } else if (gs__atom_at(b, req, "resume")) {
        s->suspended = 0;
        ei_x_encode_atom(x, "ok");
    } else {
        return 0;
    }
    return 1;
}

void gs__handle_system(gs_server *s, const gs_from *from, const char *b, int req)
{
    gs__begin_reply(s, from);
    ei_x_buff *x = &s->out;
    int arity = 0, i = req;
    if (sys_atom_request(s, b, req, x)) {
        /* Replied below. */
    } else if (ei_decode_tuple_header(b, &i, &arity) == 0 && arity == 2 && gs__atom_at(b, i, "terminate")) {
        cn_term_skip_trusted(b, &i);
        sys_terminate(s, from, b, i);
        return;
    } else if (arity == 2 && gs__atom_at(b, i, "replace_state")) {
        cn_term_skip_trusted(b, &i);
        if (start_replace_state(s, from, b, i) == 0)
            return; /* answered when the fun's result arrives */
        encode_error(x, "callback_failed", s->cb->put_state ? "fun_node_unreachable" : "state_not_replaceable");
    } else {
        int e = req;
        cn_term_skip_trusted(b, &e);
        ei_x_encode_tuple_header(x, 2);
        ei_x_encode_atom(x, "error");
        ei_x_encode_tuple_header(x, 2);
        ei_x_encode_atom(x, "unknown_system_msg");
        ei_x_append_buf(x, b + req, e - req);
    }
    gs__send_reply(s, from, x->buff, (size_t)x->index);
    if (!s->suspended)
        gs__drain(s);
}

/* A node name for a log line: bytes outside printable ASCII, and '\\', as \\xNN. */
static void escape_name(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p != '\0' && o + 5 < size; p++) {
        if (*p >= 0x20 && *p < 0x7f && *p != '\\')
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", *p);
    }
    out[o] = '\0';
}

int gs__sys_foreign(gs_server *s, const char *b, const char *origin)
{
    gs_from from;
    int req;
    if (!gs__is_system(b, &from, &req) || strcmp(from.pid.node, origin) == 0)
        return 0;
    /* An attacker may send many: the first is worth a warning, the rest only debug lines. */
    cn_log_level level = s->sys_refused++ == 0 ? CN_LOG_WARNING : CN_LOG_DEBUG;
    if (level >= cn_log_threshold) {
        char by[4 * 256 + 1], named[4 * 256 + 1];
        escape_name(origin, by, sizeof by);
        escape_name(from.pid.node, named, sizeof named);
        cn_log_write(level, "genserver", "%s: system message from %s for a process on %s dropped",
                     s->name[0] ? s->name : "server", by, named);
    }
    return 1;
}

int gs__is_system(const char *b, gs_from *from, int *req)
{
    int i = 1, arity;
    if (ei_decode_tuple_header(b, &i, &arity) < 0 || arity != 3 || !gs__atom_at(b, i, "system"))
        return 0;
    cn_term_skip_trusted(b, &i);
    if (gs__decode_from(b, &i, from) < 0)
        return 0;
    *req = i;
    return 1;
}
