/*
 * The engine (load.h). One libuv loop, K caller nodes, each its own
 * distribution connection to the node under test (dialed and shaken hands
 * with by load/wire.c before the loop runs), and per node up to M slots: a
 * slot is a caller process with at most one call in flight, as each gen:call
 * caller is a process. Its frames come from the node's templates (wire.h); a
 * reply finds its slot by the reference's first id.
 *
 * Cost: the generator must cost much less per call than the servers it
 * measures, or one generator core cannot saturate one server core. So a call
 * is a template copy with a few stores patched in, a reply a walk over a few
 * tags, each node's frames of a loop turn leave in one write (on_turn_end),
 * each read takes whatever arrived, and the clock is read once per read or
 * timer wakeup, not per call. Nothing is allocated per call.
 *
 * Time: every time is uv_hrtime() nanoseconds. After every node is connected
 * (t_start) the load runs warmup_s unmeasured, then the window [t_window,
 * t_end), then a drain of at most drain_ms for calls due in the window. A
 * call's latency is from its due time (open loop: its place in the fixed-rate
 * schedule, ld_pace; closed loop: when its slot came free) to the read that
 * brought its reply, and is recorded when its due time falls in the window.
 * Replies are counted for the throughput when they arrive in the window.
 *
 * Open loop sends wake on a timerfd armed at the next due time (libuv's
 * timers have millisecond resolution, far too coarse at 50 000 calls/s); a
 * slot that frees sends the calls that became due meanwhile at once.
 */
#include <assert.h>
#include <sched.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cnode/buf.h"
#include "cnode/mem.h"
#include "load/load.h"
#include "load/pace.h"
#include "load/wire.h"

#define TICK_MS 5
/* Replies in one turn that make the generator pause (on_turn_end). */
#define LD_COALESCE_MIN 16
#define DIAL_TIMEOUT_MS 10000
/* A connection that sent nothing this long sends a tick, so the server keeps it. */
#define TICK_IDLE_NS (15 * 1000000000ull)
/* Read in chunks this large: at 150 bytes a reply, hundreds of replies a read. */
#define READ_CHUNK (256 * 1024)

typedef struct ld_gen ld_gen;
typedef struct ld_node ld_node;

typedef struct ld_slot {
    uint64_t seq;               /* the call's sequence number, in its reference */
    uint64_t due_ns, sent_ns;
    int busy;
    struct ld_slot *next_free;
} ld_slot;

struct ld_node {
    ld_gen *g;
    unsigned idx;
    int fd;
    int dead;                   /* the connection failed: no more calls on it */
    uv_poll_t poll;
    int polling;                /* poll is initialised (and must be closed) */
    unsigned events;            /* what poll waits for */
    ld_tmpl tmpl;
    ld_slot *slots;             /* cfg->inflight of them, used in order, then from the free list */
    unsigned made;
    ld_slot *free;
    unsigned busy;
    uint64_t seq;
    ld_pace pace;
    cn_buf out;                 /* frames of this turn, written at its end */
    ld_node *next_dirty;
    int dirty;
    uint64_t last_write;
    char *rbuf;                 /* bytes read and not yet whole frames */
    size_t rlen, rcap;
};

enum { PH_CONNECT, PH_RUN, PH_DRAIN, PH_DONE };

struct ld_gen {
    const ld_config *cfg;
    ld_result *res;
    uv_loop_t loop;
    ld_node *nodes;
    ld_node *dirty;             /* nodes with frames to write this turn */
    const char *server;
    int phase;
    int failed;
    uint64_t t_begin, t_start, t_window, t_end, t_drain;
    uv_timer_t tick;
    uv_check_t turn_end;        /* the end of every loop turn: writes, then a pause */
    uv_idle_t spin;             /* started while busy polling */
    uint64_t spin_until;
    uint64_t replies_mark;      /* g->replies at the last turn's end */
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
    int srv_cpu, gen_cpu;       /* the cores each is pinned to, or -1 */
    double srv_busy0, srv_total0, gen_busy0, gen_total0;
    unsigned ticks;
};

static void issue(ld_slot *s, ld_node *ln, uint64_t due, uint64_t now);

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

/* The one CPU pid may run on, or -1 when it may run on several (0: this process). */
static int pinned_cpu(long pid)
{
    cpu_set_t set;
    if (sched_getaffinity((pid_t)pid, sizeof set, &set) < 0 || CPU_COUNT(&set) != 1)
        return -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            return c;
    return -1;
}

/* cpu's busy and total time in ticks from /proc/stat; -1 when unreadable. */
static int cpu_ticks(int cpu, double *busy, double *total)
{
    char want[32], line[512];
    int n = snprintf(want, sizeof want, "cpu%d ", cpu);
    FILE *f = fopen("/proc/stat", "r");
    int rc = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        unsigned long long v[8] = {0};
        if (strncmp(line, want, (size_t)n) != 0 ||
            sscanf(line + n, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]) < 5)
            continue;
        *total = 0;
        for (int k = 0; k < 8; k++)
            *total += (double)v[k];
        *busy = *total - (double)v[3] - (double)v[4];     /* all but idle and iowait */
        rc = 0;
        break;
    }
    if (f != NULL)
        fclose(f);
    return rc;
}

/* The share of the time since the last look (busy0, total0; then updated) cpu was busy; -1 unknown. */
static double core_busy(int cpu, double *busy0, double *total0)
{
    double busy, total;
    if (cpu < 0 || cpu_ticks(cpu, &busy, &total) < 0)
        return -1;
    double share = total > *total0 ? (busy - *busy0) / (total - *total0) : -1;
    *busy0 = busy;
    *total0 = total;
    return share;
}

/* ---- Output: frames queue per node and leave at the end of the turn ---- */

static void mark_dirty(ld_node *ln)
{
    if (ln->dirty)
        return;
    ln->dirty = 1;
    ln->next_dirty = ln->g->dirty;
    ln->g->dirty = ln;
}

static char *out_room(ld_node *ln, size_t n)
{
    cn_buf_reserve(&ln->out, n);
    mark_dirty(ln);
    return ln->out.data + ln->out.len;
}

static void set_events(ld_node *ln, unsigned events);
static void node_died(ld_node *ln);

/* Writes what ln has queued; what the socket does not take waits for it to be writable. */
static void flush_node(ld_node *ln)
{
    if (ln->dead || ln->out.len == 0)
        return;
    ssize_t w = write(ln->fd, ln->out.data, ln->out.len);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        node_died(ln);
        return;
    }
    if (w > 0) {
        cn_buf_consume(&ln->out, (size_t)w);
        ln->last_write = uv_now(&ln->g->loop) * 1000000ull;   /* uv_hrtime's clock, in ms */
    }
    set_events(ln, ln->out.len > 0 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

/* ---- Slots ---- */

/* A free slot of ln; NULL when all M are busy (or the connection is gone). */
static ld_slot *slot_take(ld_node *ln)
{
    ld_slot *s = ln->free;
    if (ln->dead)
        return NULL;
    if (s != NULL)
        ln->free = s->next_free;
    else if (ln->made < ln->g->cfg->inflight)
        s = &ln->slots[ln->made++];
    return s;
}

static int slot_available(const ld_node *ln)
{
    return !ln->dead && (ln->free != NULL || ln->made < ln->g->cfg->inflight);
}

static void slot_release(ld_node *ln, ld_slot *s)
{
    s->busy = 0;
    s->next_free = ln->free;
    ln->free = s;
    ln->busy--;
    ln->g->inflight--;
}

static unsigned slot_index(const ld_node *ln, const ld_slot *s)
{
    return (unsigned)(s - ln->slots);
}

static int in_window(const ld_gen *g, uint64_t t)
{
    return t >= g->t_window && t < g->t_end;
}

/* ---- Sending ---- */

static void rearm(ld_gen *g, uint64_t at);

static void send_casts(ld_node *ln, uint64_t now)
{
    ld_gen *g = ln->g;
    uint64_t due;
    while (!ln->dead && ld_pace_take(&ln->pace, now, g->t_end, &due)) {
        memcpy(out_room(ln, ln->tmpl.cast_len), ln->tmpl.cast, ln->tmpl.cast_len);
        ln->out.len += ln->tmpl.cast_len;
        if (in_window(g, now))
            g->res->calls++;
    }
}

/* Open loop: every call of ln's schedule due by now, while it has free slots. */
static void pump(ld_node *ln, uint64_t now)
{
    ld_gen *g = ln->g;
    uint64_t due;
    if (g->cfg->request == LD_CAST)
        send_casts(ln, now);
    else
        while (slot_available(ln) && ld_pace_take(&ln->pace, now, g->t_end, &due))
            issue(slot_take(ln), ln, due, now);
    if (slot_available(ln) && ld_pace_next_due(&ln->pace) < g->t_end)
        rearm(g, ld_pace_next_due(&ln->pace));
}

/* MONITOR_P and the REG_SEND of {'$gen_call', {Pid, [alias | Ref]}, Request}, queued on ln. */
static void issue(ld_slot *s, ld_node *ln, uint64_t due, uint64_t now)
{
    ld_gen *g = ln->g;
    char req[LD_MAX_REQUEST];
    size_t req_len = ld_encode_request(g->cfg->request, g->next_id++ % g->cfg->ids, req);
    s->busy = 1;
    s->due_ns = due;
    s->sent_ns = now;
    s->seq = ++ln->seq;
    ln->busy++;
    if (++g->inflight > g->res->peak_inflight)
        g->res->peak_inflight = g->inflight;
    char *out = out_room(ln, ln->tmpl.call_len + req_len);
    ln->out.len += ld_tmpl_call(&ln->tmpl, out, slot_index(ln, s), s->seq, req, req_len);
}

/* erlang:demonitor(Ref, [flush]) after the reply or the timeout: DEMONITOR_P. */
static void demonitor(ld_node *ln, const ld_slot *s)
{
    char *out = out_room(ln, ln->tmpl.demon_len);
    ln->out.len += ld_tmpl_demonitor(&ln->tmpl, out, slot_index(ln, s), s->seq);
}

/* The slot's call is over: the next one, by the loop's rule. */
static void refill(ld_node *ln, uint64_t now)
{
    ld_gen *g = ln->g;
    if (g->phase != PH_RUN && g->phase != PH_DRAIN)
        return;
    if (g->cfg->rate > 0)
        pump(ln, now);
    else if (now < g->t_end && slot_available(ln))
        issue(slot_take(ln), ln, now, now);
}

/* A call that failed (a DOWN, or its connection lost): counted, and the slot is free again. */
static void call_failed(ld_node *ln, ld_slot *s)
{
    ln->g->res->errors++;
    slot_release(ln, s);
}

/* ---- Replies ---- */

static void complete(ld_node *ln, ld_slot *s, uint64_t now)
{
    ld_gen *g = ln->g;
    if (in_window(g, s->due_ns))
        ld_hist_record(g->res->hist, now - s->due_ns);
    if (in_window(g, now))
        g->res->calls++;
    g->replies++;
    slot_release(ln, s);
    refill(ln, now);
}

/* The busy slot a reply or DOWN is for; NULL for a stale or foreign one. */
static ld_slot *slot_of(ld_node *ln, const ld_frame_info *info)
{
    if (info->slot >= ln->made)
        return NULL;
    ld_slot *s = &ln->slots[info->slot];
    return s->busy && s->seq == info->seq ? s : NULL;
}

static void handle_frame(ld_node *ln, const char *body, size_t len, uint64_t now)
{
    ld_frame_info info;
    ld_frame_kind kind = ld_frame_read(body, len, &info);
    if (kind != LD_FRAME_REPLY && kind != LD_FRAME_DOWN)
        return;
    ld_slot *s = slot_of(ln, &info);
    if (s == NULL)
        return;
    if (kind == LD_FRAME_DOWN) {
        /* The server is gone (or was never there): the monitor fired, nothing to demonitor. */
        call_failed(ln, s);
        refill(ln, now);
        return;
    }
    if (info.rejected)
        ln->g->res->rejected++;
    demonitor(ln, s);
    complete(ln, s, now);
}

/* Every whole frame read so far; the rest stays for the next read. */
static void handle_frames(ld_node *ln, uint64_t now)
{
    size_t pos = 0;
    while (ln->rlen - pos >= 4) {
        size_t flen = cn_get_u32(ln->rbuf + pos);
        if (ln->rlen - pos - 4 < flen) {
            if (flen + 4 > ln->rcap) {
                ln->rcap = flen + 4;
                ln->rbuf = cn_realloc(ln->rbuf, ln->rcap);
            }
            break;
        }
        handle_frame(ln, ln->rbuf + pos + 4, flen, now);
        pos += 4 + flen;
    }
    if (pos > 0) {
        memmove(ln->rbuf, ln->rbuf + pos, ln->rlen - pos);
        ln->rlen -= pos;
    }
}

static void read_node(ld_node *ln)
{
    ssize_t r = read(ln->fd, ln->rbuf + ln->rlen, ln->rcap - ln->rlen);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        node_died(ln);
        return;
    }
    ln->rlen += (size_t)r;
    /* One clock read for every reply of the read: they all arrived by now. */
    handle_frames(ln, uv_hrtime());
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    ld_node *ln = h->data;
    if (status < 0) {
        node_died(ln);
        return;
    }
    if (events & UV_READABLE)
        read_node(ln);
    if ((events & UV_WRITABLE) && !ln->dead)
        flush_node(ln);
}

static void set_events(ld_node *ln, unsigned events)
{
    if (ln->events == events || ln->dead)
        return;
    ln->events = events;
    uv_poll_start(&ln->poll, (int)events, on_poll);
}

/* The connection is lost: its calls fail, and no more are made on it. */
static void node_died(ld_node *ln)
{
    if (ln->dead)
        return;
    fprintf(stderr, "cnode-load: node %u lost its connection to %s\n", ln->idx, ln->g->cfg->target);
    ln->dead = 1;
    uv_poll_stop(&ln->poll);
    for (unsigned j = 0; j < ln->made; j++)
        if (ln->slots[j].busy)
            call_failed(ln, &ln->slots[j]);
    cn_buf_reset(&ln->out);
}

/* gen:call's timeout: counted, recorded from the due time, demonitored. */
static void check_timeouts(ld_gen *g, uint64_t now)
{
    uint64_t limit = (uint64_t)g->cfg->timeout_ms * 1000000ull;
    for (unsigned k = 0; k < g->cfg->nodes; k++) {
        ld_node *ln = &g->nodes[k];
        for (unsigned j = 0; j < ln->made && ln->busy > 0; j++) {
            ld_slot *s = &ln->slots[j];
            if (!s->busy || now - s->sent_ns < limit)
                continue;
            g->res->timeouts++;
            demonitor(ln, s);
            if (in_window(g, s->due_ns))
                ld_hist_record(g->res->hist, now - s->due_ns);
            slot_release(ln, s);
            refill(ln, now);
        }
    }
}

/* A connection idle for TICK_IDLE_NS sends a tick (an empty frame), as a BEAM's would. */
static void send_ticks(ld_gen *g, uint64_t now)
{
    for (unsigned k = 0; k < g->cfg->nodes; k++) {
        ld_node *ln = &g->nodes[k];
        if (!ln->dead && now - ln->last_write > TICK_IDLE_NS) {
            memset(out_room(ln, 4), 0, 4);
            ln->out.len += 4;
            ln->last_write = now;
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
            pump(ln, now);
        } else {
            for (unsigned j = 0; j < cfg->inflight && slot_available(ln); j++)
                issue(slot_take(ln), ln, now, now);
        }
    }
}

static void snapshot(ld_gen *g, int open)
{
    double cpu = self_cpu_s();
    double srv = g->cfg->server_pid > 0 ? proc_cpu_s(g->cfg->server_pid) : -1;
    double srv_core = core_busy(g->srv_cpu, &g->srv_busy0, &g->srv_total0);
    double gen_core = core_busy(g->gen_cpu, &g->gen_busy0, &g->gen_total0);
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
    g->res->gen_cpu_share = (cpu - g->cpu0) / span;
    g->res->server_core_busy = srv_core;
    g->res->gen_core_busy = gen_core;
}

/* The calls due in the window that never got a reply: recorded as waiting until now. */
static void count_unfinished(ld_gen *g, uint64_t now)
{
    for (unsigned k = 0; g->nodes != NULL && k < g->cfg->nodes; k++) {
        ld_node *ln = &g->nodes[k];
        for (unsigned j = 0; j < ln->made; j++)
            if (ln->slots[j].busy && in_window(g, ln->slots[j].due_ns)) {
                ld_hist_record(g->res->hist, now - ln->slots[j].due_ns);
                g->res->unfinished++;
            }
        if (g->cfg->rate <= 0 || g->cfg->request == LD_CAST || g->phase == PH_CONNECT)
            continue;
        uint64_t due;
        while (ld_pace_take(&ln->pace, now, g->t_end, &due))
            if (in_window(g, due)) {
                ld_hist_record(g->res->hist, now - due);
                g->res->unfinished++;
            }
    }
}

static void finish(ld_gen *g, uint64_t now)
{
    count_unfinished(g, now);
    g->phase = PH_DONE;
    uv_timer_stop(&g->tick);
    uv_close((uv_handle_t *)&g->tick, NULL);
    uv_close((uv_handle_t *)&g->turn_end, NULL);
    uv_close((uv_handle_t *)&g->spin, NULL);
    if (g->tfd >= 0)
        uv_close((uv_handle_t *)&g->tpoll, NULL);
    for (unsigned k = 0; g->nodes != NULL && k < g->cfg->nodes; k++)
        if (g->nodes[k].polling)
            uv_close((uv_handle_t *)&g->nodes[k].poll, NULL);
}

static int drained(const ld_gen *g, uint64_t now)
{
    if (g->inflight > 0)
        return 0;
    for (unsigned k = 0; g->cfg->rate > 0 && k < g->cfg->nodes; k++)
        if (!g->nodes[k].dead && ld_pace_backlog(&g->nodes[k].pace, now, g->t_end) > 0)
            return 0;
    return 1;
}

static void on_tick(uv_timer_t *t)
{
    ld_gen *g = t->data;
    uint64_t now = uv_hrtime();
    if (g->phase == PH_CONNECT) {
        start_load(g, now);
        return;
    }
    if (!g->snap_open && now >= g->t_window)
        snapshot(g, 1);
    if (g->phase == PH_RUN && now >= g->t_end) {
        snapshot(g, 0);
        g->phase = PH_DRAIN;
    }
    /* Timeouts are seconds long: a look every 100 ms is enough, and scanning every slot costs. */
    if (++g->ticks % (100 / TICK_MS) == 0) {
        check_timeouts(g, now);
        send_ticks(g, now);
    }
    if (g->phase == PH_DRAIN && (drained(g, now) || now >= g->t_drain))
        finish(g, now);
}

/* ---- The end of a loop turn ---- */

static void on_spin(uv_idle_t *h)
{
    (void)h;
}

/*
 * After every poll callback of the turn: each node's frames leave in one
 * write. Then, optionally, interrupt moderation as the C node does it
 * (cnode/sched.c): after a turn that took many replies, pause before polling
 * again, so the next turn finds more of them per read and write; or busy
 * polling after a lighter one. Neither by default.
 */
static void on_turn_end(uv_check_t *h)
{
    ld_gen *g = h->data;
    while (g->dirty != NULL) {
        ld_node *ln = g->dirty;
        g->dirty = ln->next_dirty;
        ln->dirty = 0;
        flush_node(ln);
    }
    uint64_t handled = g->replies - g->replies_mark;
    g->replies_mark = g->replies;
    if (g->phase != PH_RUN)
        return;
    if (g->cfg->coalesce_us > 0 && handled >= LD_COALESCE_MIN) {
        struct timespec ts = {0, (long)g->cfg->coalesce_us * 1000};
        nanosleep(&ts, NULL);
        return;
    }
    if (g->cfg->busy_poll_us == 0)
        return;
    uint64_t now = uv_hrtime();
    if (handled > 0)
        g->spin_until = now + (uint64_t)g->cfg->busy_poll_us * 1000;
    if (now < g->spin_until)
        uv_idle_start(&g->spin, on_spin);
    else
        uv_idle_stop(&g->spin);
}

/* ---- Set-up ---- */

static uint32_t random_creation(unsigned k)
{
    uint64_t x = uv_hrtime() ^ ((uint64_t)getpid() << 20) ^ ((uint64_t)k * 0x9e3779b97f4a7c15ull);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    /* As the runtime's node before epmd answers: a random creation, never one of the small old ones. */
    return (uint32_t)x | 4;
}

/* Dials every node's connection, one after the other, before the loop runs. */
static int start_nodes(ld_gen *g)
{
    const ld_config *cfg = g->cfg;
    char prefix[64], name[300], err[256];
    if (cfg->name == NULL)
        snprintf(prefix, sizeof prefix, "load%ld", (long)getpid());
    g->nodes = cn_calloc(cfg->nodes, sizeof *g->nodes);
    for (unsigned k = 0; k < cfg->nodes; k++) {
        ld_node *ln = &g->nodes[k];
        ln->g = g;
        ln->idx = k;
        ln->fd = -1;
        ln->slots = cn_calloc(cfg->inflight, sizeof *ln->slots);
        ln->rcap = READ_CHUNK;
        ln->rbuf = cn_malloc(ln->rcap);
        cn_buf_init(&ln->out);
    }
    for (unsigned k = 0; k < cfg->nodes; k++) {
        ld_node *ln = &g->nodes[k];
        snprintf(name, sizeof name, "%s_%u@%s", cfg->name ? cfg->name : prefix, k, cfg->host);
        uint32_t creation = random_creation(k);
        /* The callers dial and are never dialed: they need no epmd registration. */
        ln->fd = ld_dial(cfg->target, name, cfg->cookie, creation, DIAL_TIMEOUT_MS, err, sizeof err);
        if (ln->fd < 0) {
            fprintf(stderr, "cnode-load: node %s could not connect to %s: %s\n", name, cfg->target, err);
            return -1;
        }
        ld_tmpl_init(&ln->tmpl, name, creation, g->server);
        ln->last_write = uv_hrtime();
        uv_poll_init(&g->loop, &ln->poll, ln->fd);     /* makes the socket non-blocking */
        ln->polling = 1;
        ln->poll.data = ln;
        set_events(ln, UV_READABLE);
    }
    return 0;
}

static int start_timers(ld_gen *g)
{
    uv_check_init(&g->loop, &g->turn_end);
    g->turn_end.data = g;
    uv_check_start(&g->turn_end, on_turn_end);
    uv_idle_init(&g->loop, &g->spin);
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
        ld_node *ln = &g->nodes[k];
        if (ln->fd >= 0)
            close(ln->fd);
        ld_tmpl_free(&ln->tmpl);
        cn_buf_free(&ln->out);
        free(ln->rbuf);
        free(ln->slots);
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
    res->server_core_busy = res->gen_core_busy = -1;
    ld_gen *g = cn_calloc(1, sizeof *g);
    g->cfg = cfg;
    g->srv_cpu = cfg->server_pid > 0 ? pinned_cpu(cfg->server_pid) : -1;
    g->gen_cpu = pinned_cpu(0);
    g->res = res;
    g->server = cfg->request == LD_CHECK_RATE ? "rate_limiter" : "counter";
    g->t_begin = uv_hrtime();
    uv_loop_init(&g->loop);
    int rc = start_timers(g) < 0 || start_nodes(g) < 0 ? -1 : 0;
    if (rc < 0) {
        g->failed = 1;
        finish(g, uv_hrtime());
    }
    uv_run(&g->loop, UV_RUN_DEFAULT);
    if (g->failed)
        rc = -1;
    res->window_s = (double)(g->t_end - g->t_window) / 1e9;
    res->achieved = res->window_s > 0 ? (double)res->calls / res->window_s : 0;
    free_gen(g);
    free(g);
    return rc;
}
