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
 * get_state and replace_state answer in the shape the caller's own sys expects:
 * the plain state for stdlib before 5.1 (OTP 25), {ok, State} from 5.1 (OTP 26.1)
 * on (sys_shape.h). The first such request from a node incarnation asks that
 * node's rex for its stdlib version and waits for the answer, once; the server
 * remembers it in s->sys_callers.
 *
 * Every request is served only for the node it came from (gs__sys_foreign):
 * replies go to From, and the calls to rex (the stdlib question, the fun of a
 * replace_state) only to From's node.
 */
#include <stdlib.h>
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/term.h"
#include "cnode/utf8.h"
#include "genserver/genserver_int.h"

/* How long the server waits for the caller's node (a replace_state fun, a stdlib version). */
#define SYS_WAIT_TIMEOUT_MS 5000

/* What a server with s->sys_from set is waiting for. */
enum { WAIT_FUN = 1, WAIT_STDLIB };

static void encode_state(gs_server *s, ei_x_buff *x)
{
    if (s->cb->get_state == NULL || s->cb->get_state(s, x) < 0)
        ei_x_encode_atom(x, "undefined");
}


/*
 * "Status for generic server Name", as gen:format_status_header builds it with
 * lists:concat: a list of characters, so a name's code points, not its UTF-8
 * bytes; a name may be 255 characters of 4 bytes each.
 */
static void encode_header(ei_x_buff *x, const char *name)
{
    static const char tag[] = "Status for generic server ";
    const unsigned char *p = (const unsigned char *)name;
    size_t n = strlen(name), k = 0;
    unsigned cps[CN_ATOM_MAX_CHARS], count = 0, wide = 0;
    while (k < n && count < CN_ATOM_MAX_CHARS) {
        size_t l = cn_utf8_seq(p + k, n - k, &cps[count]);
        if (l == 0)
            break;  /* a registered name is valid UTF-8 (cn_proc_register) */
        wide |= cps[count++] > 255;
        k += l;
    }
    if (!wide) {
        /* Latin-1 only: the same list, in the compact encoding. */
        char text[sizeof tag + CN_ATOM_MAX_CHARS];
        memcpy(text, tag, sizeof tag - 1);
        for (unsigned j = 0; j < count; j++)
            text[sizeof tag - 1 + j] = (char)cps[j];
        text[sizeof tag - 1 + count] = '\0';
        ei_x_encode_string_len(x, text, (int)(sizeof tag - 1 + count));
        return;
    }
    ei_x_encode_list_header(x, (long)(sizeof tag - 1 + count));
    for (size_t j = 0; j < sizeof tag - 1; j++)
        ei_x_encode_long(x, (unsigned char)tag[j]);
    for (unsigned j = 0; j < count; j++)
        ei_x_encode_long(x, (long)cps[j]);
    ei_x_encode_empty_list(x);
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
    ei_x_encode_list_header(x, 3);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "header");
    encode_header(x, s->name);
    encode_status_data(s, x, parent);
    ei_x_encode_empty_list(x);
    ei_x_encode_empty_list(x);
}

/* ---- Asking the caller's node: its rex runs a call for us ---- */

/*
 * Sends {'$gen_call', {Self, Tag}, {call, Mod, Fun, Args, user}} to rex on node,
 * with a new Tag in s->sys_tag; args is the argument list, encoded (no version
 * byte). rex applies Mod:Fun(Args...) and answers {Tag, Result}, as it does for
 * rpc:call. Returns 0, or a negative error when the node is not reachable.
 */
static int rex_call(gs_server *s, const char *node, const char *mod, const char *fun,
                    const char *args, int args_len)
{
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
    ei_x_encode_atom(&m, mod);
    ei_x_encode_atom(&m, fun);
    ei_x_append_buf(&m, args, args_len);
    ei_x_encode_atom(&m, "user");
    int rc = cn_send_name(s->proc, "rex", node, m.buff, (size_t)m.index);
    ei_x_free(&m);
    return rc;
}

/* From now until the answer or the timeout the server handles nothing else. */
static void start_wait(gs_server *s, const gs_from *from, int kind)
{
    s->sys_from = gs_from_dup(from);
    s->sys_wait = kind;
    char msg[32];
    size_t n = cn_term_atom(msg, "$gs_sys_timeout");
    s->sys_timer = gs_send_after(s, SYS_WAIT_TIMEOUT_MS, msg, n);
}

/* Ends the wait; returns the caller it was for (the caller frees it). */
static gs_from *end_wait(gs_server *s)
{
    gs_from *from = s->sys_from;
    s->sys_from = NULL;
    s->sys_wait = 0;
    gs_cancel_timer(s, s->sys_timer);
    return from;
}

/* ---- Which sys the caller runs (sys_shape.h) ---- */

/*
 * The reply shape for a get_state or replace_state from `from`: known for its
 * node, or learned now. To learn it the server asks the node's rex for
 * application:get_key(stdlib, vsn) and holds the request (b[0..], a whole
 * message with version byte) until the answer: then *held is set and the
 * request is handled again. A caller on this node or on a node we cannot reach
 * gets the current protocol's shape.
 */
static gs_sys_shape caller_shape(gs_server *s, const gs_from *from, const char *b, int *held)
{
    *held = 0;
    gs_sys_shape shape = gs_sys_cache_get(&s->sys_callers, from->pid.node, from->pid.creation);
    if (shape != GS_SYS_SHAPE_UNKNOWN || strcmp(from->pid.node, cn_node_name(s->node)) == 0)
        return shape == GS_SYS_SHAPE_UNKNOWN ? GS_SYS_SHAPE_OK : shape;
    char args[64];
    int n = 0;
    ei_encode_list_header(args, &n, 2);
    ei_encode_atom(args, &n, "stdlib");
    ei_encode_atom(args, &n, "vsn");
    ei_encode_empty_list(args, &n);
    if (rex_call(s, from->pid.node, "application", "get_key", args, n) < 0)
        return GS_SYS_SHAPE_OK;
    int end = 1;
    cn_term_skip_trusted(b, &end);
    s->sys_held = cn_malloc((size_t)end);
    memcpy(s->sys_held, b, (size_t)end);
    start_wait(s, from, WAIT_STDLIB);
    *held = 1;
    return GS_SYS_SHAPE_UNKNOWN;
}

/* The version in rex's answer {ok, "5.1"} at b[result] into vsn; NULL for anything else. */
static const char *decode_vsn(const char *b, int result, char *vsn, int size)
{
    int i = result, arity, type, len;
    if (ei_decode_tuple_header(b, &i, &arity) < 0 || arity != 2 || !gs__atom_at(b, i, "ok"))
        return NULL;
    cn_term_skip_trusted(b, &i);
    if (ei_get_type(b, &i, &type, &len) < 0 || type != ERL_STRING_EXT || len >= size)
        return NULL;
    return ei_decode_string(b, &i, vsn) == 0 ? vsn : NULL;
}

/* rex answered the stdlib question (b non-NULL) or did not in time: note it, handle the held request. */
static void finish_stdlib_wait(gs_server *s, const char *b, int result)
{
    gs_from *from = end_wait(s);
    char vsn[32];
    const char *v = b ? decode_vsn(b, result, vsn, (int)sizeof vsn) : NULL;
    if (v == NULL)
        CN_WARN("genserver", "%s: %s told no stdlib version; answering its :sys as OTP 26.1 and later expect",
                s->name[0] ? s->name : "server", from->pid.node);
    else
        CN_DEBUG("genserver", "%s: %s runs stdlib %s", s->name[0] ? s->name : "server", from->pid.node, v);
    gs_sys_cache_put(&s->sys_callers, from->pid.node, from->pid.creation, gs_sys_shape_for_stdlib(v));
    gs_from_free(from);
    char *held = s->sys_held;
    s->sys_held = NULL;
    gs_from f;
    int req;
    if (gs__is_system(held, &f, &req))
        gs__handle_system(s, &f, held, req);
    free(held);
}

/* ---- replace_state ---- */

/*
 * :sys.replace_state(server, fun): C cannot run an Erlang fun, so the server
 * asks the fun's own node to: erlang:apply(Fun, [State]) through its rex. Until
 * the answer (or a timeout) arrives the server handles nothing else, as an OTP
 * server is busy inside its fun. Returns 0 when the request went out, or a
 * negative error (then the caller replies at once).
 */
static int start_replace_state(gs_server *s, const gs_from *from, const char *b, int fun)
{
    if (s->cb->put_state == NULL)
        return CN_ENOPROC;
    int fun_end = fun;
    if (cn_term_skip_trusted(b, &fun_end) < 0)
        return CN_EDECODE;
    ei_x_buff args;
    cn_x_new(&args);
    ei_x_encode_list_header(&args, 2);
    ei_x_append_buf(&args, b + fun, fun_end - fun);
    ei_x_encode_list_header(&args, 1);
    encode_state(s, &args);
    ei_x_encode_empty_list(&args);
    ei_x_encode_empty_list(&args);
    int rc = rex_call(s, from->pid.node, "erlang", "apply", args.buff, args.index);
    ei_x_free(&args);
    if (rc < 0)
        return rc;
    start_wait(s, from, WAIT_FUN);
    return 0;
}

/*
 * rex's answer for a fun that failed: {badrpc, {'EXIT', {Reason, Stack}}} for an
 * error, {badrpc, {'EXIT', Reason}} for an exit. Returns the class and sets
 * *reason to Reason's index, or returns NULL when the answer is a result.
 */
static const char *fun_failure(const char *b, int result, int *reason)
{
    int i = result, arity;
    if (ei_decode_tuple_header(b, &i, &arity) < 0 || arity != 2 || !gs__atom_at(b, i, "badrpc"))
        return NULL;
    cn_term_skip_trusted(b, &i);
    int exit_at = i;
    if (ei_decode_tuple_header(b, &i, &arity) < 0 || arity != 2 || !gs__atom_at(b, i, "EXIT")) {
        *reason = exit_at;
        return "error";
    }
    cn_term_skip_trusted(b, &i);
    *reason = i;
    int type, len;
    if (ei_decode_tuple_header(b, &i, &arity) == 0 && arity == 2) {
        int r = i;
        cn_term_skip_trusted(b, &i);
        if (ei_get_type(b, &i, &type, &len) == 0 && (type == ERL_LIST_EXT || type == ERL_NIL_EXT)) {
            *reason = r;
            return "error";
        }
    }
    return "exit";
}

/*
 * OTP's failed replace_state, for every sys version:
 * {error, {callback_failed, {gen_server, system_replace_state}, {Class, Reason}}},
 * Reason the term at b[reason] when b is set, else the atom `atom`.
 */
static void encode_replace_failed(ei_x_buff *x, const char *cls, const char *b, int reason, const char *atom)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "error");
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_atom(x, "callback_failed");
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "gen_server");
    ei_x_encode_atom(x, "system_replace_state");
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, cls);
    if (b != NULL) {
        int end = reason;
        cn_term_skip_trusted(b, &end);
        ei_x_append_buf(x, b + reason, end - reason);
    } else {
        ei_x_encode_atom(x, atom);
    }
}

/* Finishes a pending replace_state with rex's answer at b[result], or (b NULL) after the timeout. */
static void finish_replace_state(gs_server *s, const char *b, int result)
{
    gs_from *from = end_wait(s);
    gs__begin_reply(s, from);
    ei_x_buff *x = &s->out;
    int reason;
    const char *cls = b ? fun_failure(b, result, &reason) : NULL;
    if (b == NULL) {
        /* The fun's node did not answer: as an exit of the fun. */
        encode_replace_failed(x, "exit", NULL, 0, "timeout");
    } else if (cls != NULL) {
        encode_replace_failed(x, cls, b, reason, NULL);
    } else {
        gs_term t = {b, result};
        if (s->cb->put_state(s, &t) < 0) {
            encode_replace_failed(x, "error", NULL, 0, "state_refused");
        } else {
            gs_sys_shape_begin(x, s->sys_shape);
            encode_state(s, x);
        }
    }
    gs__send_reply(s, from, x->buff, (size_t)x->index);
    gs_from_free(from);
    gs__drain(s);
}

/*
 * While a request waits: is this rex's answer {Tag, Result}? Sets *result.
 * Only the node asked may answer: our references are easy to guess, and from
 * anywhere else the answer would be a state injection.
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
    int result = 0;
    int answered = is_sys_answer(s, b, &result);
    /* The timeout is the server's own timer's: from any other process it is just a message. */
    int timeout = gs__atom_at(b, 1, "$gs_sys_timeout") &&
                  strcmp(cn_proc_msg_origin(s->proc), cn_node_name(s->node)) == 0;
    if (!answered && !timeout)
        return 0;
    if (s->sys_wait == WAIT_FUN)
        finish_replace_state(s, answered ? b : NULL, result);
    else
        finish_stdlib_wait(s, answered ? b : NULL, result);
    return 1;
}

void gs__sys_release(gs_server *s)
{
    gs_from_free(s->sys_from);
    s->sys_from = NULL;
    free(s->sys_held);
    s->sys_held = NULL;
    gs_sys_cache_clear(&s->sys_callers);
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
static int sys_atom_request(gs_server *s, const char *b, int req, ei_x_buff *x, gs_sys_shape shape)
{
    if (gs__atom_at(b, req, "get_state")) {
        gs_sys_shape_begin(x, shape);
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
    int arity = 0, i = req, held = 0;
    int replace = ei_decode_tuple_header(b, &i, &arity) == 0 && arity == 2 && gs__atom_at(b, i, "replace_state");
    gs_sys_shape shape = GS_SYS_SHAPE_OK;
    if (replace || gs__atom_at(b, req, "get_state")) {
        shape = caller_shape(s, from, b, &held);
        if (held)
            return; /* handled again once the caller's node told its stdlib version */
    }
    gs__begin_reply(s, from);
    ei_x_buff *x = &s->out;
    if (sys_atom_request(s, b, req, x, shape)) {
        /* Replied below. */
    } else if (arity == 2 && gs__atom_at(b, i, "terminate")) {
        cn_term_skip_trusted(b, &i);
        sys_terminate(s, from, b, i);
        return;
    } else if (replace) {
        cn_term_skip_trusted(b, &i);
        s->sys_shape = shape;
        if (start_replace_state(s, from, b, i) == 0)
            return; /* answered when the fun's result arrives */
        if (s->cb->put_state == NULL)
            encode_replace_failed(x, "error", NULL, 0, "state_not_replaceable");
        else
            encode_replace_failed(x, "exit", NULL, 0, "noconnection");
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
    gs__drain(s);
}

int gs__sys_foreign(gs_server *s, const char *b, const char *origin)
{
    gs_from from;
    int req;
    if (!gs__is_system(b, &from, &req) || strcmp(from.pid.node, origin) == 0)
        return 0;
    /* An attacker may send many: the first is worth a warning, the rest only debug lines. */
    cn_log_level level = s->sys_refused++ == 0 ? CN_LOG_WARNING : CN_LOG_DEBUG;
    char by[CN_LOG_ESC_MAX], named[CN_LOG_ESC_MAX];
    cn_log(level, "genserver", "%s: system message from %s for a process on %s dropped",
           s->name[0] ? s->name : "server", cn_log_escape_str(by, sizeof by, origin),
           cn_log_escape_str(named, sizeof named, from.pid.node));
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
