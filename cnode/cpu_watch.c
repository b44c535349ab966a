/* Whether the machine has a core to spare for our busy polling: see cpu_watch.h. */
#include "cnode/cpu_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * How much of /proc/stat is read. Its cpu lines come first (about 100 bytes
 * each), so this holds those of some 300 CPUs; on a bigger machine the CPUs
 * whose lines come later are not counted, and the verdict is that of the rest.
 */
#define STAT_READ 32768

/* A "cpuN" line's CPU number at p (after "cpu"), or -1 for the summary line "cpu ". */
static long cpu_number(const char *p, const char *end, const char **after)
{
    long n = 0;
    const char *q = p;
    while (q < end && *q >= '0' && *q <= '9' && n < CPU_SETSIZE)
        n = n * 10 + (*q++ - '0');
    *after = q;
    return q == p ? -1 : n;
}

/* The first 8 counters of a cpu line from p to the line's end: 0, or -EINVAL. */
static int counters(const char *p, const char *eol, uint64_t v[8])
{
    for (int i = 0; i < 8; i++) {
        while (p < eol && *p == ' ')
            p++;
        if (p == eol || *p < '0' || *p > '9')
            return -EINVAL;
        uint64_t x = 0;
        while (p < eol && *p >= '0' && *p <= '9') {
            if (x > (UINT64_MAX - 9) / 10)
                return -EINVAL;
            x = x * 10 + (uint64_t)(*p++ - '0');
        }
        v[i] = x;
    }
    return 0;
}

int cn_cpu_ticks_parse(const char *text, size_t len, const cpu_set_t *cpus, cn_cpu_ticks *out)
{
    const char *p = text, *end = text + len;
    cn_cpu_ticks t = {0, 0, 0};
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            eol = end;
        const char *q;
        long cpu;
        if (eol - p > 3 && memcmp(p, "cpu", 3) == 0 && (cpu = cpu_number(p + 3, eol, &q)) >= 0 &&
            cpu < CPU_SETSIZE && CPU_ISSET((int)cpu, cpus)) {
            /* user nice system idle iowait irq softirq steal (guest is within user) */
            uint64_t v[8];
            if (counters(q, eol, v) < 0)
                return -EINVAL;
            uint64_t busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
            t.busy += busy;
            t.total += busy + v[3] + v[4];
            t.ncpu++;
        }
        p = eol + 1;
    }
    if (t.ncpu == 0)
        return -EINVAL;
    *out = t;
    return 0;
}

int cn_cpu_spare(const cn_cpu_ticks *before, const cn_cpu_ticks *after, uint64_t self_ns, uint64_t wall_ns)
{
    if (after->ncpu != before->ncpu || after->total <= before->total || after->busy < before->busy ||
        wall_ns == 0)
        return 1;
    double busy_cpus = (double)(after->busy - before->busy) / (double)(after->total - before->total) * after->ncpu;
    double self_cpus = (double)self_ns / (double)wall_ns;
    double others = busy_cpus - self_cpus;
    return after->ncpu - others >= 1.0;
}

void cn_cpu_watch_init(cn_cpu_watch *w, const char *stat_path)
{
    memset(w, 0, sizeof *w);
    w->stat_path = stat_path;
    w->interval_ns = CN_CPU_WATCH_INTERVAL_NS;
    w->spare = 1;
    if (sched_getaffinity(0, sizeof w->cpus, &w->cpus) < 0) {
        CPU_ZERO(&w->cpus);
        for (int i = 0; i < CPU_SETSIZE; i++)
            CPU_SET(i, &w->cpus);
    }
}

static uint64_t process_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The ticks of our CPUs now, from whole lines of the file's start: 0, or < 0. */
static int read_ticks(const cn_cpu_watch *w, cn_cpu_ticks *out)
{
    char buf[STAT_READ];
    int fd = open(w->stat_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf && (n = read(fd, buf + len, sizeof buf - len)) > 0)
        len += (size_t)n;
    close(fd);
    while (len > 0 && buf[len - 1] != '\n')
        len--;
    return cn_cpu_ticks_parse(buf, len, &w->cpus, out);
}

int cn_cpu_watch_spare(cn_cpu_watch *w, uint64_t now_ns)
{
    if (w->stat_path == NULL || (w->at_ns != 0 && now_ns - w->at_ns < w->interval_ns))
        return w->spare;
    cn_cpu_ticks t;
    if (read_ticks(w, &t) < 0)
        return w->spare;
    uint64_t self = process_cpu_ns();
    if (w->at_ns != 0)
        w->spare = cn_cpu_spare(&w->ticks, &t, self - w->self_ns, now_ns - w->at_ns);
    w->at_ns = now_ns;
    w->self_ns = self;
    w->ticks = t;
    w->samples++;
    return w->spare;
}
