/*
 * The heart: a watchdog process that keeps the node running, as OTP's heart
 * program keeps a BEAM running (`erl -heart`).
 *
 * `cnode --heart` forks at start-up, after the flags, the cookie and the data
 * dir were checked and before any loop or socket exists. The process the
 * caller started stays the watchdog: its pid is the one a shell, a port or a
 * service manager holds, so their SIGTERM reaches it. The node runs in a child,
 * which returns from sup_heart_run into main and runs as without --heart. Fork
 * rather than a separate binary that execs cnode: the child starts from the
 * watchdog's pristine pre-loop image (nothing of a crashed node is inherited),
 * there is no second program to install and find, and a restart costs a fork,
 * not an exec and a dynamic link.
 *
 * Heartbeats. Each node gets one end of a fresh socketpair; its loop writes a
 * byte on a uv_timer (supervisor/heart_beat.h) ten times per timeout (at most
 * once a second), so a beat proves the loop turns, not only that the process
 * exists. The watchdog kills with SIGKILL a node that sent none for timeout_s
 * seconds (a stopped, deadlocked or spinning loop) and starts it again.
 *
 * Restarts. A node that dies by a signal, exits non-zero or was killed for
 * missed beats is started again, with the backoff of supervisor/heart_policy.h;
 * each restart is one log line with the cause. Exit 0 (a clean stop) ends the
 * watchdog with 0, exit 2 (bad usage) with 2.
 *
 * Stopping. SIGTERM or SIGINT to the watchdog is forwarded to the node, which
 * stops cleanly (every terminate saves); the watchdog waits up to
 * SUP_HEART_STOP_WAIT_MS, then SIGKILLs it, and exits with the node's status
 * (128 + signal for a signal). A signal during a backoff wait ends the watchdog
 * at once with the last node's status. The node runs in its own process group,
 * so a terminal's Ctrl-C reaches the watchdog only and the node gets exactly one
 * SIGINT, the forwarded one (a second one, after the node has dropped its
 * handlers, would kill it before it saved).
 *
 * No orphans. When the watchdog dies, even by SIGKILL, the kernel closes its
 * end of the socketpair; the node's loop sees end-of-file at once and stops
 * cleanly with status 1 (its state saved), as a BEAM halts when its heart port
 * closes. PR_SET_PDEATHSIG is not used: its SIGKILL would skip the save, and
 * its SIGTERM adds nothing to the end-of-file the loop already watches. A node
 * whose loop is stuck when the watchdog dies stays stuck: nothing is left to
 * kill it (as with OTP's heart).
 *
 * epmd: a dead node's registration connection is closed by the kernel when it
 * dies, so epmd frees the name and the new node registers the same one.
 */
#ifndef SUP_HEART_H
#define SUP_HEART_H

/* The heartbeat timeout's default, in seconds: OTP heart's HEART_BEAT_TIMEOUT. */
#define SUP_HEART_DEFAULT_TIMEOUT_S 60
/* How long a node stopping after a forwarded SIGTERM may take before SIGKILL. */
#define SUP_HEART_STOP_WAIT_MS 30000

typedef struct sup_heart_config {
    unsigned timeout_s;   /* the heartbeat timeout, 1 or more */
    const char *name;     /* the node's name, for the log lines; borrowed */
} sup_heart_config;

/* sup_heart_run's results. */
#define SUP_HEART_IN_NODE 0   /* this process is a node: run it */
#define SUP_HEART_DONE 1      /* this process is the watchdog, and it is done */

/*
 * Becomes the watchdog and starts the node. Returns SUP_HEART_IN_NODE in each
 * node process, with *beat_fd its end of the heartbeat socket (for
 * sup_heart_beat_start, which owns it from then on); SIGTERM and SIGINT are
 * still blocked there, for sup_heart_unblock_signals once their handlers are
 * installed. Returns SUP_HEART_DONE in the watchdog when it has ended, with
 * the status to exit with in *exit_status. Returns -errno, in the calling
 * process, when the watchdog could not be set up (nothing was started).
 */
int sup_heart_run(const sup_heart_config *cfg, int *beat_fd, int *exit_status);

/*
 * In a node: unblocks the signals the watchdog blocked, once the node's own
 * SIGTERM and SIGINT handlers exist. A SIGTERM the watchdog forwarded before
 * then was held pending and is delivered now, to those handlers.
 */
void sup_heart_unblock_signals(void);

#endif
