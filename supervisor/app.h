/*
 * The application: what build/cnode runs on its node, as an OTP release runs
 * its permanent applications.
 *
 *     kernel_sup    one_for_one   net_kernel, cnode_metrics
 *     cnode_sup     one_for_one   counter, rate_limiter
 *
 * The app owns the node (made from the config), the two top supervisors, the
 * SIGTERM/SIGINT handlers and the program's exit status. Once the node is
 * registered it starts kernel_sup, then cnode_sup, then calls ready_cb.
 *
 * Stopping: SIGTERM, SIGINT or sup_app_stop stop cnode_sup and then kernel_sup
 * (children in reverse order, each terminate saving its state), then close
 * the node on a later loop turn: connections, epmd, handles. When either top
 * supervisor exits by itself, for whatever reason (its restart intensity
 * exceeded, a kill from a connected node), the node stops the same way with
 * status 1, as OTP stops a node whose permanent application's top supervisor
 * died. The node is closed only once no process is left, so the children of a
 * killed supervisor, which get 'killed' through their links, run their
 * terminate (and save) first. It also stops with status 1 when epmd, after a
 * restart, has given the node's name to another node before the node could
 * register again (cn_node_config's status_cb; the app sets it).
 *
 * A program with its own servers, in a few lines (examples/stack/stack.c):
 *
 *     sup_child_spec children[] = {{.id = "stack", .start = start_stack, ...}};
 *     sup_app_config cfg = {.node = {.name = argv[1], .cookie = argv[2]},
 *                           .children = children, .nchildren = 1};
 *     return sup_app_run(&cfg);
 *
 * or, step by step:
 *
 *     sup_app *app;
 *     if (sup_app_new(loop, &cfg, &app) < 0) ...       // a bad node name
 *     if (sup_app_start(app) < 0) sup_app_stop(app, 1);
 *     uv_run(loop, UV_RUN_DEFAULT);                     // until the app has stopped
 *     int status = sup_app_status(app);
 *     sup_app_free(app);
 */
#ifndef SUP_APP_H
#define SUP_APP_H

#include <uv.h>

#include "cnode/node.h"
#include "genserver/counter.h"
#include "genserver/rate_limiter.h"
#include "supervisor/supervisor.h"

typedef struct sup_app sup_app;

typedef struct sup_app_config {
    cn_node_config node;            /* copied by cn_node_new; its status_cb is the app's own */
    counter_config counter;         /* copied; its data_dir is borrowed for the app's life */
    rate_limiter_config limiter;    /* copied; likewise */
    /* Called once the node is registered and the whole tree runs. May be NULL. */
    void (*ready_cb)(sup_app *app);
    void *data;                     /* the user's pointer: sup_app_data */
    /*
     * The children of cnode_sup, in start order: a program's own servers
     * (examples/stack). NULL: the built-in counter and rate_limiter, configured
     * by counter and limiter above. The array and what its args point to are
     * borrowed for the app's life.
     */
    const sup_child_spec *children;
    size_t nchildren;
    /*
     * Stop, as SIGTERM does (status 0), when stdin reaches its end: for a node
     * run as a port of a BEAM, whose death closes the pipe (supervisor/stdin_watch.h).
     * stdin must then be a pipe or a socket, or sup_app_start fails.
     */
    int stop_on_stdin_eof;
    /*
     * "HOST:PORT": serve Prometheus metrics there (cnode/metrics_http.h) from
     * sup_app_start until the stop. NULL: no endpoint. Borrowed.
     */
    const char *metrics_listen;
} sup_app_config;

/*
 * Makes the node (not yet listening) and the app on loop, and installs the
 * SIGTERM and SIGINT handlers. Returns 0 and the app in *out, or cn_node_new's
 * error (a bad node name), and then nothing was made.
 */
int sup_app_new(uv_loop_t *loop, const sup_app_config *cfg, sup_app **out);

/*
 * Listens and registers with epmd; the tree starts once the node is
 * registered. A registration or tree start that fails is printed on stderr
 * and stops the app with status 1. Returns 0, or cn_node_start's error
 * (-EADDRINUSE for a port in use), and then ready_cb is never called: stop the
 * app (sup_app_stop) and run the loop to let it close.
 */
int sup_app_start(sup_app *app);

/*
 * Stops the app with this exit status, as SIGTERM does with 0: the tree in
 * reverse order, then the node. Later calls do nothing (the first status stays).
 */
void sup_app_stop(sup_app *app, int status);

/*
 * Frees an app whose loop has run out: the node must be closed (it is, once the
 * app has stopped and the loop has run). CN_EBUSY, and nothing is freed, for an
 * app still running. NULL is 0.
 */
int sup_app_free(sup_app *app);

/* The exit status: 0 until the app stops, then what it stopped with. */
int sup_app_status(const sup_app *app);
/* Has the app begun stopping? */
int sup_app_stopping(const sup_app *app);
cn_node *sup_app_node(const sup_app *app);
void *sup_app_data(const sup_app *app);

/* Prints "READY <name> <port>" on stdout and flushes it: what build/cnode's starters wait for. */
void sup_app_print_ready(sup_app *app);

/*
 * A whole program's node on the default loop: makes the app, starts it, runs
 * the loop until the app has stopped (SIGTERM, SIGINT, a top supervisor's
 * death, stdin's end with stop_on_stdin_eof) and frees it. A NULL ready_cb is
 * sup_app_print_ready. SIGPIPE is ignored. Errors are one line on stderr.
 * Returns the exit status: 0 after SIGTERM or SIGINT, 1 when the node could
 * not start or a top supervisor died, 2 for a bad node name.
 */
int sup_app_run(const sup_app_config *cfg);

#endif
