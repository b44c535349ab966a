/*
 * Whether the machine has a core to spare for our busy polling.
 *
 * The loop busy-polls after a light turn (cnode/sched.c) so that a caller's
 * next request is read without the cost of waking us. That spin is a whole
 * core. Where one is idle it costs nobody anything; where the CPUs we may run
 * on are busy with other processes (a co-located BEAM node calling us from 8
 * processes keeps more than one of two cores busy), it takes a core from the
 * very callers we wait for. The watch tells the two apart from /proc/stat:
 * over the last interval, the CPU time of the CPUs in our affinity mask that
 * was busy, minus our own process's CPU time, is what the others used; a core
 * is to spare when that leaves at least one whole CPU.
 *
 * Sampling costs a read of /proc/stat (a few microseconds on a small machine),
 * once per CN_CPU_WATCH_INTERVAL_NS at most, and only when the loop is about
 * to spin. A machine without /proc/stat (or one we cannot parse) always has a
 * core to spare: the loop then spins as it did without the watch.
 */
#ifndef CN_CPU_WATCH_H
#define CN_CPU_WATCH_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>

/* How long one verdict lasts: 20 ticks of /proc/stat per CPU at USER_HZ 100. */
#define CN_CPU_WATCH_INTERVAL_NS 200000000ULL

typedef struct cn_cpu_ticks {
    uint64_t busy;  /* user, nice, system, irq, softirq and steal of the CPUs counted */
    uint64_t total; /* busy plus idle and iowait */
    int ncpu;       /* CPUs counted */
} cn_cpu_ticks;

typedef struct cn_cpu_watch {
    const char *stat_path; /* NULL: no watch, always a core to spare */
    cpu_set_t cpus;        /* the CPUs we may run on, at init */
    uint64_t interval_ns;
    uint64_t at_ns;        /* the last sample: when (uv_hrtime), 0 before the first */
    uint64_t self_ns;      /* our process's CPU time then */
    cn_cpu_ticks ticks;    /* /proc/stat then */
    int spare;             /* the verdict of the last interval */
    uint64_t samples;      /* samples taken */
} cn_cpu_watch;

/*
 * The busy and total ticks of the CPUs in cpus, from the text of /proc/stat
 * (len bytes, need not end in NUL). 0, or -EINVAL when the text has no line
 * for any of them or a line of theirs does not parse.
 */
int cn_cpu_ticks_parse(const char *text, size_t len, const cpu_set_t *cpus, cn_cpu_ticks *out);

/*
 * The verdict for an interval: 1 when the others left at least one whole CPU,
 * that is, when ncpu - (busy/total of after - before) x ncpu + self_ns/wall_ns
 * is 1 or more, where self_ns is our process's CPU time over the interval and
 * wall_ns its length. 1 too when the interval has no ticks (too short, or the
 * counters went backwards).
 */
int cn_cpu_spare(const cn_cpu_ticks *before, const cn_cpu_ticks *after, uint64_t self_ns, uint64_t wall_ns);

/* stat_path NULL turns the watch off. The CPUs are those of sched_getaffinity now. */
void cn_cpu_watch_init(cn_cpu_watch *w, const char *stat_path);

/*
 * Whether a core is to spare, as of the last interval; samples again first
 * when CN_CPU_WATCH_INTERVAL_NS passed since the last sample. now_ns is
 * uv_hrtime(). A failed read keeps the last verdict (initially 1).
 */
int cn_cpu_watch_spare(cn_cpu_watch *w, uint64_t now_ns);

#endif
