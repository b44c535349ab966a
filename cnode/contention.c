/*
 * The run-delay test for busy polling: see contention.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "cnode/contention.h"
#include "cnode/error.h"

int cn_contention_update(cn_contention *c, uint64_t now, uint64_t run_delay)
{
    if (c->sampled_at != 0 && now > c->sampled_at && run_delay >= c->run_delay) {
        uint64_t wall = now - c->sampled_at;
        uint64_t waited = run_delay - c->run_delay;
        c->contended = waited > wall / 1000 * CN_CONTENTION_PERMILLE;
    }
    c->sampled_at = now;
    c->run_delay = run_delay;
    return c->contended;
}

/* The file is "<cpu time ns> <run delay ns> <timeslices>\n". */
int cn_contention_read(int fd, uint64_t *out)
{
    char text[96];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    if (n < 0)
        return -errno;
    if (n == 0)
        return CN_EDECODE;
    text[n] = '\0';
    char *end;
    (void)strtoull(text, &end, 10);
    if (end == text || *end != ' ')
        return CN_EDECODE;
    char *delay = end + 1;
    unsigned long long v = strtoull(delay, &end, 10);
    if (end == delay || *end != ' ')
        return CN_EDECODE;
    *out = v;
    return 0;
}
