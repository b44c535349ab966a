/*
 * The load generator's engine: K caller nodes on one libuv loop, each its own
 * cn_node with its own distribution connection to the node under test, each
 * keeping calls in flight from its own processes exactly as gen:call makes
 * them (MONITOR_P, REG_SEND {'$gen_call', {Pid, [alias | Ref]}, Request}, the
 * reply to the alias, DEMONITOR_P). The runtime batches each node's frames of
 * a loop turn into one write, as the BEAM's distribution port does.
 */
#ifndef LD_LOAD_H
#define LD_LOAD_H

#include <stdint.h>

#include "load/args.h"
#include "load/hist.h"

typedef struct ld_result {
    double window_s;            /* the measured window's length */
    uint64_t calls;             /* replies (casts sent) whose time fell in the window */
    double achieved;            /* calls / window_s */
    uint64_t errors;            /* sends refused, DOWNs ('noproc': no such server) */
    uint64_t timeouts;          /* unanswered within timeout_ms (then demonitored, as gen:call) */
    uint64_t rejected;          /* replies {error, _} (check_rate over its limit) */
    uint64_t unfinished;        /* due in the window, unanswered when the drain ended */
    uint64_t peak_inflight;     /* calls in flight at once, over all nodes */
    ld_hist *hist;              /* nanoseconds from each call's due time to its reply */
    double gen_cpu_us_per_call; /* this process's user + system CPU per reply over the window */
    double server_cpu_us_per_call; /* the --server-pid's, or -1 */
    double server_cpu_share;    /* the server's CPU over the window, in cores (1.0: one core busy) */
    double gen_cpu_share;       /* this process's, likewise */
    /*
     * How busy the server's core and the generator's were over the window with
     * anything at all (from /proc/stat), when each is pinned to one core; -1
     * otherwise. A core busy with other work while the server's own share is
     * low says the machine was not quiet, not that the server saturated.
     */
    double server_core_busy, gen_core_busy;
} ld_result;

/*
 * Runs one measurement as cfg says. res->hist must point to a histogram the
 * caller allocated; the rest of res is filled. Returns 0, or -1 with a reason
 * on stderr (the nodes could not start or connect within 10 s).
 */
int ld_run(const ld_config *cfg, ld_result *res);

#endif
