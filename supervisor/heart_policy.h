/*
 * The watchdog's decisions (supervisor/heart.h), pure and clock-free so unit
 * tests drive them: why a node process ended, whether the watchdog starts it
 * again or ends with it, and how long it waits first when the node crash-loops.
 *
 * Causes. A node ends with exit status 0 (a clean stop: SIGTERM, SIGINT),
 * with another status (a top supervisor died, the name was lost, a final
 * save failed), by a signal (a segfault, an abort, the OOM killer's SIGKILL),
 * or by the SIGKILL the watchdog itself sent because the node's loop missed
 * its heartbeats for the whole timeout.
 *
 * Restarts. As OTP's heart reboots a node that died or hung, the watchdog
 * starts the node again after anything but a clean exit, a usage error (exit
 * status 2: a restart cannot mend a bad flag) or an end the watchdog asked for
 * (it forwarded SIGTERM or SIGINT).
 *
 * Backoff. A node that dies soon after it started is crash-looping, and
 * restarting it at full speed only burns the machine and floods the log: the
 * first SUP_HEART_FREE_RESTARTS quick deaths in a row restart at once (a
 * single segfault costs no wait), the next ones wait SUP_HEART_DELAY_FIRST_MS,
 * doubling up to SUP_HEART_DELAY_MAX_MS. A node that ran SUP_HEART_STABLE_MS
 * or longer before it died was healthy: its death starts the count afresh.
 */
#ifndef SUP_HEART_POLICY_H
#define SUP_HEART_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define SUP_HEART_FREE_RESTARTS 2
#define SUP_HEART_DELAY_FIRST_MS 250
#define SUP_HEART_DELAY_MAX_MS 10000
#define SUP_HEART_STABLE_MS 30000
/* The exit status that means "bad usage": never restarted (supervisor/main.c's flags). */
#define SUP_HEART_USAGE_STATUS 2

typedef enum sup_heart_cause_kind {
    SUP_HEART_EXITED,        /* exited by itself; code is the exit status */
    SUP_HEART_SIGNALED,      /* killed by a signal it was not sent for missed beats; code is the signal */
    SUP_HEART_MISSED_BEATS,  /* the watchdog's SIGKILL after a heartbeat timeout */
} sup_heart_cause_kind;

typedef struct sup_heart_cause {
    sup_heart_cause_kind kind;
    int code;
} sup_heart_cause;

/*
 * The cause of a node's end from waitpid's status, and whether the watchdog
 * had sent SIGKILL for missed heartbeats (then a SIGKILL death is that).
 */
sup_heart_cause sup_heart_classify(int wstatus, int killed_for_beats);

/*
 * The cause as a phrase for the restart's log line ("exited with status 1",
 * "was killed by SIGSEGV", "missed its heartbeats for 60 s") into buf, which
 * it returns; cut short when size is too small.
 */
const char *sup_heart_cause_str(const sup_heart_cause *c, unsigned timeout_s, char *buf, size_t size);

/* The exit status a shell gives this end: the status, or 128 + the signal. */
int sup_heart_cause_status(const sup_heart_cause *c);

/* Is the node started again after this end? stopping: the watchdog forwarded SIGTERM or SIGINT. */
int sup_heart_should_restart(const sup_heart_cause *c, int stopping);

/* The crash-loop count. Zeroed is the initial state. */
typedef struct sup_heart_backoff {
    unsigned quick_deaths; /* deaths in a row, each less than SUP_HEART_STABLE_MS after its start */
} sup_heart_backoff;

/* Records a death after ran_ms of life; returns how long to wait before the restart, in ms. */
uint64_t sup_heart_backoff_next(sup_heart_backoff *b, uint64_t ran_ms);

#endif
