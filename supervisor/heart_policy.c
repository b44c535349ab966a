/*
 * The watchdog's decisions (supervisor/heart_policy.h): causes, restarts, backoff.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "supervisor/heart_policy.h"

sup_heart_cause sup_heart_classify(int wstatus, int killed_for_beats)
{
    sup_heart_cause c = {SUP_HEART_EXITED, 0};
    if (WIFEXITED(wstatus)) {
        c.code = WEXITSTATUS(wstatus);
        return c;
    }
    c.kind = SUP_HEART_SIGNALED;
    c.code = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : SIGKILL;
    /*
     * Only our own SIGKILL counts as the timeout's: a node that segfaulted
     * while the watchdog was about to kill it reports the segfault.
     */
    if (killed_for_beats && c.code == SIGKILL)
        c.kind = SUP_HEART_MISSED_BEATS;
    return c;
}

/* "SIGSEGV", or "signal 42" for one glibc has no name for. */
static void signal_name(int sig, char *buf, size_t size)
{
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev)
        snprintf(buf, size, "SIG%s", abbrev);
    else
        snprintf(buf, size, "signal %d", sig);
}

const char *sup_heart_cause_str(const sup_heart_cause *c, unsigned timeout_s, char *buf, size_t size)
{
    char sig[32];
    switch (c->kind) {
    case SUP_HEART_EXITED:
        snprintf(buf, size, "exited with status %d", c->code);
        break;
    case SUP_HEART_SIGNALED:
        signal_name(c->code, sig, sizeof sig);
        snprintf(buf, size, "was killed by %s", sig);
        break;
    case SUP_HEART_MISSED_BEATS:
        snprintf(buf, size, "missed its heartbeats for %u s (killed with SIGKILL)", timeout_s);
        break;
    }
    return buf;
}

int sup_heart_cause_status(const sup_heart_cause *c)
{
    return c->kind == SUP_HEART_EXITED ? c->code : 128 + c->code;
}

int sup_heart_should_restart(const sup_heart_cause *c, int stopping)
{
    if (stopping)
        return 0;
    if (c->kind != SUP_HEART_EXITED)
        return 1;
    return c->code != 0 && c->code != SUP_HEART_USAGE_STATUS;
}

uint64_t sup_heart_backoff_next(sup_heart_backoff *b, uint64_t ran_ms)
{
    if (ran_ms >= SUP_HEART_STABLE_MS)
        b->quick_deaths = 0;
    b->quick_deaths++;
    if (b->quick_deaths <= SUP_HEART_FREE_RESTARTS)
        return 0;
    uint64_t delay = SUP_HEART_DELAY_FIRST_MS;
    for (unsigned i = SUP_HEART_FREE_RESTARTS + 1; i < b->quick_deaths && delay < SUP_HEART_DELAY_MAX_MS; i++)
        delay *= 2;
    return delay < SUP_HEART_DELAY_MAX_MS ? delay : SUP_HEART_DELAY_MAX_MS;
}
