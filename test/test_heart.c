/*
 * The heart (supervisor/heart.h, heart_policy.h, heart_beat.h) through its
 * headers: the watchdog's decisions on a fake clock (causes, restarts,
 * backoff), the node's heartbeat on a real loop over a socketpair, and the
 * watchdog itself with fake nodes: this process becomes the watchdog and each
 * forked node follows a script (exit with a status, die by a signal, hang
 * without beats, beat, stop on a forwarded SIGTERM) and then _exits, never
 * returning into cmocka. A file counts the nodes started.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cnode/log.h"
#include "supervisor/heart.h"
#include "supervisor/heart_beat.h"
#include "supervisor/heart_policy.h"

/* ---- Causes ---- */

static int exited(int status) { return (status & 0xff) << 8; } /* a wait status, as the kernel makes it */
static int signaled(int sig) { return sig & 0x7f; }

static void classify_exit_status(void **state)
{
    (void)state;
    sup_heart_cause c = sup_heart_classify(exited(3), 0);
    assert_int_equal(c.kind, SUP_HEART_EXITED);
    assert_int_equal(c.code, 3);
    assert_int_equal(sup_heart_cause_status(&c), 3);
    assert_true(WIFEXITED(exited(3)));
}

static void classify_signal(void **state)
{
    (void)state;
    assert_true(WIFSIGNALED(signaled(SIGSEGV)));
    sup_heart_cause c = sup_heart_classify(signaled(SIGSEGV), 0);
    assert_int_equal(c.kind, SUP_HEART_SIGNALED);
    assert_int_equal(c.code, SIGSEGV);
    assert_int_equal(sup_heart_cause_status(&c), 128 + SIGSEGV);
}

/* A SIGKILL is the timeout's only when the watchdog sent one; another signal stays itself. */
static void classify_missed_beats(void **state)
{
    (void)state;
    assert_int_equal(sup_heart_classify(signaled(SIGKILL), 1).kind, SUP_HEART_MISSED_BEATS);
    assert_int_equal(sup_heart_classify(signaled(SIGKILL), 0).kind, SUP_HEART_SIGNALED);
    sup_heart_cause c = sup_heart_classify(signaled(SIGSEGV), 1);
    assert_int_equal(c.kind, SUP_HEART_SIGNALED);
    assert_int_equal(c.code, SIGSEGV);
    c = sup_heart_classify(exited(0), 1);
    assert_int_equal(c.kind, SUP_HEART_EXITED);
}

static void cause_strings(void **state)
{
    (void)state;
    char buf[96];
    sup_heart_cause c = {SUP_HEART_EXITED, 1};
    assert_string_equal(sup_heart_cause_str(&c, 60, buf, sizeof buf), "exited with status 1");
    c = (sup_heart_cause){SUP_HEART_SIGNALED, SIGSEGV};
    assert_string_equal(sup_heart_cause_str(&c, 60, buf, sizeof buf), "was killed by SIGSEGV");
    c = (sup_heart_cause){SUP_HEART_MISSED_BEATS, SIGKILL};
    assert_string_equal(sup_heart_cause_str(&c, 7, buf, sizeof buf),
                        "missed its heartbeats for 7 s (killed with SIGKILL)");
    /* Cut short, still a string. */
    assert_string_equal(sup_heart_cause_str(&c, 7, buf, 7), "missed");
}

/* ---- Restarts ---- */

static void restart_decisions(void **state)
{
    (void)state;
    sup_heart_cause clean = {SUP_HEART_EXITED, 0}, usage = {SUP_HEART_EXITED, SUP_HEART_USAGE_STATUS};
    sup_heart_cause failed = {SUP_HEART_EXITED, 1}, segv = {SUP_HEART_SIGNALED, SIGSEGV};
    sup_heart_cause hung = {SUP_HEART_MISSED_BEATS, SIGKILL};
    assert_false(sup_heart_should_restart(&clean, 0));
    assert_false(sup_heart_should_restart(&usage, 0));
    assert_true(sup_heart_should_restart(&failed, 0));
    assert_true(sup_heart_should_restart(&segv, 0));
    assert_true(sup_heart_should_restart(&hung, 0));
    /* Asked to stop: whatever the end, no restart. */
    assert_false(sup_heart_should_restart(&failed, 1));
    assert_false(sup_heart_should_restart(&segv, 1));
    assert_false(sup_heart_should_restart(&hung, 1));
}

/* ---- Backoff ---- */

static void backoff_free_restarts_then_doubling_to_the_cap(void **state)
{
    (void)state;
    sup_heart_backoff b = {0};
    for (int i = 0; i < SUP_HEART_FREE_RESTARTS; i++)
        assert_int_equal(sup_heart_backoff_next(&b, 10), 0);
    uint64_t want = SUP_HEART_DELAY_FIRST_MS;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(sup_heart_backoff_next(&b, 10), want);
        want = want * 2 > SUP_HEART_DELAY_MAX_MS ? SUP_HEART_DELAY_MAX_MS : want * 2;
    }
    assert_int_equal(sup_heart_backoff_next(&b, SUP_HEART_STABLE_MS - 1), SUP_HEART_DELAY_MAX_MS);
}

/* A node that ran a stable period was healthy: its death restarts at once and counts afresh. */
static void backoff_resets_after_a_stable_run(void **state)
{
    (void)state;
    sup_heart_backoff b = {0};
    for (int i = 0; i < 10; i++)
        sup_heart_backoff_next(&b, 0);
    assert_int_equal(sup_heart_backoff_next(&b, SUP_HEART_STABLE_MS), 0);
    assert_int_equal(b.quick_deaths, 1);
    for (int i = 1; i < SUP_HEART_FREE_RESTARTS; i++)
        assert_int_equal(sup_heart_backoff_next(&b, 0), 0);
    assert_int_equal(sup_heart_backoff_next(&b, 0), SUP_HEART_DELAY_FIRST_MS);
}

static void beat_interval(void **state)
{
    (void)state;
    assert_int_equal(sup_heart_beat_interval_ms(1), 100);
    assert_int_equal(sup_heart_beat_interval_ms(5), 500);
    assert_int_equal(sup_heart_beat_interval_ms(60), 1000);
    assert_int_equal(sup_heart_beat_interval_ms(86400), 1000);
}

/* ---- The node's heartbeat ---- */

typedef struct beat_fx {
    uv_loop_t loop;
    uv_timer_t check;     /* referenced: keeps the loop running while the heart's handles do not */
    int peer;             /* the watchdog's end */
    sup_heart_beat *beat;
    size_t beats;
    int lost;
} beat_fx;

static void on_lost(void *data)
{
    beat_fx *f = data;
    f->lost++;
}

/* Counts the beats; after a few, closes the watchdog's end; after the loss, ends the test. */
static void check(uv_timer_t *t)
{
    beat_fx *f = t->data;
    char buf[64];
    ssize_t n;
    while (f->peer >= 0 && (n = recv(f->peer, buf, sizeof buf, MSG_DONTWAIT)) > 0)
        f->beats += (size_t)n;
    if (f->peer >= 0 && f->beats >= 3) {
        close(f->peer);
        f->peer = -1;
    }
    if (f->lost) {
        uv_close((uv_handle_t *)t, NULL);
        sup_heart_beat_close(f->beat);
    }
}

static void beats_then_notices_the_watchdogs_end(void **state)
{
    (void)state;
    beat_fx f = {.peer = -1};
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    f.peer = sv[0];
    assert_int_equal(uv_loop_init(&f.loop), 0);
    assert_int_equal(sup_heart_beat_start(&f.loop, sv[1], 5, on_lost, &f, &f.beat), 0);
    uv_timer_init(&f.loop, &f.check);
    f.check.data = &f;
    uv_timer_start(&f.check, check, 10, 10);
    assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
    assert_true(f.beats >= 3);
    assert_int_equal(f.lost, 1);
    assert_int_equal(uv_loop_close(&f.loop), 0);
}

/* The heart alone never keeps a loop running: a loop with nothing else returns at once. */
static void beat_does_not_hold_the_loop(void **state)
{
    (void)state;
    uv_loop_t loop;
    int sv[2];
    sup_heart_beat *b;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(sup_heart_beat_start(&loop, sv[1], 1000, NULL, NULL, &b), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    char c;
    assert_int_equal(recv(sv[0], &c, 1, MSG_DONTWAIT), 1); /* the first beat is at once */
    sup_heart_beat_close(b);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    close(sv[0]);
}

/* ---- The watchdog, with fake nodes ---- */

typedef enum act { EXIT0, EXIT2, EXIT3, DIE_BY_SIGNAL, HANG, BEAT_PAST_TIMEOUT, ASK_STOP } act;

static char runs_file[64];

/* Which node this is (0 for the first), counted in runs_file. */
static int next_run(void)
{
    int fd = open(runs_file, O_WRONLY | O_APPEND | O_CREAT, 0600);
    struct stat st;
    int run = fstat(fd, &st) == 0 ? (int)st.st_size : -1;
    if (write(fd, "r", 1) != 1)
        run = -1;
    close(fd);
    return run;
}

static int runs(void)
{
    struct stat st;
    return stat(runs_file, &st) == 0 ? (int)st.st_size : 0;
}

static void exit_on_term(int sig)
{
    (void)sig;
    _exit(7);
}

/* A fake node's life; never returns. */
static void fake_node(act a, int fd)
{
    switch (a) {
    case EXIT0: _exit(0);
    case EXIT2: _exit(2);
    case EXIT3: _exit(3);
    case DIE_BY_SIGNAL:
        /* Not SIGSEGV: the sanitizers and cmocka catch that one in this process. */
        signal(SIGUSR1, SIG_DFL);
        sup_heart_unblock_signals();
        raise(SIGUSR1);
        _exit(99);
    case HANG:
        /* Were it not killed, its usage status would end the watchdog with 2. */
        sleep(30);
        _exit(2);
    case BEAT_PAST_TIMEOUT:
        for (int i = 0; i < 20; i++) { /* 2 s of beats, twice the timeout */
            if (send(fd, "b", 1, MSG_NOSIGNAL) != 1)
                _exit(97);
            usleep(100000);
        }
        _exit(0);
    case ASK_STOP:
        signal(SIGTERM, exit_on_term);
        sup_heart_unblock_signals();
        kill(getppid(), SIGTERM);
        sleep(30);
        _exit(96);
    }
    _exit(95);
}

/* Runs the watchdog over nodes acting as script says, one entry per node; its exit status. */
static int watch(const act *script, int n, unsigned timeout_s)
{
    snprintf(runs_file, sizeof runs_file, "/tmp/test_heart.XXXXXX");
    int tmp = mkstemp(runs_file);
    assert_true(tmp >= 0);
    close(tmp);
    sup_heart_config cfg = {.timeout_s = timeout_s, .name = "fake@127.0.0.1"};
    int fd = -1, status = -1;
    int rc = sup_heart_run(&cfg, &fd, &status);
    if (rc == SUP_HEART_IN_NODE) {
        int run = next_run();
        fake_node(run >= 0 && run < n ? script[run] : EXIT0, fd);
    }
    assert_int_equal(rc, SUP_HEART_DONE);
    return status;
}

static void watchdog_ends_with_a_clean_exit(void **state)
{
    (void)state;
    const act s[] = {EXIT0};
    assert_int_equal(watch(s, 1, 5), 0);
    assert_int_equal(runs(), 1);
    unlink(runs_file);
}

static void watchdog_never_restarts_a_usage_error(void **state)
{
    (void)state;
    const act s[] = {EXIT2};
    assert_int_equal(watch(s, 1, 5), 2);
    assert_int_equal(runs(), 1);
    unlink(runs_file);
}

/* Two quick deaths restart at once (SUP_HEART_FREE_RESTARTS), then a clean exit ends it all. */
static void watchdog_restarts_failures_and_signals(void **state)
{
    (void)state;
    const act s[] = {EXIT3, DIE_BY_SIGNAL, EXIT0};
    assert_int_equal(watch(s, 3, 5), 0);
    assert_int_equal(runs(), 3);
    unlink(runs_file);
}

static void watchdog_kills_a_node_without_beats(void **state)
{
    (void)state;
    const act s[] = {HANG, EXIT0};
    /* One second: the hung node is killed, the next one starts. */
    assert_int_equal(watch(s, 2, 1), 0);
    assert_int_equal(runs(), 2);
    unlink(runs_file);
}

static void watchdog_keeps_a_beating_node(void **state)
{
    (void)state;
    const act s[] = {BEAT_PAST_TIMEOUT};
    assert_int_equal(watch(s, 1, 1), 0);
    assert_int_equal(runs(), 1);
    unlink(runs_file);
}

/* SIGTERM to the watchdog goes to the node; the watchdog ends with the node's status, no restart. */
static void watchdog_forwards_sigterm_and_takes_the_status(void **state)
{
    (void)state;
    const act s[] = {ASK_STOP};
    assert_int_equal(watch(s, 1, 5), 7);
    assert_int_equal(runs(), 1);
    unlink(runs_file);
}

int main(void)
{
    cn_log_threshold = CN_LOG_ERROR; /* the watchdog's restart lines are expected here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classify_exit_status),
        cmocka_unit_test(classify_signal),
        cmocka_unit_test(classify_missed_beats),
        cmocka_unit_test(cause_strings),
        cmocka_unit_test(restart_decisions),
        cmocka_unit_test(backoff_free_restarts_then_doubling_to_the_cap),
        cmocka_unit_test(backoff_resets_after_a_stable_run),
        cmocka_unit_test(beat_interval),
        cmocka_unit_test(beats_then_notices_the_watchdogs_end),
        cmocka_unit_test(beat_does_not_hold_the_loop),
        cmocka_unit_test(watchdog_ends_with_a_clean_exit),
        cmocka_unit_test(watchdog_never_restarts_a_usage_error),
        cmocka_unit_test(watchdog_restarts_failures_and_signals),
        cmocka_unit_test(watchdog_kills_a_node_without_beats),
        cmocka_unit_test(watchdog_keeps_a_beating_node),
        cmocka_unit_test(watchdog_forwards_sigterm_and_takes_the_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
