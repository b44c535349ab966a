/*
 * The application (supervisor/app.h): the node, its two top supervisors, the
 * signals that stop it and the exit status.
 *
 * Ownership: the app owns the node and reaches it as cn_node_data's pointer.
 * It holds a pointer to each top supervisor only while that supervisor lives:
 * a supervisor's on_exit runs exactly once, whatever ended it (also a kill,
 * which skips terminate), and top_exited drops the pointer there, just before
 * the supervisor is freed. So nothing the app keeps can point to a freed
 * server, and a SIGTERM after a kill finds nothing left to stop.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/metrics_http.h"
#include "genserver/genserver.h"
#include "genserver/metrics_server.h"
#include "genserver/net_kernel.h"
#include "supervisor/app.h"
#include "supervisor/stdin_watch.h"
#include "supervisor/supervisor.h"

/*
 * Loop turns the close waits for processes that are still exiting (children
 * of a killed supervisor whose link signals are queued), before it closes the
 * node anyway. A turn delivers thousands of local signals: a few turns do.
 */
#define CLOSE_WAIT_TURNS 1000

struct sup_app {
    uv_loop_t *loop;
    cn_node *node;
    counter_config counter;
    rate_limiter_config limiter;
    void (*ready_cb)(sup_app *app);
    void *data;
    const sup_child_spec *children;     /* the program's own, or NULL for the built-in ones */
    size_t nchildren;
    int stop_on_stdin_eof;
    const char *metrics_listen;         /* --metrics-listen, or NULL */
    cn_metrics_http *metrics;           /* the endpoint while it serves, else NULL */
    cn_series *conn_gauge[2];           /* connections up and in the handshake */
    sup_stdin_watch *stdin_watch;       /* while it watches, else NULL */
    uv_signal_t sigterm, sigint;
    uv_idle_t closer;       /* closes the node once no process is left */
    unsigned close_turns;
    sup_t *kernel;          /* kernel_sup while it runs, else NULL */
    sup_t *root;            /* cnode_sup while it runs, else NULL */
    /*
     * The state a server could not save when it stopped, for its next
     * incarnation (genserver/journal.h): the child argument's, so the restart
     * path hands it over. Still full when the node stops: the exit status is 1.
     */
    gs_handover counter_handover, limiter_handover;
    int status;
    int stopping;
};

static int start_net_kernel(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    (void)arg;
    gs_server *gs;
    int rc = net_kernel_start(node, parent, &gs);
    if (rc == 0)
        *out = gs_proc(gs);
    return rc;
}

static int start_metrics_server(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    (void)arg;
    gs_server *gs;
    int rc = metrics_server_start(node, parent, &gs);
    if (rc == 0)
        *out = gs_proc(gs);
    return rc;
}

static int start_counter(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    gs_server *gs;
    int rc = counter_start(node, arg, "counter", parent, &gs);
    if (rc == 0)
        *out = gs_proc(gs);
    return rc;
}

static int start_rate_limiter(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    gs_server *gs;
    int rc = rate_limiter_start(node, arg, "rate_limiter", parent, &gs);
    if (rc == 0)
        *out = gs_proc(gs);
    return rc;
}

/* A top supervisor has exited: forget it, and unless the app is stopping already, stop the node. */
static void top_exited(sup_t *s, const char *reason, void *data)
{
    sup_app *a = data;
    const char *name = s == a->root ? "cnode_sup" : "kernel_sup";
    if (s == a->root)
        a->root = NULL;
    if (s == a->kernel)
        a->kernel = NULL;
    if (a->stopping)
        return;
    /* The reason is an atom a peer may have chosen (:sys.terminate(kernel_sup, Reason)). */
    char esc[CN_LOG_ESC_MAX];
    CN_ERROR("node", "the top supervisor %s exited (%s); stopping the node", name,
             cn_log_escape_str(esc, sizeof esc, reason));
    sup_app_stop(a, 1);
}

/* kernel_sup with net_kernel first, as OTP starts kernel before any other application. */
static int start_tree(sup_app *a)
{
    sup_child_spec kernel[] = {
        {.id = "net_kernel", .start = start_net_kernel, .restart = SUP_PERMANENT,
         .shutdown_ms = SUP_WORKER_SHUTDOWN_MS, .type = SUP_WORKER, .module = "net_kernel"},
        {.id = "cnode_metrics", .start = start_metrics_server, .restart = SUP_PERMANENT,
         .shutdown_ms = SUP_WORKER_SHUTDOWN_MS, .type = SUP_WORKER, .module = "cnode_metrics"},
    };
    sup_child_spec servers[] = {
        {.id = "counter", .start = start_counter, .arg = &a->counter, .restart = SUP_PERMANENT,
         .shutdown_ms = SUP_WORKER_SHUTDOWN_MS, .type = SUP_WORKER, .module = "Elixir.Counter"},
        {.id = "rate_limiter", .start = start_rate_limiter, .arg = &a->limiter, .restart = SUP_PERMANENT,
         .shutdown_ms = SUP_WORKER_SHUTDOWN_MS, .type = SUP_WORKER, .module = "Elixir.RateLimiter"},
    };
    sup_flags flags = {.strategy = SUP_ONE_FOR_ONE, .intensity = 3, .period_s = 5};
    int rc = sup_start(a->node, "kernel_sup", &flags, kernel, sizeof kernel / sizeof kernel[0], NULL,
                       top_exited, a, &a->kernel);
    if (rc < 0)
        return rc;
    const sup_child_spec *specs = a->children ? a->children : servers;
    size_t n = a->children ? a->nchildren : sizeof servers / sizeof servers[0];
    return sup_start(a->node, "cnode_sup", &flags, specs, n, NULL, top_exited, a, &a->root);
}

static void on_ready(cn_node *node, int status)
{
    sup_app *a = cn_node_data(node);
    if (a->stopping)
        return; /* stopped while it registered: start nothing */
    if (status < 0) {
        if (status == CN_ENOTALIVE)
            fprintf(stderr, "cnode: the name %s is already registered with epmd\n", cn_node_name(node));
        else
            fprintf(stderr, "cnode: cannot register with epmd: %s\n", cn_strerror(status));
        sup_app_stop(a, 1);
        return;
    }
    int rc = start_tree(a);
    if (rc < 0) {
        fprintf(stderr, "cnode: cannot start the servers: %s\n", cn_strerror(rc));
        sup_app_stop(a, 1);
        return;
    }
    if (a->ready_cb)
        a->ready_cb(a);
}

/*
 * The registration after start: renewed after an epmd restart (nothing to do),
 * or lost for good because another node took the name while epmd had none for
 * us. Then peers asking epmd for our name reach the other node: stop, with
 * status 1, the ordinary way (the servers save their state).
 */
static void on_node_status(cn_node *node, int status)
{
    sup_app *a = cn_node_data(node);
    if (status != CN_ENOTALIVE || a->stopping)
        return;
    fprintf(stderr, "cnode: the name %s was registered by another node while epmd had lost ours; stopping\n",
            cn_node_name(node));
    sup_app_stop(a, 1);
}

static void node_closed(cn_node *node)
{
    (void)node;
}

/*
 * Runs once per loop turn after the stop: closes the node once every process
 * has exited, so that no server is freed by the node without its terminate.
 */
/* A final save that failed makes the exit status non-zero: the state is not on disk. */
static void check_saved(sup_app *a)
{
    if (!a->counter_handover.full && !a->limiter_handover.full)
        return;
    CN_ERROR("node", "the final save of %s failed: its last state is not on disk; exit status 1",
             a->counter_handover.full ? "the counter" : "the rate limiter");
    a->status = 1;
}

static void close_when_idle(uv_idle_t *h)
{
    sup_app *a = h->data;
    cn_node_stats st;
    cn_node_get_stats(a->node, &st);
    if (st.processes > 0 && a->close_turns++ < CLOSE_WAIT_TURNS)
        return;
    if (st.processes > 0)
        CN_WARN("node", "%u processes are still running; closing the node anyway", st.processes);
    check_saved(a);
    uv_idle_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    cn_node_close(a->node, node_closed);
}

/* The owner at the other end of stdin is gone: stop as SIGTERM does, every server saving. */
static void stdin_ended(void *data)
{
    CN_INFO("node", "stdin closed (the port's owner is gone); stopping");
    sup_app_stop(data, 0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    CN_INFO("node", "got %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    sup_app_stop(h->data, 0);
}

static double connections_up(void *arg)
{
    cn_node_stats st;
    cn_node_get_stats(((sup_app *)arg)->node, &st);
    return st.connections;
}

static double connections_pending(void *arg)
{
    cn_node_stats st;
    cn_node_get_stats(((sup_app *)arg)->node, &st);
    return st.pending;
}

/* The node's connections as gauges, read from its own figures at each scrape. */
static void watch_connections(sup_app *a)
{
    cn_metrics *m = cn_metrics_default();
    cn_labels up = {{"state", "up", NULL, NULL}}, hs = {{"state", "handshake", NULL, NULL}};
    static const char help[] = "Distribution connections now, by state.";
    a->conn_gauge[0] = cn_metrics_gauge(m, "cnode_connections", help, &up, connections_up, a);
    a->conn_gauge[1] = cn_metrics_gauge(m, "cnode_connections", help, &hs, connections_pending, a);
}

/* --metrics-listen: the endpoint, before the node listens, so a bad address stops the start. */
static int start_metrics(sup_app *a)
{
    if (a->metrics_listen == NULL)
        return 0;
    int rc = cn_metrics_http_start(a->loop, a->metrics_listen, cn_metrics_default(), &a->metrics);
    if (rc < 0)
        fprintf(stderr, "cnode: cannot serve metrics on %s: %s\n", a->metrics_listen, cn_strerror(rc));
    return rc;
}

int sup_app_new(uv_loop_t *loop, const sup_app_config *cfg, sup_app **out)
{
    cn_node *node;
    cn_node_config nc = cfg->node;
    nc.status_cb = on_node_status;
    int rc = cn_node_new(loop, &nc, &node);
    if (rc < 0)
        return rc;
    sup_app *a = cn_calloc(1, sizeof *a);
    a->loop = loop;
    a->node = node;
    a->counter = cfg->counter;
    a->limiter = cfg->limiter;
    a->counter.handover = &a->counter_handover;
    a->limiter.handover = &a->limiter_handover;
    a->ready_cb = cfg->ready_cb;
    a->data = cfg->data;
    a->children = cfg->children;
    a->nchildren = cfg->nchildren;
    a->stop_on_stdin_eof = cfg->stop_on_stdin_eof;
    a->metrics_listen = cfg->metrics_listen;
    cn_node_set_data(node, a);
    watch_connections(a);
    uv_signal_init(loop, &a->sigterm);
    uv_signal_init(loop, &a->sigint);
    a->sigterm.data = a->sigint.data = a;
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_idle_init(loop, &a->closer);
    a->closer.data = a;
    *out = a;
    return 0;
}

int sup_app_start(sup_app *a)
{
    if (a->stop_on_stdin_eof) {
        int rc = sup_stdin_watch_start(a->loop, stdin_ended, a, &a->stdin_watch);
        if (rc < 0) {
            fprintf(stderr, "cnode: cannot watch stdin for its end (it must be a pipe or a socket): %s\n",
                    cn_strerror(rc));
            return rc;
        }
    }
    int rc = start_metrics(a);
    if (rc < 0)
        return rc;
    return cn_node_start(a->node, on_ready);
}

void sup_app_stop(sup_app *a, int status)
{
    if (a->stopping)
        return;
    a->stopping = 1;
    a->status = status;
    CN_INFO("node", "shutting down");
    /* In reverse start order. Each stop ends in top_exited, which clears the pointer. */
    if (a->root)
        sup_stop(a->root);
    if (a->kernel)
        sup_stop(a->kernel);
    sup_stdin_watch_close(a->stdin_watch);
    a->stdin_watch = NULL;
    cn_metrics_http_close(a->metrics);
    a->metrics = NULL;
    uv_signal_stop(&a->sigterm);
    uv_signal_stop(&a->sigint);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_idle_start(&a->closer, close_when_idle);
}

int sup_app_free(sup_app *a)
{
    if (a == NULL)
        return 0;
    int rc = cn_node_free(a->node);
    if (rc < 0)
        return rc;
    gs_handover_free(&a->counter_handover);
    gs_handover_free(&a->limiter_handover);
    for (int i = 0; i < 2; i++)
        cn_metrics_gauge_remove(cn_metrics_default(), a->conn_gauge[i], a);
    free(a);
    return 0;
}

int sup_app_status(const sup_app *a) { return a->status; }
int sup_app_stopping(const sup_app *a) { return a->stopping; }
cn_node *sup_app_node(const sup_app *a) { return a->node; }
void *sup_app_data(const sup_app *a) { return a->data; }

void sup_app_print_ready(sup_app *a)
{
    cn_node *node = sup_app_node(a);
    printf("READY %s %u\n", cn_node_name(node), cn_node_port(node));
    fflush(stdout);
}

int sup_app_run(const sup_app_config *cfg)
{
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    sup_app_config c = *cfg;
    if (c.ready_cb == NULL)
        c.ready_cb = sup_app_print_ready;
    sup_app *a;
    int rc = sup_app_new(loop, &c, &a);
    if (rc < 0) {
        fprintf(stderr, "cnode: cannot make the node (a name NAME@HOST and a cookie are required): %s\n",
                cn_strerror(rc));
        return 2;
    }
    rc = sup_app_start(a);
    if (rc < 0) {
        fprintf(stderr, "cnode: cannot start: %s\n", cn_strerror(rc));
        sup_app_stop(a, 1);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    int status = sup_app_status(a);
    if (sup_app_free(a) == 0)
        uv_loop_close(loop);
    return status;
}
