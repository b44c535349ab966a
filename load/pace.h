/*
 * Open-loop pacing: when each call of a fixed-rate stream is due.
 *
 * Call i (from 0) of a stream of `rate` calls per second that starts at
 * start_ns is due at start_ns + i * 1e9 / rate, computed from i each time, so
 * rounding never accumulates into drift. A call is measured from that time,
 * not from when it was actually sent: a generator that fell behind (all its
 * calls in flight, or its loop busy) still charges the wait to the server
 * under test, which is how coordinated omission is avoided.
 *
 * Pure: the caller supplies every time.
 */
#ifndef LD_PACE_H
#define LD_PACE_H

#include <stdint.h>

typedef struct ld_pace {
    uint64_t start_ns;
    double rate;        /* calls per second, > 0 */
    uint64_t next;      /* the index of the next call to send */
} ld_pace;

/* A stream of rate calls/s whose call 0 is due at start_ns. */
void ld_pace_init(ld_pace *p, uint64_t start_ns, double rate);
/* When call i is due. */
uint64_t ld_pace_due(const ld_pace *p, uint64_t i);
/* When the next call is due. */
uint64_t ld_pace_next_due(const ld_pace *p);
/*
 * If the next call is due by now and before end_ns, takes it: returns 1 and its
 * due time in *due. Otherwise 0 and nothing changes.
 */
int ld_pace_take(ld_pace *p, uint64_t now_ns, uint64_t end_ns, uint64_t *due);
/* How many calls are due by now (and before end_ns) and not yet taken. */
uint64_t ld_pace_backlog(const ld_pace *p, uint64_t now_ns, uint64_t end_ns);

#endif
