/*
 * Processes: the things on this node that have a pid.
 *
 * A process is a pid, an optional registered name, a behaviour (cn_proc_ops) and a
 * user pointer. Messages arrive through ops->message; exit signals follow Erlang's
 * rules (see cn_proc_exit_signal). When a process exits, every monitor gets
 * MONITOR_P_EXIT (or DOWN) and every link an exit signal with the reason.
 *
 * Memory: the node owns every cn_proc. After cn_proc_exit the struct stays valid
 * until the end of the current loop turn, so a callback that made its own process
 * exit may still return through code that holds the pointer.
 */
#ifndef CN_PROC_H
#define CN_PROC_H

#include <stddef.h>
#include <ei.h>

#include "cnode/node.h"

/* Why a process is exiting, as the runtime tells its behaviour. */
typedef enum cn_exit_cause {
    CN_EXIT_SELF = 0,   /* the process called cn_proc_exit itself */
    CN_EXIT_SIGNAL,     /* an exit signal it does not trap */
    CN_EXIT_KILL,       /* an untrappable kill */
    CN_EXIT_NODE        /* the node is going down */
} cn_exit_cause;

typedef struct cn_proc_ops {
    /* A message: an external term with its version byte. buf is borrowed for the call. */
    void (*message)(cn_proc *p, const char *buf, size_t len);
    /*
     * The process is exiting for a cause other than its own cn_proc_exit call.
     * reason is an external term (version byte included). The behaviour releases
     * its state here; it must not send to itself. May be NULL.
     */
    void (*exiting)(cn_proc *p, cn_exit_cause cause, const char *reason, size_t len);
} cn_proc_ops;

/* Spawns a process. ops is borrowed and must outlive the process. Never NULL. */
cn_proc *cn_proc_spawn(cn_node *node, const cn_proc_ops *ops, void *data);
/*
 * Registers name for p: the text of an atom in UTF-8 (1 to 255 characters, so
 * at most 1020 bytes, as the BEAM allows). CN_EEXIST if taken, -EINVAL for a
 * name no atom has (empty, too long, not valid UTF-8).
 */
int cn_proc_register(cn_proc *p, const char *name);
cn_proc *cn_proc_whereis(cn_node *node, const char *name);
/* The live local process with this pid, or NULL. */
cn_proc *cn_proc_by_pid(cn_node *node, const erlang_pid *pid);
/* The pid as a full erlang_pid (node name, number, serial, creation). */
void cn_proc_pid(const cn_proc *p, erlang_pid *out);
cn_node *cn_proc_node(const cn_proc *p);
void *cn_proc_data(const cn_proc *p);
void cn_proc_set_data(cn_proc *p, void *data);
const char *cn_proc_name(const cn_proc *p);  /* "" when not registered */
int cn_proc_alive(const cn_proc *p);

/* With trap on, exit signals other than kill arrive as {'EXIT', From, Reason} messages. */
void cn_proc_trap_exit(cn_proc *p, int trap);

/* Links p with pid (local or remote, over the connection to its node). */
int cn_proc_link(cn_proc *p, const erlang_pid *pid);
int cn_proc_unlink(cn_proc *p, const erlang_pid *pid);

/*
 * Sends an exit signal from p to pid, as erlang:exit(Pid, Reason). reason is an
 * external term with its version byte.
 */
int cn_proc_exit_pid(cn_proc *p, const erlang_pid *pid, const char *reason, size_t len);

/*
 * Delivers an exit signal from `from` to the local process `to` at once, as if
 * it had just arrived: when this returns, a `to` that does not trap exits has
 * exited (its behaviour's exiting callback has run). A supervisor uses it to
 * shut a child down synchronously.
 */
void cn_proc_exit_now(cn_proc *from, cn_proc *to, const char *reason, size_t len);

/*
 * Ends p with reason (external term with version byte; NULL means 'normal').
 * Monitors get DOWN, links get the exit signal, the name is unregistered. ops->exiting
 * is not called: the process is already doing its own cleanup.
 */
void cn_proc_exit(cn_proc *p, const char *reason, size_t len);

/*
 * The caller's side of gen:call (OTP 24+), for a C program that calls remote
 * servers (cnode/alias.c). cn_proc_monitor_name monitors the process
 * registered as name on node nodename (MONITOR_P) with a new reference, written
 * to *ref, that is also an alias of p, as erlang:monitor(process, {Name, Node},
 * [{alias, demonitor}]) makes one: a message sent to the alias reaches p's
 * ops->message. Call with the tag [alias | Ref]; the reply {[alias | Ref], R}
 * comes to the alias. If the server's node reports the monitored process gone
 * (or never there), p gets {'DOWN', Ref, process, {Name, Node}, Reason} and the
 * alias ends; so does a lost connection, with Reason noconnection.
 * cn_proc_demonitor_name sends DEMONITOR_P and ends the alias, as
 * erlang:demonitor(Ref, [flush]) after the reply. CN_ENOCONN when there is no
 * connection to nodename (then nothing is monitored).
 */
int cn_proc_monitor_name(cn_proc *p, const char *name, const char *nodename, erlang_ref *ref);
int cn_proc_demonitor_name(cn_proc *p, const char *name, const char *nodename, const erlang_ref *ref);

/*
 * Encodes an atom as a complete external term (version byte + atom) into buf of at
 * least 260 bytes; returns the length. A convenience for reasons like 'normal'.
 */
size_t cn_term_atom(char *buf, const char *atom);

#endif
