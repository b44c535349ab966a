/*
 * The stdin watch (supervisor/stdin_watch.h) on a real loop: fd 0 is swapped
 * for a pipe's read end for each test and restored after. Data on stdin is
 * dropped without a call; the end of the pipe calls eof_cb exactly once; a
 * regular file is refused; a closed watch frees itself on the loop.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <cmocka.h>

#include "supervisor/stdin_watch.h"

static int saved_stdin = -1;

/* Makes fd 0 the read end of a new pipe; returns the write end. */
static int stdin_from_pipe(void)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    saved_stdin = dup(0);
    assert_true(saved_stdin >= 0);
    assert_int_equal(dup2(p[0], 0), 0);
    close(p[0]);
    return p[1];
}

static void restore_stdin(void)
{
    assert_int_equal(dup2(saved_stdin, 0), 0);
    close(saved_stdin);
    saved_stdin = -1;
}

static void count(void *data)
{
    ++*(int *)data;
}

static void tick(uv_timer_t *t)
{
    (void)t;
}

static void data_is_dropped_and_the_end_stops(void **state)
{
    (void)state;
    int w = stdin_from_pipe();
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* The watch is unreferenced: a referenced timer keeps the loop polling meanwhile. */
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    uv_timer_start(&timer, tick, 1, 1);
    int ends = 0;
    sup_stdin_watch *watch;
    assert_int_equal(sup_stdin_watch_start(&loop, count, &ends, &watch), 0);

    assert_int_equal(write(w, "hello", 5), 5);
    for (int i = 0; i < 10; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ends, 0);

    close(w);
    /* The end is already there to read: the next turns see it, however slow the machine. */
    for (int i = 0; i < 10; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ends, 1);

    uv_close((uv_handle_t *)&timer, NULL);
    sup_stdin_watch_close(watch);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    restore_stdin();
}

/* Unreferenced: a loop with nothing else to do ends at once, the watch notwithstanding. */
static void the_watch_keeps_no_loop_alive(void **state)
{
    (void)state;
    int w = stdin_from_pipe();
    uv_loop_t loop;
    uv_loop_init(&loop);
    int ends = 0;
    sup_stdin_watch *watch;
    assert_int_equal(sup_stdin_watch_start(&loop, count, &ends, &watch), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(ends, 0);
    sup_stdin_watch_close(watch);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    close(w);
    restore_stdin();
}

static void a_regular_file_is_refused(void **state)
{
    (void)state;
    char path[] = "/tmp/test_stdin_watch_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    saved_stdin = dup(0);
    assert_int_equal(dup2(fd, 0), 0);
    close(fd);
    uv_loop_t loop;
    uv_loop_init(&loop);
    int ends = 0;
    sup_stdin_watch *watch = NULL;
    assert_true(sup_stdin_watch_start(&loop, count, &ends, &watch) < 0);
    assert_null(watch);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    restore_stdin();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(data_is_dropped_and_the_end_stops),
        cmocka_unit_test(the_watch_keeps_no_loop_alive),
        cmocka_unit_test(a_regular_file_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
