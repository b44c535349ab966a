#include <assert.h>
#include <math.h>

#include "load/pace.h"

void ld_pace_init(ld_pace *p, uint64_t start_ns, double rate)
{
    assert(rate > 0);
    p->start_ns = start_ns;
    p->rate = rate;
    p->next = 0;
}

uint64_t ld_pace_due(const ld_pace *p, uint64_t i)
{
    return p->start_ns + (uint64_t)((long double)i * 1e9L / (long double)p->rate);
}

uint64_t ld_pace_next_due(const ld_pace *p)
{
    return ld_pace_due(p, p->next);
}

int ld_pace_take(ld_pace *p, uint64_t now_ns, uint64_t end_ns, uint64_t *due)
{
    uint64_t d = ld_pace_next_due(p);
    if (d > now_ns || d >= end_ns)
        return 0;
    p->next++;
    *due = d;
    return 1;
}

uint64_t ld_pace_backlog(const ld_pace *p, uint64_t now_ns, uint64_t end_ns)
{
    uint64_t limit = now_ns < end_ns ? now_ns : end_ns - 1;
    if (end_ns == 0 || limit < p->start_ns)
        return 0;
    /* The calls due by limit are 0 .. floor((limit - start) * rate / 1e9); check the edge exactly. */
    uint64_t n = (uint64_t)floorl((long double)(limit - p->start_ns) * (long double)p->rate / 1e9L) + 1;
    while (n > 0 && ld_pace_due(p, n - 1) > limit)
        n--;
    while (ld_pace_due(p, n) <= limit)
        n++;
    return n > p->next ? n - p->next : 0;
}
