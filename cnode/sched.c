/*
 * The end of each loop turn, and how the loop waits for the next one.
 *
 * One loop turn: libuv runs timers, then reads (each read handles every
 * complete frame at once), then our check handle (on_check here), which
 * delivers queued local messages, runs the flush hooks (a journal's group
 * commit: the turn's records are made durable before the replies that
 * acknowledge them leave), writes every connection's output in one write, frees the processes that exited during the turn, and a batch of
 * what a lost connection left (cn__proc_reclaim); connections that used up
 * their read budget in the turn read again (cn__tcp_resume). The idle handle
 * is started whenever work is queued (cn__node_wake), so the loop polls
 * without blocking until it is done.
 *
 * Then the choice of how to wait: after a turn that served many requests the
 * loop pauses briefly (coalescing; longer after a turn of casts that answered
 * nobody), after a lighter one it keeps polling for a
 * while (busy polling), and a quiet loop sleeps in epoll.
 */
#include <sched.h>
#include <time.h>

#include "cnode/node_int.h"

/* Local messages delivered per turn before I/O gets its turn again. */
#define RUN_QUEUE_BUDGET 4096

/*
 * A turn that served at least this many requests comes from busy peers: the
 * node pauses (coalesce) instead of polling on. Smaller turns poll on (busy
 * poll), since a pause would only add its length to the callers' latency.
 */
#define COALESCE_MIN_BATCH 8

/*
 * ... but only while there are many callers: remote processes hold at least
 * COALESCE_MIN_PEAK monitors on ours (a GenServer.call monitors the server
 * from before its request until after its reply, so this counts the callers
 * in a call, whether or not we pause), or some turn in the last PEAK_WINDOW_NS
 * served that many requests (casts, which monitor nothing). A few callers (8
 * processes of one BEAM, each waiting for its reply) send nothing more during
 * a pause: every one of them is already answered, so the pause only idles the
 * node and adds its length to every call. Side by side in one bench run, 8
 * callers: 0.56 and 0.64 of the BEAM peer's calls/s pausing, 0.99 and 1.05
 * not. Many callers keep requests coming, and there the pause batches them.
 * The turn size alone is not the test: at 64 callers a node that stopped
 * pausing answers in small turns and never sees a big one again.
 */
#define COALESCE_MIN_PEAK 16
#define PEAK_WINDOW_NS 1000000000ULL

/*
 * Interrupt moderation. When one turn handled requests from many callers at
 * once, the peers are sending faster than we wake: pausing a little before the
 * next poll lets more requests arrive per read, so each read, write and wakeup
 * (most of the CPU a call costs, on loopback mostly kernel TCP work) serves
 * many calls, and the CPU goes to the callers meanwhile. The pause comes after
 * the turn's writes, so no reply waits for it.
 *
 * After a heavy turn, this many of the next light turns that serve requests
 * pause too. Many callers' requests arrive in waves: the turns between two big
 * ones serve stragglers, a few calls each, and polling on after them served the
 * next stragglers a few per turn, each turn paying its read, its write (TLS
 * record included) and its epoll calls for a few calls: at 64 callers over TLS
 * that was about a fifth of the node's CPU. A lone caller after a wave is back
 * to busy polling after these turns.
 */
#define COALESCE_HOLD_TURNS 8

/* The largest turn of the last PEAK_WINDOW_NS or so: how many callers are busy. */
static void note_peak(cn_node *node, uint64_t handled, uint64_t now)
{
    if (handled >= node->peak_batch || now - node->peak_at > PEAK_WINDOW_NS) {
        node->peak_batch = handled;
        node->peak_at = now;
    }
}

static int will_pause(const cn_node *node, uint64_t handled)
{
    if (node->coalesce_us == 0 || handled == 0)
        return 0;
    if (node->peak_batch < COALESCE_MIN_PEAK && node->stats.monitors < COALESCE_MIN_PEAK)
        return 0;
    return handled >= COALESCE_MIN_BATCH || node->busy_turns > 0;
}

/*
 * A heavy turn that queued no frame for any peer, while no remote process
 * monitors one of ours (a GenServer.call monitors its server until its reply),
 * took only casts: nobody waits on the node for an answer, so it pauses longer
 * (cast_pause_us) and each read takes more of the stream. What that buys is on
 * the sender's side: while we pause, a BEAM caster's TCP stops at its
 * congestion window and carries the casts that follow several to a segment.
 * Each segment saved is a transmit and our socket's receive processing that
 * its kernel would have run on the caster's core, inside its writev. A call that arrives meanwhile waits
 * for the pause, as on a BEAM server it waits behind the casts in the mailbox.
 *
 * A call in flight keeps the short pause, whatever the turn: its answer may be
 * due from work the loop finishes (a power-mode journal's sync on the thread
 * pool), and a longer pause would hold it.
 */
static unsigned pause_us(const cn_node *node, uint64_t handled, int queued)
{
    if (!queued && handled >= COALESCE_MIN_BATCH && node->stats.monitors == 0 &&
        node->cast_pause_us > node->coalesce_us)
        return node->cast_pause_us;
    return node->coalesce_us;
}

static void coalesce(cn_node *node, uint64_t handled, int queued)
{
    if (!will_pause(node, handled))
        return;
    if (handled >= COALESCE_MIN_BATCH)
        node->busy_turns = COALESCE_HOLD_TURNS;
    else
        node->busy_turns--;
    unsigned us = pause_us(node, handled, queued);
    node->stats.pauses++;
    if (us != node->coalesce_us)
        node->stats.cast_pauses++;
    struct timespec ts = {0, (long)us * 1000};
    nanosleep(&ts, NULL);
}

/*
 * Busy polling, as the BEAM's schedulers spin before they sleep (+sbwt). Where
 * waking a sleeping process costs tens of microseconds (an inter-processor
 * interrupt, dearer still in a virtual machine: 42 us for a pipe round trip
 * across cores on the machines this was measured on, 5 us on one core), the
 * next request of a caller that is waiting for its reply is better met by a
 * loop that is still polling. After a turn that served requests and does not
 * pause, the loop polls with a zero timeout for busy_poll_us; a
 * quiet node then sleeps in epoll as before.
 *
 * A polling turn that found nothing yields the core (sched_yield), as the
 * BEAM's spinning schedulers do. With a core to spare the call returns at
 * once; on a machine with no idle core, the threads of the callers we wait
 * for (a co-located BEAM's schedulers, its poll thread woken by our reply)
 * run now instead of after our time slice. Side by side with 8 callers on two
 * cores: 32 305 and 32 464 calls/s against 29 190 and 29 524 without the
 * yield, the BEAM peer 29 720 and 30 039; one caller and 64 unchanged.
 *
 * With cpu_stat_path, the loop spins only while the others leave a core to
 * spare (cnode/cpu_watch.h), and otherwise sleeps in epoll after each turn.
 * Under SCHED_BATCH (the program's default), 8 callers of a co-located BEAM
 * node keep more than one of two cores busy, and the spin, yields and all,
 * cost them more than the wakeups it saved: 37 260 calls/s not spinning
 * against 32 237 spinning 200 us, the BEAM peer 30 074. One caller leaves a
 * core, and there spinning still paid (18 126 against 17 243).
 */
static int keep_polling(cn_node *node, uint64_t handled, uint64_t now)
{
    if (node->busy_poll_us == 0)
        return 0;
    if (will_pause(node, handled))
        node->spin_until = 0;
    else if (handled > 0) {
        if (cn_cpu_watch_spare(&node->cpu_watch, now))
            node->spin_until = now + (uint64_t)node->busy_poll_us * 1000;
        else {
            node->spin_until = 0;
            node->stats.no_spare++;
        }
    }
    if (now >= node->spin_until)
        return 0;
    node->stats.polls++;
    if (handled == 0) {
        node->stats.yields++;
        sched_yield();
    }
    return 1;
}

static void on_check(uv_check_t *h)
{
    cn_node *node = h->data;
    cn__proc_run_queue(node, RUN_QUEUE_BUDGET);
    cn__node_before_flush(node);
    cn__conn_flush_dirty(node);
    cn__proc_free_zombies(node);
    int reclaiming = cn__proc_reclaim(node);
    node->turn++;
    /*
     * A connection that stopped at its read budget has more requests waiting
     * already: a pause would let nothing more arrive per read, only idle the
     * core. With one busy peer it capped the node at about 64 KiB of requests
     * per pause, half a core's worth (issue 13's capacity run: 212 000 calls/s
     * with the core 62 % busy).
     */
    int more_input = node->tcp_paused != NULL;
    cn__tcp_resume(node);
    uint64_t handled = node->stats.messages_in - node->coalesce_mark;
    node->coalesce_mark = node->stats.messages_in;
    int queued = node->stats.frames_out != node->frames_mark;
    node->frames_mark = node->stats.frames_out;
    uint64_t now = uv_hrtime();
    note_peak(node, handled, now);
    if (keep_polling(node, handled, now) || node->run_queue != NULL || node->dirty != NULL || reclaiming)
        cn__node_wake(node);
    else
        uv_idle_stop(&node->idle);
    if (!more_input)
        coalesce(node, handled, queued);
}

void cn__sched_init(cn_node *node)
{
    uv_check_init(node->loop, &node->check);
    node->check.data = node;
    uv_idle_init(node->loop, &node->idle);
    node->idle.data = node;
    uv_check_start(&node->check, on_check);
}

void cn__sched_close(cn_node *node, uv_close_cb cb)
{
    uv_close((uv_handle_t *)&node->idle, cb);
    uv_close((uv_handle_t *)&node->check, cb);
}
