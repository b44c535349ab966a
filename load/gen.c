/*
 * The engine (load.h). One libuv loop, K cn_nodes, and per node up to M slots:
 * a slot is a process of that node with at most one call in flight, as each
 * gen:call caller is a process. The server's reply comes to the slot's alias
 * (cnode/alias.c) and through it to slot_message.
 *
 * Time: every time is uv_hrtime() nanoseconds. After every node is connected
 * (t_start) the load runs warmup_s unmeasured, then the window [t_window,
 * t_end), then a drain of at most drain_ms for calls due in the window. A
 * call's latency is from its due time (open loop: its place in the fixed-rate
 * schedule, ld_pace; closed loop: when its slot came free) to its reply, and
 * is recorded when its due time falls in the window. Replies are counted for
 * the throughput when they arrive in the window.
 *
 * Open loop sends wake on a timerfd armed at the next due time (libuv's
 * timers have millisecond resolution, far too coarse at 50 000 calls/s); a
 * slot that frees sends the calls that became due meanwhile at once.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cnode/mem.h"
#include "cnode/node.h"
#include "cnode/proc.h"
#include "load/load.h"
#include "load/pace.h"

#define TICK_MS 5
/* Replies in one turn that make the generator pause (on_pause). */
#define LD_COALESCE_MIN 16
#define CONNECT_LIMIT_NS (10 * 1000000000ull)

typedef struct ld_gen ld_gen;
typedef struct ld_node ld_node;

typedef struct ld_slot {
    ld_node *ln;
    cn_proc *proc;
    erlang_pid pid;
    erlang_ref ref;
    int head_len;
    char head[96 + MAXATOMLEN_UTF8];    /* encode_head: version, headers, two short atoms, a pid */
    uint64_t due_ns, sent_ns;
    int busy;
    struct ld_slot *next_free;
} ld_slot;

struct ld_node {
    ld_gen *g;
    cn_node *node;
    unsigned idx;
    ld_slot *slots;             /* cfg->inflight of them; a process is spawned on first use */
    unsigned spawned;
    ld_slot *free;
    unsigned busy;
    ld_pace pace;
};

enum { PH_CONNECT, PH_RUN, PH_DRAIN, PH_DONE };

struct ld_gen {
    const ld_config *cfg;
    ld_result *res;
    uv_loop_t loop;
    ld_node *nodes;
    const char *server;
    int phase;
    int failed;
    uint64_t t_begin, t_start, t_window, t_end, t_drain;
    uv_timer_t tick;
    uv_check_t pause;           /* runs after every node's end of turn (see start_timers) */
    uint64_t replies_mark;      /* g->replies at the last pause check */
    int tfd;
    uv_poll_t tpoll;
    uint64_t armed_ns;          /* when the timerfd fires, or 0 */
    uint64_t fired_ns;          /* when it last fired */
    uint64_t replies;           /* every completion, for the CPU snapshots */
    uint64_t inflight;
    uint64_t next_id;
    int snap_open;              /* the window's start snapshot is taken */
    double cpu0, srv0;
    uint64_t replies0;
    unsigned closing;
    unsigned ticks;
    char buf[1024];             /* one message being encoded */
};

static void issue(ld_slot *s, uint64_t due);

/* ---- Clocks ---- */

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime + stime of pid from /proc/pid/stat, in seconds; -1 when unreadable. */
static double proc_cpu_s(long pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    /* The command may hold spaces and parentheses: the fields start after the last ')'. */
    char *p = strrchr(line, ')');
    unsigned long ut, st;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- Encoding what gen:call and gen:cast send ---- */

static int encode_request(ld_gen *g, int *i)
{
    if (g->cfg->request != LD_CHECK_RATE)
        return ei_encode_atom(g->buf, i, "increment");
    char id[32];
    int n = snprintf(id, sizeof id, "client-%llu", (unsigned long long)(g->next_id++ % g->cfg->ids));
    return ei_encode_tuple_header(g->buf, i, 2) | ei_encode_atom(g->buf, i, "check_rate") |
           ei_encode_binary(g->buf, i, id, n);
}

/*
 * The part of a slot's calls that never changes, up to the reference:
 * {'$gen_call', {Pid, [alias | . Encoded once per slot: the pid's node name
 * is most of the bytes, and most of the encoding work of a call.
 */
static void encode_head(ld_slot *s)
{
    char *b = s->head;
    int i = 0;
    int rc = ei_encode_version(b, &i) | ei_encode_tuple_header(b, &i, 3) | ei_encode_atom(b, &i, "$gen_call") |
             ei_encode_tuple_header(b, &i, 2) | ei_encode_pid(b, &i, &s->pid) | ei_encode_list_header(b, &i, 1) |
             ei_encode_atom(b, &i, "alias");
    assert(rc == 0 && (size_t)i <= sizeof s->head);
    (void)rc;
    s->head_len = i;
}

/* {'$gen_call', {Pid, [alias | Ref]}, Request} into g->buf: its length. */
static int encode_call(ld_gen *g, const ld_slot *s)
{
    memcpy(g->buf, s->head, (size_t)s->head_len);
    int i = s->head_len;
    int rc = ei_encode_ref(g->buf, &i, &s->ref) | encode_request(g, &i);
    return rc < 0 ? -1 : i;
}

/* {'$gen_cast', Request}. */
static int encode_cast(ld_gen *g)
{
    int i = 0;
    int rc = ei_encode_version(g->buf, &i) | ei_encode_tuple_header(g->buf, &i, 2) |
             ei_encode_atom(g->buf, &i, "$gen_cast") | encode_request(g, &i);
    return rc < 0 ? -1 : i;
}

/* ---- Slots ---- */

static void slot_message(cn_proc *p, const char *buf, size_t len);
static const cn_proc_ops slot_ops = {.message = slot_message};

/* A free slot of ln, its process spawned on first use; NULL when all M are busy. */
static ld_slot *slot_take(ld_node *ln)
{
    ld_slot *s = ln->free;
    if (s != NULL) {
        ln->free = s->next_free;
    } else if (ln->spawned < ln->g->cfg->inflight) {
        s = &ln->slots[ln->spawned++];
        s->ln = ln;
        s->proc = cn_proc_spawn(ln->node, &slot_ops, s);
        cn_proc_pid(s->proc, &s->pid);
        encode_head(s);
    }
    return s;
}

static int slot_available(const ld_node *ln)
{
    return ln->free != NULL || ln->spawned < ln->g->cfg->inflight;
}

static void slot_release(ld_slot *s)
{
    ld_node *ln = s->ln;
    s->busy = 0;
    s->next_free = ln->free;
    ln->free = s;
    ln->busy--;
    ln->g->inflight--;
}

static int in_window(const ld_gen *g, uint64_t t)
{
    return t >= g->t_window && t < g->t_end;
}

/* ---- Sending ---- */

static void rearm(ld_gen *g, uint64_t at);

/* Open loop: every call of ln's schedule due by now, while it has free slots. */
static void pump(ld_node *ln, uint64_t now)
{
    ld_gen *g = ln->g;
    uint64_t due;
    if (g->cfg->request == LD_CAST) {
        while (ld_pace_take(&ln->pace, now, g->t_end, &due)) {
            ld_slot *s = &ln->slots[0];
            int len = encode_cast(g);
            if (len < 0 || cn_send_name(s->proc, g->server, g->cfg->target, g->buf, (size_t)len) < 0)
                g->res->errors++;
            else if (in_window(g, now))
                g->res->calls++;
        }
        if (ld_pace_next_due(&ln->pace) < g->t_end)
            rearm(g, ld_pace_next_due(&ln->pace));
        return;
    }
    while (slot_available(ln) && ld_pace_take(&ln->pace, now, g->t_end, &due))
        issue(slot_take(ln), due);
    if (slot_available(ln) && ld_pace_next_due(&ln->pace) < g->t_end)
        rearm(g, ld_pace_next_due(&ln->pace));
}

/* A call that could not be made or failed: counted, and the slot is free again. */
static void call_failed(ld_slot *s)
{
    s->ln->g->res->errors++;
    slot_release(s);
}

static void issue(ld_slot *s, uint64_t due)
{
    ld_gen *g = s->ln->g;
    s->busy = 1;
    s->due_ns = due;
    s->sent_ns = uv_hrtime();
    s->ln->busy++;
    if (++g->inflight > g->res->peak_inflight)
        g->res->peak_inflight = g->inflight;
    if (cn_proc_monitor_name(s->proc, g->server, g->cfg->target, &s->ref) < 0) {
        call_failed(s);
        return;
    }
    int len = encode_call(g, s);
    if (len < 0 || cn_send_name(s->proc, g->server, g->cfg->target, g->buf, (size_t)len) < 0) {
        cn_proc_demonitor_name(s->proc, g->server, g->cfg->target, &s->ref);
        call_failed(s);
    }
}

/* The slot's call is over: the next one, by the loop's rule. */
static void refill(ld_node *ln, uint64_t now)
{
    ld_gen *g = ln->g;
    if (g->phase != PH_RUN && g->phase != PH_DRAIN)
        return;
    if (g->cfg->rate > 0)
        pump(ln, now);
    else if (now < g->t_end)
        issue(slot_take(ln), now);
}

/* ---- Replies ---- */

/* {error, _} from check_rate is a rejection, not a failure; anything else is a reply. */
static int is_rejection(const char *buf, int i)
{
    int arity;
    char atom[MAXATOMLEN];
    return ei_decode_tuple_header(buf, &i, &arity) == 0 && arity == 2 && ei_decode_atom(buf, &i, atom) == 0 &&
           strcmp(atom, "error") == 0;
}

static void complete(ld_slot *s, uint64_t now)
{
    ld_gen *g = s->ln->g;
    if (in_window(g, s->due_ns))
        ld_hist_record(g->res->hist, now - s->due_ns);
    if (in_window(g, now))
        g->res->calls++;
    g->replies++;
    slot_release(s);
    refill(s->ln, now);
}

/*
 * {[alias | Ref], Reply}: the reply; {'DOWN', Ref, process, _, Reason}: the
 * server is gone (or was never there), the call failed. Only the slot's alias
 * reaches it, and the alias ends with the call, so a late reply never arrives.
 */
static void slot_message(cn_proc *p, const char *buf, size_t len)
{
    (void)len;
    ld_slot *s = cn_proc_data(p);
    ld_gen *g = s->ln->g;
    int i = 0, ver, arity;
    if (!s->busy || ei_decode_version(buf, &i, &ver) < 0 || ei_decode_tuple_header(buf, &i, &arity) < 0)
        return;
    uint64_t now = uv_hrtime();
    if (arity != 2) {
        call_failed(s);
        refill(s->ln, now);
        return;
    }
    if (g->cfg->request == LD_CHECK_RATE && ei_skip_term(buf, &i) == 0 && is_rejection(buf, i))
        g->res->rejected++;
    cn_proc_demonitor_name(p, g->server, g->cfg->target, &s->ref);
    complete(s, now);
}

/* gen:call's timeout: counted, recorded from the due time, demonitored. */
static void check_timeouts(ld_gen *g, uint64_t now)
{
    uint64_t limit = (uint64_t)g->cfg->timeout_ms * 1000000ull;
    for (unsigned k = 0; k < g->cfg->nodes; k++) {
        ld_node *ln = &g->nodes[k];
        for (unsigned j = 0; j < ln->spawned && ln->busy > 0; j++) {
            ld_slot *s = &ln->slots[j];
            if (!s->busy || now - s->sent_ns < limit)
                continue;
            g->res->timeouts++;
            cn_proc_demonitor_name(s->proc, g->server, g->cfg->target, &s->ref);
            if (in_window(g, s->due_ns))
                ld_hist_record(g->res->hist, now - s->due_ns);
            slot_release(s);
            refill(ln, now);
        }
    }
}

/* ---- The open loop's timer ---- */

/*
 * Arms the timerfd for at, but not sooner than batch_us after the last time it
 * fired: at high rates the calls due within that time leave together, in one
 * write per node, instead of one wakeup and one write each, which would make
 * the generator dearer per call than the servers it measures. A call sent late
 * is still measured from its due time, so the batching shows in the latencies
 * it adds (at most batch_us), never hides any.
 */
static void rearm(ld_gen *g, uint64_t at)
{
    uint64_t soonest = g->fired_ns + (uint64_t)g->cfg->batch_us * 1000;
    if (at < soonest)
        at = soonest;
    if (g->armed_ns != 0 && g->armed_ns <= at)
        return;
    struct itimerspec its = {{0, 0}, {(time_t)(at / 1000000000ull), (long)(at % 1000000000ull)}};
    if (at == 0)
        its.it_value.tv_nsec = 1;       /* 0 would disarm it */
    /* uv_hrtime is CLOCK_MONOTONIC: the timer runs on the same clock, in absolute time. */
    timerfd_settime(g->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    g->armed_ns = at;
}

static void on_timerfd(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    ld_gen *g = h->data;
    uint64_t expirations;
    if (read(g->tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        return;
    g->armed_ns = 0;
    if (g->phase != PH_RUN)
        return;
    uint64_t now = uv_hrtime();
    g->fired_ns = now;
    for (unsigned k = 0; k < g->cfg->nodes; k++)
        pump(&g->nodes[k], now);
}

/* ---- Phases ---- */

static void start_load(ld_gen *g, uint64_t now)
{
    const ld_config *cfg = g->cfg;
    g->t_start = now;
    g->t_window = now + (uint64_t)(cfg->warmup_s * 1e9);
    g->t_end = g->t_window + (uint64_t)(cfg->duration_s * 1e9);
    g->t_drain = g->t_end + (uint64_t)cfg->drain_ms * 1000000ull;
    g->phase = PH_RUN;
    for (unsigned k = 0; k < cfg->nodes; k++) {
        ld_node *ln = &g->nodes[k];
        if (cfg->rate > 0) {
            /* The nodes' schedules interleave: together they are one stream of cfg->rate calls/s. */
            ld_pace_init(&ln->pace, now + (uint64_t)(k * 1e9 / cfg->rate), cfg->rate / cfg->nodes);
            if (cfg->request == LD_CAST)
                slot_take(ln);
            pump(ln, now);
        } else {
            for (unsigned j = 0; j < cfg->inflight; j++)
                issue(slot_take(ln), now);
        }
    }
}

static int all_connected(ld_gen *g)
{
    for (unsigned k = 0; k < g->cfg->nodes; k++) {
        cn_node_stats st;
        cn_node_get_stats(g->nodes[k].node, &st);
        if (st.connections == 0)
            return 0;
    }
    return 1;
}

static void snapshot(ld_gen *g, int open)
{
    double cpu = self_cpu_s();
    double srv = g->cfg->server_pid > 0 ? proc_cpu_s(g->cfg->server_pid) : -1;
    if (open) {
        g->cpu0 = cpu;
        g->srv0 = srv;
        g->replies0 = g->replies;
        g->snap_open = 1;
        return;
    }
    uint64_t n = g->replies - g->replies0;
    if (g->cfg->request == LD_CAST)
        n = g->res->calls;
    double span = (double)(g->t_end - g->t_window) / 1e9;
    g->res->gen_cpu_us_per_call = n ? (cpu - g->cpu0) * 1e6 / (double)n : 0;
    g->res->server_cpu_us_per_call = srv >= 0 && g->srv0 >= 0 && n ? (srv - g->srv0) * 1e6 / (double)n : -1;
    g->res->server_cpu_share = srv >= 0 && g->srv0 >= 0 ? (srv - g->srv0) / span : -1;
}

/* The calls due in the window that never got a reply: recorded as waiting until now. */
static void count_unfinished(ld_gen *g, uint64_t now)
{
    for (unsigned k = 0; k < g->cfg->nodes; k++) {
        ld_node *ln = &g->nodes[k];
        for (unsigned j = 0; j < ln->spawned; j++)
            if (ln->slots[j].busy && in_window(g, ln->slots[j].due_ns)) {
                ld_hist_record(g->res->hist, now - ln->slots[j].due_ns);
                g->res->unfinished++;
            }
        if (g->cfg->rate <= 0 || g->cfg->request == LD_CAST)
            continue;
        uint64_t due;
        while (ld_pace_take(&ln->pace, now, g->t_end, &due))
            if (in_window(g, due)) {
                ld_hist_record(g->res->hist, now - due);
                g->res->unfinished++;
            }
    }
}

static void node_closed(cn_node *node)
{
    ld_node *ln = cn_node_data(node);
    ln->g->closing--;
}

static void finish(ld_gen *g, uint64_t now)
{
    count_unfinished(g, now);
    g->phase = PH_DONE;
    uv_timer_stop(&g->tick);
    uv_close((uv_handle_t *)&g->tick, NULL);
    uv_close((uv_handle_t *)&g->pause, NULL);
    if (g->tfd >= 0)
        uv_close((uv_handle_t *)&g->tpoll, NULL);
    for (unsigned k = 0; k < g->cfg->nodes; k++)
        if (g->nodes != NULL && g->nodes[k].node != NULL) {
            g->closing++;
            cn_node_close(g->nodes[k].node, node_closed);
        }
}

static int drained(const ld_gen *g, uint64_t now)
{
    if (g->inflight > 0)
        return 0;
    for (unsigned k = 0; g->cfg->rate > 0 && k < g->cfg->nodes; k++)
        if (ld_pace_backlog(&g->nodes[k].pace, now, g->t_end) > 0)
            return 0;
    return 1;
}

static void on_tick(uv_timer_t *t)
{
    ld_gen *g = t->data;
    uint64_t now = uv_hrtime();
    if (g->phase == PH_CONNECT) {
        if (all_connected(g))
            start_load(g, now);
        else if (now - g->t_begin > CONNECT_LIMIT_NS) {
            fprintf(stderr, "cnode-load: not every node connected to %s within 10 s\n", g->cfg->target);
            g->failed = 1;
            finish(g, now);
        }
        return;
    }
    if (!g->snap_open && now >= g->t_window)
        snapshot(g, 1);
    if (g->phase == PH_RUN && now >= g->t_end) {
        snapshot(g, 0);
        g->phase = PH_DRAIN;
    }
    /* Timeouts are seconds long: a look every 100 ms is enough, and scanning every slot costs. */
    if (++g->ticks % (100 / TICK_MS) == 0)
        check_timeouts(g, now);
    if (g->phase == PH_DRAIN && (drained(g, now) || now >= g->t_drain))
        finish(g, now);
}

/* ---- Set-up ---- */

static void node_ready(cn_node *node, int status)
{
    ld_node *ln = cn_node_data(node);
    if (status < 0) {
        fprintf(stderr, "cnode-load: node %s did not start: %d\n", cn_node_name(node), status);
        return;
    }
    cn_node_connect(node, ln->g->cfg->target);
}

static int start_nodes(ld_gen *g)
{
    const ld_config *cfg = g->cfg;
    char prefix[64], name[300];
    if (cfg->name == NULL)
        snprintf(prefix, sizeof prefix, "load%ld", (long)getpid());
    g->nodes = cn_calloc(cfg->nodes, sizeof *g->nodes);
    for (unsigned k = 0; k < cfg->nodes; k++) {
        ld_node *ln = &g->nodes[k];
        ln->g = g;
        ln->idx = k;
        ln->slots = cn_calloc(cfg->inflight, sizeof *ln->slots);
        snprintf(name, sizeof name, "%s_%u@%s", cfg->name ? cfg->name : prefix, k, cfg->host);
        /* The callers dial and are never dialed: they need no epmd registration. */
        cn_node_config nc = {.name = name, .cookie = cfg->cookie, .no_epmd = 1,
                             .busy_poll_us = cfg->busy_poll_us};
        int rc = cn_node_new(&g->loop, &nc, &ln->node);
        if (rc < 0) {
            fprintf(stderr, "cnode-load: node %s: %d\n", name, rc);
            return -1;
        }
        cn_node_set_data(ln->node, ln);
        if ((rc = cn_node_start(ln->node, node_ready)) < 0) {
            fprintf(stderr, "cnode-load: node %s did not start: %d\n", name, rc);
            return -1;
        }
    }
    return 0;
}

/*
 * Interrupt moderation, as the C node does it (cnode/sched.c): after a turn
 * that took many replies, pause before polling again, so the next turn finds
 * more of them per read and write. Without it the generator spends more per
 * call than the C node it measures. It runs after the nodes' own ends of turn,
 * which have written the turn's calls, so no call waits for it.
 */
static void on_pause(uv_check_t *h)
{
    ld_gen *g = h->data;
    uint64_t handled = g->replies - g->replies_mark;
    g->replies_mark = g->replies;
    if (g->cfg->coalesce_us == 0 || handled < LD_COALESCE_MIN || g->phase != PH_RUN)
        return;
    struct timespec ts = {0, (long)g->cfg->coalesce_us * 1000};
    nanosleep(&ts, NULL);
}

static int start_timers(ld_gen *g)
{
    /* libuv runs check handles newest first: this one, started before any node's, runs last. */
    uv_check_init(&g->loop, &g->pause);
    g->pause.data = g;
    uv_check_start(&g->pause, on_pause);
    uv_timer_init(&g->loop, &g->tick);
    g->tick.data = g;
    uv_timer_start(&g->tick, on_tick, TICK_MS, TICK_MS);
    g->tfd = -1;
    if (g->cfg->rate <= 0)
        return 0;
    g->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (g->tfd < 0) {
        perror("cnode-load: timerfd_create");
        return -1;
    }
    uv_poll_init(&g->loop, &g->tpoll, g->tfd);
    g->tpoll.data = g;
    uv_poll_start(&g->tpoll, UV_READABLE, on_timerfd);
    return 0;
}

static void free_gen(ld_gen *g)
{
    for (unsigned k = 0; g->nodes != NULL && k < g->cfg->nodes; k++) {
        if (g->nodes[k].node != NULL)
            cn_node_free(g->nodes[k].node);
        free(g->nodes[k].slots);
    }
    free(g->nodes);
    if (g->tfd >= 0)
        close(g->tfd);
    uv_loop_close(&g->loop);
}

int ld_run(const ld_config *cfg, ld_result *res)
{
    ld_hist *h = res->hist;
    memset(res, 0, sizeof *res);
    res->hist = h;
    ld_hist_reset(h);
    res->server_cpu_us_per_call = -1;
    res->server_cpu_share = -1;
    ld_gen *g = cn_calloc(1, sizeof *g);
    g->cfg = cfg;
    g->res = res;
    g->server = cfg->request == LD_CHECK_RATE ? "rate_limiter" : "counter";
    g->t_begin = uv_hrtime();
    uv_loop_init(&g->loop);
    int rc = start_timers(g) < 0 || start_nodes(g) < 0 ? -1 : 0;
    if (rc < 0)
        finish(g, uv_hrtime());
    uv_run(&g->loop, UV_RUN_DEFAULT);
    if (g->failed)
        rc = -1;
    res->window_s = (double)(g->t_end - g->t_window) / 1e9;
    res->achieved = res->window_s > 0 ? (double)res->calls / res->window_s : 0;
    free_gen(g);
    free(g);
    return rc;
}
