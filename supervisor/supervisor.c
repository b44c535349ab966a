/*
 * The supervisor (supervisor/supervisor.h) as a gen_server that traps exits:
 * children in start order, the restart plan of supervisor/sup_policy.h, the
 * intensity check, ordered shutdown, which_children and count_children, and an
 * on_exit that fires once from the behaviour's cleanup, the one callback that
 * runs whatever ended the process.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/metrics.h"
#include "cnode/term.h"
#include "genserver/genserver.h"
#include "supervisor/supervisor.h"

typedef struct child {
    sup_child_spec spec;
    char id[128];
    erlang_pid pid;
    int running;
} child;

struct sup_t {
    gs_server *gs;
    cn_node *node;
    char name[256];
    sup_flags flags;
    sup_intensity intensity;
    child *children;            /* in start order */
    size_t n, cap;
    int stopping;
    erlang_pid parent;
    int has_parent;
    void (*on_exit)(sup_t *, const char *, void *);
    void *data;
    /* on_exit's reason: set by terminate, which a kill skips. */
    char exit_reason[MAXATOMLEN_UTF8];
};

static const char *label(const sup_t *s)
{
    return s->name[0] ? s->name : "supervisor";
}

static int add_child(sup_t *s, const sup_child_spec *spec)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->children[i].id, spec->id) == 0)
            return CN_EEXIST;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        s->children = cn_realloc(s->children, cap * sizeof s->children[0]);
        s->cap = cap;
    }
    child *c = &s->children[s->n++];
    memset(c, 0, sizeof *c);
    c->spec = *spec;
    snprintf(c->id, sizeof c->id, "%s", spec->id);
    c->spec.id = c->id;
    return 0;
}

static int start_one(sup_t *s, child *c)
{
    cn_proc *p = NULL;
    int rc = c->spec.start(s->node, gs_proc(s->gs), c->spec.arg, &p);
    if (rc < 0 || p == NULL) {
        CN_ERROR("supervisor", "%s: child %s failed to start: %s", label(s), c->id, cn_strerror(rc));
        return rc < 0 ? rc : CN_ENOPROC;
    }
    cn_proc_pid(p, &c->pid);
    c->running = 1;
    return 0;
}

/* Stops one child now: unlink, then shutdown (or kill), as supervisor:shutdown/2. */
static void stop_one(sup_t *s, child *c)
{
    if (!c->running)
        return;
    c->running = 0;
    cn_proc *me = gs_proc(s->gs);
    cn_proc *p = cn_proc_by_pid(s->node, &c->pid);
    if (p == NULL)
        return;
    cn_proc_unlink(me, &c->pid);
    char reason[16];
    size_t n = cn_term_atom(reason, c->spec.shutdown_ms == SUP_BRUTAL_KILL ? "kill" : "shutdown");
    cn_proc_exit_now(me, p, reason, n);
}

static void stop_all(sup_t *s)
{
    for (size_t i = s->n; i-- > 0;)
        stop_one(s, &s->children[i]);
}

static sup_exit_kind exit_kind(const gs_term *reason)
{
    if (gs_term_is_atom(reason, "normal"))
        return SUP_EXIT_NORMAL;
    if (gs_term_is_atom(reason, "shutdown"))
        return SUP_EXIT_SHUTDOWN;
    int i = reason->index, arity;
    if (ei_decode_tuple_header(reason->buf, &i, &arity) == 0 && arity == 2) {
        gs_term first = {reason->buf, i};
        if (gs_term_is_atom(&first, "shutdown"))
            return SUP_EXIT_SHUTDOWN;
    }
    return SUP_EXIT_ABNORMAL;
}

static void remove_child(sup_t *s, size_t i)
{
    memmove(&s->children[i], &s->children[i + 1], (s->n - i - 1) * sizeof s->children[0]);
    s->n--;
    for (size_t k = i; k < s->n; k++)
        s->children[k].spec.id = s->children[k].id;
}

/* Intensity exceeded: stop everything and exit, as an OTP supervisor does. */
static gs_ret give_up(sup_t *s, gs_result *res)
{
    CN_ERROR("supervisor", "%s: reached maximum restart intensity (%d restarts in %d s); shutting down",
             label(s), s->flags.intensity, s->flags.period_s);
    s->stopping = 1;
    stop_all(s);
    ei_x_encode_atom(res->reason, "shutdown");
    return GS_STOP;
}

/* Restarts per child in the metrics; a restart is rare, so the series is looked up each time. */
static void count_restart(const sup_t *s, const char *id)
{
    cn_labels l = {{"supervisor", s->name, "child", id}};
    cn_counter_inc(cn_metrics_counter(cn_metrics_default(), "cnode_restarts_total", "Child restarts, by child.", &l));
}

static gs_ret child_exited(sup_t *s, size_t dead, const gs_term *reason, gs_result *res)
{
    child *c = &s->children[dead];
    c->running = 0;
    sup_exit_kind kind = exit_kind(reason);
    if (kind == SUP_EXIT_ABNORMAL) {
        char *text = cn_term_sprint(reason->buf, reason->index);
        CN_WARN("supervisor", "%s: child %s exited: %s", label(s), c->id, text ? text : "?");
        free(text);
    }
    if (!sup_should_restart(c->spec.restart, kind)) {
        if (c->spec.restart == SUP_TEMPORARY)
            remove_child(s, dead);
        return GS_NOREPLY;
    }
    for (;;) {
        if (sup_intensity_add(&s->intensity, (int64_t)cn_node_now(s->node)))
            return give_up(s, res);
        count_restart(s, s->children[dead].id);
        size_t n = s->n;
        size_t *stop = cn_calloc(n + 1, sizeof *stop), *start = cn_calloc(n + 1, sizeof *start);
        size_t nstop = 0, nstart = 0;
        sup_restart_type *types = cn_calloc(n + 1, sizeof *types);
        for (size_t i = 0; i < n; i++)
            types[i] = s->children[i].spec.restart;
        if (sup_plan_restart(s->flags.strategy, types, n, dead, stop, &nstop, start, &nstart) < 0) {
            free(stop), free(start), free(types);
            CN_ERROR("supervisor", "%s: no restart plan for child %s", label(s), s->children[dead].id);
            return give_up(s, res);
        }
        for (size_t i = 0; i < nstop; i++)
            stop_one(s, &s->children[stop[i]]);
        char failed[sizeof s->children[0].id] = "";
        for (size_t i = 0; i < nstart && failed[0] == '\0'; i++) {
            if (start_one(s, &s->children[start[i]]) < 0)
                snprintf(failed, sizeof failed, "%s", s->children[start[i]].id);
        }
        /* Temporary children stopped with the group are forgotten, highest index first. */
        for (size_t i = n; i-- > 0;) {
            if (!s->children[i].running && s->children[i].spec.restart == SUP_TEMPORARY)
                remove_child(s, i);
        }
        free(stop), free(start), free(types);
        if (failed[0] == '\0')
            return GS_NOREPLY;
        /* A failed restart counts as another restart, and is tried again (by id: indices moved). */
        size_t k = 0;
        while (k < s->n && strcmp(s->children[k].id, failed) != 0)
            k++;
        if (k == s->n)
            return GS_NOREPLY;
        dead = k;
    }
}

static gs_ret sup_info(gs_server *gs, const gs_term *msg, gs_result *res)
{
    sup_t *s = gs_data(gs);
    int i = msg->index, arity;
    if (ei_decode_tuple_header(msg->buf, &i, &arity) < 0 || arity != 3)
        return GS_UNKNOWN;
    gs_term tag = {msg->buf, i};
    if (!gs_term_is_atom(&tag, "EXIT"))
        return GS_UNKNOWN;
    cn_term_skip_trusted(msg->buf, &i);
    erlang_pid from;
    if (ei_decode_pid(msg->buf, &i, &from) < 0)
        return GS_UNKNOWN;
    gs_term reason = {msg->buf, i};
    if (s->stopping)
        return GS_NOREPLY;
    for (size_t k = 0; k < s->n; k++) {
        child *c = &s->children[k];
        if (c->running && ei_cmp_pids(&c->pid, &from) == 0)
            return child_exited(s, k, &reason, res);
    }
    if (s->has_parent && ei_cmp_pids(&s->parent, &from) == 0) {
        /* The parent's exit: stop the children (terminate does), then go with the same reason. */
        int e = reason.index;
        cn_term_skip_trusted(reason.buf, &e);
        ei_x_append_buf(res->reason, reason.buf + reason.index, e - reason.index);
        return GS_STOP;
    }
    CN_DEBUG("supervisor", "%s: exit signal from a non-child ignored", label(s));
    return GS_NOREPLY;
}

static void encode_children(sup_t *s, ei_x_buff *x)
{
    /* [{Id, Pid | undefined, worker | supervisor, [Module]}] */
    if (s->n)
        ei_x_encode_list_header(x, (long)s->n);
    for (size_t i = 0; i < s->n; i++) {
        child *c = &s->children[i];
        ei_x_encode_tuple_header(x, 4);
        ei_x_encode_atom(x, c->id);
        if (c->running)
            ei_x_encode_pid(x, &c->pid);
        else
            ei_x_encode_atom(x, "undefined");
        ei_x_encode_atom(x, c->spec.type == SUP_SUPERVISOR ? "supervisor" : "worker");
        ei_x_encode_list_header(x, 1);
        ei_x_encode_atom(x, c->spec.module ? c->spec.module : c->id);
        ei_x_encode_empty_list(x);
    }
    ei_x_encode_empty_list(x);
}

static gs_ret sup_call(gs_server *gs, const gs_term *req, const gs_from *from, gs_result *res)
{
    (void)from;
    sup_t *s = gs_data(gs);
    if (gs_term_is_atom(req, "which_children")) {
        encode_children(s, res->reply);
        return GS_REPLY;
    }
    if (gs_term_is_atom(req, "count_children")) {
        long specs = (long)s->n, active = 0, sups = 0, workers = 0;
        for (size_t i = 0; i < s->n; i++) {
            active += s->children[i].running;
            if (s->children[i].spec.type == SUP_SUPERVISOR)
                sups++;
            else
                workers++;
        }
        ei_x_encode_list_header(res->reply, 4);
        const char *keys[4] = {"specs", "active", "supervisors", "workers"};
        long vals[4] = {specs, active, sups, workers};
        for (int k = 0; k < 4; k++) {
            ei_x_encode_tuple_header(res->reply, 2);
            ei_x_encode_atom(res->reply, keys[k]);
            ei_x_encode_long(res->reply, vals[k]);
        }
        ei_x_encode_empty_list(res->reply);
        return GS_REPLY;
    }
    return GS_UNKNOWN;
}

static void sup_terminate(gs_server *gs, const gs_term *reason)
{
    sup_t *s = gs_data(gs);
    /* Stopping from outside (parent exit, node shutdown): children go first, in reverse order. */
    s->stopping = 1;
    stop_all(s);
    int i = reason->index;
    if (ei_decode_atom(reason->buf, &i, s->exit_reason) < 0)
        snprintf(s->exit_reason, sizeof s->exit_reason, "shutdown");
}

/*
 * Runs last, once, whatever ended the supervisor, also a kill that skipped
 * terminate: so on_exit is called here, and its owner never keeps a pointer to
 * a freed supervisor.
 */
static void sup_cleanup(gs_server *gs)
{
    sup_t *s = gs_data(gs);
    if (s->on_exit)
        s->on_exit(s, s->exit_reason, s->data);
    free(s->children);
    free(s);
}

static int sup_get_state(gs_server *gs, ei_x_buff *out)
{
    sup_t *s = gs_data(gs);
    ei_x_encode_tuple_header(out, 2);
    ei_x_encode_atom(out, "state");
    encode_children(s, out);
    return 0;
}

static const gs_callbacks sup_callbacks = {
    .module = "supervisor",
    .handle_call = sup_call,
    .handle_info = sup_info,
    .terminate = sup_terminate,
    .cleanup = sup_cleanup,
    .get_state = sup_get_state,
};

int sup_start(cn_node *node, const char *name, const sup_flags *flags, const sup_child_spec *specs, size_t n,
              cn_proc *parent, void (*on_exit)(sup_t *, const char *, void *), void *data, sup_t **out)
{
    sup_t *s = cn_calloc(1, sizeof *s);
    s->node = node;
    snprintf(s->exit_reason, sizeof s->exit_reason, "killed");
    s->flags = *flags;
    if (s->flags.intensity < 0)
        s->flags.intensity = SUP_ELIXIR_DEFAULT_INTENSITY;
    if (s->flags.period_s <= 0)
        s->flags.period_s = SUP_DEFAULT_PERIOD_S;
    if (sup_intensity_init(&s->intensity, s->flags.intensity, s->flags.period_s) < 0) {
        free(s);
        return -EINVAL;
    }
    if (name)
        snprintf(s->name, sizeof s->name, "%s", name);
    for (size_t i = 0; i < n; i++) {
        int rc = add_child(s, &specs[i]);
        if (rc < 0) {
            free(s->children);
            free(s);
            return rc;
        }
    }
    if (parent) {
        cn_proc_pid(parent, &s->parent);
        s->has_parent = 1;
    }
    gs_options opt = {.name = name, .parent = parent};
    /* From here on the behaviour owns s: on any failure its cleanup frees it. */
    int rc = gs_start(node, &sup_callbacks, s, &opt, &s->gs);
    if (rc < 0)
        return rc;
    cn_proc_trap_exit(gs_proc(s->gs), 1);
    for (size_t i = 0; i < s->n; i++) {
        rc = start_one(s, &s->children[i]);
        if (rc < 0) {
            /* As OTP: stop what started, in reverse order, and report the error. */
            s->stopping = 1;
            s->on_exit = NULL;
            gs_stop(s->gs, "shutdown");
            return rc;
        }
    }
    s->on_exit = on_exit;
    s->data = data;
    if (out)
        *out = s;
    return 0;
}

int sup_start_child(sup_t *s, const sup_child_spec *spec)
{
    int rc = add_child(s, spec);
    if (rc < 0)
        return rc;
    rc = start_one(s, &s->children[s->n - 1]);
    if (rc < 0)
        remove_child(s, s->n - 1);
    return rc;
}

void sup_stop(sup_t *s)
{
    gs_stop(s->gs, "normal");
}

cn_proc *sup_proc(const sup_t *s) { return gs_proc(s->gs); }
size_t sup_child_count(const sup_t *s) { return s->n; }

cn_proc *sup_child_proc(const sup_t *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->children[i].running && strcmp(s->children[i].id, id) == 0)
            return cn_proc_by_pid(s->node, &s->children[i].pid);
    return NULL;
}

int sup_start_nested(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    const sup_nested *nest = arg;
    sup_t *s;
    int rc = sup_start(node, nest->name, &nest->flags, nest->specs, nest->n, parent, NULL, NULL, &s);
    if (rc == 0)
        *out = sup_proc(s);
    return rc;
}
