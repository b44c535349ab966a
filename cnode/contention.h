/*
 * Is a spare core there to spin on? A loop that busy-polls keeps a core busy
 * while it waits for its callers' next requests. That pays when the core would
 * otherwise be idle, and costs the callers when they share the machine with us
 * and need every core: on a 2-core machine, a co-located BEAM caller's two
 * schedulers and our spin make three runnable threads on two cores.
 *
 * The kernel tells us directly: a thread's run delay (/proc/self/schedstat,
 * field 2) is the time it spent runnable but waiting for a CPU. While we spin
 * we are always runnable, so a run delay that grows by more than a small
 * share of the wall time means another thread wanted our core. cn_contention
 * samples it at most every CN_CONTENTION_SAMPLE_NS and says whether the last
 * sample was contended; the loop spins only while it was not.
 */
#ifndef CN_CONTENTION_H
#define CN_CONTENTION_H

#include <stdint.h>

/* How often the run delay is read: cheap (one pread), not every turn. */
#define CN_CONTENTION_SAMPLE_NS 10000000ULL
/*
 * Run delay above this share of the sample's wall time (in 1/1000) is
 * contention. A thread alone on its core sees well under 1 %: the short waits
 * of each wakeup. Sharing its core with one busy thread, about half.
 */
#define CN_CONTENTION_PERMILLE 50

typedef struct cn_contention {
    uint64_t sampled_at;  /* when run_delay was read, ns; 0: never */
    uint64_t run_delay;   /* the run delay read then, ns */
    int contended;        /* the last sample's verdict */
} cn_contention;

/*
 * Feeds one reading: now (a monotonic clock, ns) and the thread's run delay
 * (ns, monotonic). The first reading only sets the mark. Returns the verdict,
 * also kept in c->contended.
 */
int cn_contention_update(cn_contention *c, uint64_t now, uint64_t run_delay);

/*
 * Reads the calling thread's run delay from fd, an open
 * /proc/thread-self/schedstat. Returns 0 and the delay in *out, or a negative
 * error (the file is unreadable or not the format: the caller then treats the
 * core as spare, as before this check existed).
 */
int cn_contention_read(int fd, uint64_t *out);

#endif
