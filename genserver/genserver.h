/*
 * The gen_server behaviour, in C.
 *
 * A server is a process on this node with a struct of callbacks, as an Elixir
 * module with `use GenServer`. Callers on any node use GenServer.call/cast,
 * :sys and monitors exactly as they would with an Elixir server: the behaviour
 * speaks the $gen_call / $gen_cast / system protocols, echoes the call tag byte
 * for byte and replies to the caller's alias when the caller's node supports it,
 * so a reply that arrives after the caller gave up is dropped, as in OTP.
 *
 * Terms: callbacks receive requests as gs_term, a view into a buffer in
 * external format (decode with ei: `int i = t->index; ei_decode_long(t->buf, &i, &v)`).
 * The view is borrowed for the duration of the callback; copy what you keep.
 * Every term that reaches a callback from the network has already been walked
 * with bounds checks (cnode/term.h), so ei's unchecked decoders are safe on it.
 * Replies, stop reasons and continue terms are encoded with ei_x_encode_* into
 * the buffers of gs_result, without a version byte.
 *
 *     static gs_ret handle_call(gs_server *s, const gs_term *req, const gs_from *from, gs_result *res)
 *     {
 *         long *n = gs_data(s);
 *         if (gs_term_is_atom(req, "get")) {
 *             ei_x_encode_long(res->reply, *n);
 *             return GS_REPLY;
 *         }
 *         return GS_UNKNOWN;       // replies {:error, {:unknown_call, req}} and logs it
 *     }
 */
#ifndef GS_GENSERVER_H
#define GS_GENSERVER_H

#include <stdint.h>
#include <ei.h>

#include "cnode/node.h"
#include "cnode/proc.h"

typedef struct gs_server gs_server;

typedef struct gs_term {
    const char *buf;
    int index;      /* where the term starts (no version byte before it) */
} gs_term;

/* Who called: the caller's pid and its tag. Borrowed in handle_call; see gs_from_dup. */
typedef struct gs_from {
    erlang_pid pid;
    erlang_ref alias;
    int has_alias;      /* the tag is [alias | Ref] (OTP 24+): reply to the alias */
    const char *tag;    /* the tag's bytes, echoed in the reply */
    int tag_len;
} gs_from;

typedef enum gs_ret {
    GS_OK = 0,          /* init: {ok, State} */
    GS_NOREPLY = 0,     /* {noreply, State}: a call is answered later with gs_reply */
    GS_REPLY,           /* {reply, Reply, State}: Reply is in res->reply */
    GS_STOP,            /* {stop, Reason, State}; with a reply encoded too, {stop, Reason, Reply, State} */
    GS_IGNORE,          /* init: ignore */
    GS_UNKNOWN          /* a request this server does not handle: logged; calls get {error, {unknown_call, Req}} */
} gs_ret;

typedef struct gs_result {
    ei_x_buff *reply;   /* encode the reply here */
    ei_x_buff *reason;  /* encode the stop reason here; left empty it is 'normal' */
    ei_x_buff *cont;    /* encode a term here and handle_continue runs with it next */
    long timeout_ms;    /* >= 0: 'timeout' arrives by handle_info after that long without messages */
} gs_result;

typedef struct gs_callbacks {
    const char *module;     /* shown by :sys.get_status, e.g. "Elixir.Counter" */
    gs_ret (*init)(gs_server *s, const gs_term *arg, gs_result *res);
    gs_ret (*handle_call)(gs_server *s, const gs_term *req, const gs_from *from, gs_result *res);
    gs_ret (*handle_cast)(gs_server *s, const gs_term *req, gs_result *res);
    gs_ret (*handle_info)(gs_server *s, const gs_term *msg, gs_result *res);
    gs_ret (*handle_continue)(gs_server *s, const gs_term *cont, gs_result *res);
    /*
     * Runs when the server stops for any reason it can survive to see: a stop
     * result, :sys.terminate and GenServer.stop, an exit signal (including the
     * supervisor's shutdown), node shutdown. Not for :kill. Save state here.
     */
    void (*terminate)(gs_server *s, const gs_term *reason);
    /*
     * Runs last, once, whatever ended the server (also :kill, after which
     * terminate does not run): free what gs_data points to. May be NULL.
     */
    void (*cleanup)(gs_server *s);
    /* :sys.get_state: encode the state. NULL: the state shows as 'undefined'. */
    int (*get_state)(gs_server *s, ei_x_buff *out);
    /* :sys.replace_state: take state as the new state, or return < 0 to refuse it. */
    int (*put_state)(gs_server *s, const gs_term *state);
} gs_callbacks;

typedef struct gs_options {
    const char *name;           /* register under this name; NULL for none */
    const char *arg;            /* init's argument as a term with version byte; NULL means [] */
    size_t arg_len;
    cn_proc *parent;            /* linked to the server, and its exit signals end it (supervisors) */
} gs_options;

/*
 * Starts a server and runs init before returning, as gen_server:start_link.
 * cb is borrowed and must outlive the server; user is the server's data pointer
 * (gs_data), owned by the callbacks from here on: on any failure cleanup has
 * already run, so the caller never frees it. Returns 0 and the server in *out;
 * CN_EEXIST when the name is taken, CN_ESTOPPED when init stopped, CN_EIGNORED
 * when init returned ignore.
 */
int gs_start(cn_node *node, const gs_callbacks *cb, void *user, const gs_options *opt, gs_server **out);

void *gs_data(const gs_server *s);
void gs_set_data(gs_server *s, void *user);
cn_proc *gs_proc(const gs_server *s);
cn_node *gs_node(const gs_server *s);
void gs_self(const gs_server *s, erlang_pid *out);

/* Is the term an atom with this name? (Any atom encoding.) */
int gs_term_is_atom(const gs_term *t, const char *atom);

/* A copy of from that outlives the callback, for replying later. Free with gs_from_free. */
gs_from *gs_from_dup(const gs_from *from);
void gs_from_free(gs_from *from);
/* Replies to a call answered with GS_NOREPLY. reply: a term without version byte. */
int gs_reply(gs_server *s, const gs_from *from, const char *reply, size_t len);

/*
 * Sends msg (a term with version byte, copied) to this server after ms
 * milliseconds, as erlang:send_after; it arrives by handle_info. Returns a timer
 * id > 0 for gs_cancel_timer.
 */
int64_t gs_send_after(gs_server *s, uint64_t ms, const char *msg, size_t len);
/* Cancels a timer. 0 if it was pending, CN_ENOPROC if it already fired or never was. */
int gs_cancel_timer(gs_server *s, int64_t id);

/*
 * Journals the server's state changes (genserver/journal.h): from now on a
 * reply waits while j has records not yet written, and the journal is
 * committed once at the end of each loop turn, before the turn's replies
 * leave (or are refused with {error, not_durable} when the commit fails).
 * j is borrowed: the server's callbacks own it, and set NULL (or stop the
 * server) before freeing it. NULL detaches.
 */
typedef struct gs_journal gs_journal;
void gs_set_journal(gs_server *s, gs_journal *j);

/*
 * Stops the server from outside a callback (a supervisor's shutdown, node
 * shutdown): terminate runs with reason, then the process exits with it.
 * reason: an atom name. Inside a callback, return GS_STOP instead.
 */
void gs_stop(gs_server *s, const char *reason_atom);

#endif
