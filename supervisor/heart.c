/*
 * The watchdog (supervisor/heart.h): forks the node, reads its heartbeats,
 * reaps it, and starts it again by the policy of supervisor/heart_policy.h.
 *
 * It has no libuv loop on purpose: it must stay small and obviously correct,
 * and a loop made before the fork would be shared, half-initialised, with the
 * node. One poll() watches two descriptors: a signalfd for SIGCHLD, SIGTERM
 * and SIGINT (blocked, so none interrupts anything and none is lost between
 * two polls) and the watchdog's end of the node's heartbeat socket.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cnode/log.h"
#include "supervisor/heart.h"
#include "supervisor/heart_policy.h"

#define NO_DEADLINE UINT64_MAX

typedef struct watchdog {
    const sup_heart_config *cfg;
    int sigfd;
    int beat_fd;            /* our end of the current node's socket; -1 once it closed */
    pid_t node;             /* the current node process */
    uint64_t started_ms;    /* when it was forked */
    uint64_t last_beat_ms;  /* its last heartbeat (its start counts as one) */
    int killed_for_beats;   /* we sent it SIGKILL for missed heartbeats */
    int stopping;           /* we forwarded SIGTERM or SIGINT: no restart */
    uint64_t stop_deadline_ms;
    int last_status;        /* the last node's status, as a shell shows it */
    unsigned restarts;
    sup_heart_backoff backoff;
} watchdog;

/* The signal mask from before the watchdog blocked its signals, restored in nodes. */
static sigset_t saved_mask;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Blocks the watchdog's signals and opens the signalfd that reports them. 0 or -errno. */
static int setup_signals(watchdog *w)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, &saved_mask) < 0)
        return -errno;
    w->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (w->sigfd < 0) {
        int rc = -errno;
        sigprocmask(SIG_SETMASK, &saved_mask, NULL);
        return rc;
    }
    return 0;
}

void sup_heart_unblock_signals(void)
{
    sigprocmask(SIG_SETMASK, &saved_mask, NULL);
}

/* The child's side of the fork: drop the watchdog's descriptors, leave its process group. */
static void become_node(watchdog *w, int *sv)
{
    close(sv[0]);
    close(w->sigfd);
    /* Terminal signals (Ctrl-C) then reach the watchdog only, which forwards one. */
    setpgid(0, 0);
}

/*
 * Forks a node with a fresh heartbeat socket. Returns 1 in the node (with its
 * end in *node_fd), 0 in the watchdog, or -errno when nothing was forked.
 */
static int spawn_node(watchdog *w, int *node_fd)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    /* Whatever stdio holds now would otherwise be written twice. */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        int rc = -errno;
        close(sv[0]);
        close(sv[1]);
        return rc;
    }
    if (pid == 0) {
        become_node(w, sv);
        *node_fd = sv[1];
        return 1;
    }
    close(sv[1]);
    w->node = pid;
    w->beat_fd = sv[0];
    w->started_ms = w->last_beat_ms = now_ms();
    w->killed_for_beats = 0;
    CN_INFO("heart", "started %s as pid %d (heartbeat timeout %u s)", w->cfg->name, (int)pid,
            w->cfg->timeout_s);
    return 0;
}

/* Reads what the node wrote: any byte is a beat. End-of-file: the node is going, or gone. */
static void read_beats(watchdog *w)
{
    char buf[256];
    ssize_t n = recv(w->beat_fd, buf, sizeof buf, 0);
    if (n > 0) {
        w->last_beat_ms = now_ms();
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    /* Its SIGCHLD follows; the heartbeat deadline still runs should it not. */
    close(w->beat_fd);
    w->beat_fd = -1;
}

/* The next pending signal of the watchdog's, or 0 when there is none. */
static int next_signal(watchdog *w)
{
    struct signalfd_siginfo si;
    ssize_t n = read(w->sigfd, &si, sizeof si);
    return n == (ssize_t)sizeof si ? (int)si.ssi_signo : 0;
}

/* SIGTERM or SIGINT: forward it once and give the node SUP_HEART_STOP_WAIT_MS to stop. */
static void begin_stop(watchdog *w, int sig)
{
    if (w->stopping) {
        CN_INFO("heart", "got SIG%s again; still waiting for %s to stop", sigabbrev_np(sig), w->cfg->name);
        return;
    }
    w->stopping = 1;
    w->stop_deadline_ms = now_ms() + SUP_HEART_STOP_WAIT_MS;
    CN_INFO("heart", "got SIG%s; stopping %s (pid %d)", sigabbrev_np(sig), w->cfg->name, (int)w->node);
    kill(w->node, sig);
}

/* Handles the pending signals. Returns 1 with *wstatus once the node is reaped. */
static int handle_signals(watchdog *w, int *wstatus)
{
    int sig;
    while ((sig = next_signal(w)) != 0) {
        if (sig == SIGTERM || sig == SIGINT)
            begin_stop(w, sig);
    }
    /* SIGCHLD is not queued per child: ask, whatever signal came. */
    return waitpid(w->node, wstatus, WNOHANG) == w->node;
}

/* When the watchdog must act next (a kill), or NO_DEADLINE. */
static uint64_t next_deadline(const watchdog *w)
{
    if (w->stopping)
        return w->stop_deadline_ms;
    if (w->killed_for_beats)
        return NO_DEADLINE;
    return w->last_beat_ms + (uint64_t)w->cfg->timeout_s * 1000;
}

/* Kills the node when its stop took too long or its heartbeats stopped. */
static void check_deadline(watchdog *w)
{
    uint64_t deadline = next_deadline(w);
    if (deadline == NO_DEADLINE || now_ms() < deadline)
        return;
    if (w->stopping) {
        CN_WARN("heart", "%s (pid %d) did not stop within %d ms; killing it", w->cfg->name, (int)w->node,
                SUP_HEART_STOP_WAIT_MS);
        w->stop_deadline_ms = NO_DEADLINE;
    } else {
        CN_ERROR("heart", "%s (pid %d) sent no heartbeat for %u s; killing it", w->cfg->name, (int)w->node,
                 w->cfg->timeout_s);
        w->killed_for_beats = 1;
    }
    kill(w->node, SIGKILL);
}

/* poll()'s timeout until deadline: -1 for none, else at least 0 ms. */
static int poll_timeout(uint64_t deadline)
{
    if (deadline == NO_DEADLINE)
        return -1;
    uint64_t now = now_ms();
    if (deadline <= now)
        return 0;
    return deadline - now > INT32_MAX ? INT32_MAX : (int)(deadline - now);
}

/* Watches the current node until it has ended; its wait status. */
static int watch_node(watchdog *w)
{
    for (;;) {
        struct pollfd pfd[2] = {{.fd = w->sigfd, .events = POLLIN}, {.fd = w->beat_fd, .events = POLLIN}};
        int n = poll(pfd, w->beat_fd >= 0 ? 2 : 1, poll_timeout(next_deadline(w)));
        if (n < 0 && errno != EINTR)
            CN_ERROR("heart", "poll: %s", strerror(errno));
        if (w->beat_fd >= 0 && pfd[1].revents)
            read_beats(w);
        int wstatus;
        if (handle_signals(w, &wstatus)) {
            if (w->beat_fd >= 0)
                close(w->beat_fd);
            w->beat_fd = -1;
            return wstatus;
        }
        check_deadline(w);
    }
}

/* Waits delay_ms before a restart. 0 when SIGTERM or SIGINT came meanwhile: the watchdog ends. */
static int wait_backoff(watchdog *w, uint64_t delay_ms)
{
    uint64_t deadline = now_ms() + delay_ms;
    for (;;) {
        int sig;
        while ((sig = next_signal(w)) != 0) {
            if (sig == SIGTERM || sig == SIGINT) {
                CN_INFO("heart", "got SIG%s while waiting to restart %s; exiting", sigabbrev_np(sig),
                        w->cfg->name);
                return 0;
            }
        }
        int timeout = poll_timeout(deadline);
        if (timeout == 0)
            return 1;
        struct pollfd pfd = {.fd = w->sigfd, .events = POLLIN};
        poll(&pfd, 1, timeout);
    }
}

/*
 * After a node's end: logs it and decides. Returns 1 to start the node again
 * (after the backoff's wait), 0 when the watchdog ends.
 */
static int after_end(watchdog *w, const sup_heart_cause *c)
{
    char why[96];
    sup_heart_cause_str(c, w->cfg->timeout_s, why, sizeof why);
    w->last_status = sup_heart_cause_status(c);
    if (!sup_heart_should_restart(c, w->stopping)) {
        CN_INFO("heart", "%s (pid %d) %s; the watchdog exits with status %d", w->cfg->name, (int)w->node,
                why, w->last_status);
        return 0;
    }
    uint64_t delay = sup_heart_backoff_next(&w->backoff, now_ms() - w->started_ms);
    w->restarts++;
    CN_WARN("heart", "%s (pid %d) %s after %llu ms; restart %u in %llu ms", w->cfg->name, (int)w->node, why,
            (unsigned long long)(now_ms() - w->started_ms), w->restarts, (unsigned long long)delay);
    return wait_backoff(w, delay);
}

/* A fork that failed on a restart: logged, and tried again after the backoff. 0 to give up. */
static int spawn_failed(watchdog *w, int rc)
{
    CN_ERROR("heart", "cannot start %s: %s", w->cfg->name, strerror(-rc));
    w->started_ms = now_ms();
    return wait_backoff(w, sup_heart_backoff_next(&w->backoff, 0));
}

int sup_heart_run(const sup_heart_config *cfg, int *beat_fd, int *exit_status)
{
    watchdog w = {.cfg = cfg, .sigfd = -1, .beat_fd = -1, .last_status = 1};
    int rc = setup_signals(&w);
    if (rc < 0)
        return rc;
    for (;;) {
        rc = spawn_node(&w, beat_fd);
        if (rc == 1)
            return SUP_HEART_IN_NODE;
        if (rc < 0 && w.restarts == 0) {
            close(w.sigfd);
            sup_heart_unblock_signals();
            return rc;
        }
        int again;
        if (rc < 0) {
            again = spawn_failed(&w, rc);
        } else {
            int wstatus = watch_node(&w); /* before killed_for_beats is read: it sets it */
            sup_heart_cause c = sup_heart_classify(wstatus, w.killed_for_beats);
            again = after_end(&w, &c);
        }
        if (!again)
            break;
    }
    close(w.sigfd);
    sup_heart_unblock_signals();
    *exit_status = w.last_status;
    return SUP_HEART_DONE;
}
