/*
 * The supervisor, in C, with OTP's rules.
 *
 * A supervisor is a gen_server on this node that traps exits and is linked to
 * each of its children. Children start in order and stop in reverse order. When
 * a child exits, its restart type and the strategy decide what is restarted
 * (supervisor/sup_policy.h); more restarts than `intensity` within `period_s`
 * seconds make the supervisor shut every child down in order and exit with
 * reason 'shutdown', as an OTP supervisor does. A root supervisor's exit is the
 * node's signal to stop with a non-zero status (supervisor/app.h).
 *
 * A supervisor killed with :kill runs no terminate: its children learn of its
 * end through their links ('killed'), and each runs its own terminate, as
 * under OTP. Whatever ended it, its on_exit runs exactly once.
 *
 * Shutting a child down is synchronous: children live in this process's loop,
 * so the supervisor unlinks, delivers the exit signal at once and the child's
 * terminate has run when the call returns. A brutal_kill (shutdown_ms 0) skips
 * terminate, as :kill does.
 *
 * From Elixir: Supervisor.which_children({name, node}) and
 * Supervisor.count_children({name, node}) work on a C supervisor.
 */
#ifndef SUP_SUPERVISOR_H
#define SUP_SUPERVISOR_H

#include <stddef.h>

#include "cnode/node.h"
#include "cnode/proc.h"
#include "supervisor/sup_policy.h"

typedef struct sup_t sup_t;

/*
 * Starts a child linked to parent: a gen_server (gs_start with .parent = parent)
 * or a nested supervisor (sup_start with parent). Returns 0 and the child's
 * process in *out, or a negative error.
 */
typedef int (*sup_start_fn)(cn_node *node, cn_proc *parent, void *arg, cn_proc **out);

#define SUP_BRUTAL_KILL 0

typedef struct sup_child_spec {
    const char *id;             /* unique among the supervisor's children; copied */
    sup_start_fn start;
    void *arg;                  /* borrowed, passed to start on every (re)start */
    sup_restart_type restart;
    int shutdown_ms;            /* SUP_BRUTAL_KILL, a timeout, or SUP_SHUTDOWN_INFINITY */
    sup_child_type type;
    const char *module;         /* shown by which_children; NULL: the id */
} sup_child_spec;

typedef struct sup_flags {
    sup_strategy strategy;
    int intensity;              /* restarts allowed per period (0: none); < 0: Elixir's default, 3 */
    int period_s;               /* 0 means 5 */
} sup_flags;

/*
 * Starts a supervisor, registered as name (NULL for none), linked to parent
 * (NULL for a root), and starts every child in order. If a child fails to start,
 * the ones already started are stopped in reverse order and the error returned.
 * specs are copied. Returns 0 and the supervisor in *out (may be NULL), or a
 * negative error (CN_EEXIST when the name is taken, the first child's start
 * error), and then nothing is left running and on_exit is never called.
 *
 * on_exit (may be NULL) is called exactly once when the supervisor has exited,
 * whatever ended it, with its reason as an atom name: "normal" after sup_stop,
 * "shutdown" after the restart intensity was exceeded, the parent's reason
 * when the parent exited, "killed" after an untrappable kill (then its
 * children are still running and get 'killed' through their links on this
 * loop turn). The supervisor is freed when on_exit returns: whoever holds the
 * sup_t drops it there.
 */
int sup_start(cn_node *node, const char *name, const sup_flags *flags, const sup_child_spec *specs, size_t n,
              cn_proc *parent, void (*on_exit)(sup_t *, const char *reason, void *data), void *data,
              sup_t **out);

/* Adds and starts a child at run time (DynamicSupervisor.start_child). */
int sup_start_child(sup_t *s, const sup_child_spec *spec);

/*
 * Stops every child in reverse start order (their terminate callbacks run),
 * then the supervisor itself with reason 'normal' (on_exit is called).
 */
void sup_stop(sup_t *s);

cn_proc *sup_proc(const sup_t *s);
size_t sup_child_count(const sup_t *s);
/* The running process of child id, or NULL. */
cn_proc *sup_child_proc(const sup_t *s, const char *id);

/* A start function for a nested supervisor: arg is a sup_nested. */
typedef struct sup_nested {
    const char *name;
    sup_flags flags;
    const sup_child_spec *specs;
    size_t n;
} sup_nested;
int sup_start_nested(cn_node *node, cn_proc *parent, void *arg, cn_proc **out);

#endif
