/*
 * Unit tests of cnode/contention.h: the verdict from run-delay samples, and
 * reading the run delay from a schedstat file (the real one, and broken ones).
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cnode/contention.h"
#include "cnode/error.h"

#define MS 1000000ULL

static void the_first_sample_only_sets_the_mark(void **state)
{
    (void)state;
    cn_contention c = {0};
    /* Even a huge delay: there is no interval to compare it with yet. */
    assert_int_equal(cn_contention_update(&c, 5 * MS, 1000 * MS), 0);
    assert_int_equal(c.sampled_at, 5 * MS);
    assert_int_equal(c.run_delay, 1000 * MS);
}

static void a_thread_alone_on_its_core_is_not_contended(void **state)
{
    (void)state;
    cn_contention c = {0};
    cn_contention_update(&c, 10 * MS, 7 * MS);
    /* 10 ms of wall time, 100 us waited: 1 %. */
    assert_int_equal(cn_contention_update(&c, 20 * MS, 7 * MS + 100000), 0);
    /* Exactly at the threshold (5 %) is still spare. */
    assert_int_equal(cn_contention_update(&c, 30 * MS, 7 * MS + 100000 + 500000), 0);
}

static void sharing_a_core_is_contended_until_it_is_spare_again(void **state)
{
    (void)state;
    cn_contention c = {0};
    cn_contention_update(&c, 10 * MS, 0);
    /* Half of 10 ms spent waiting for a CPU. */
    assert_int_equal(cn_contention_update(&c, 20 * MS, 5 * MS), 1);
    assert_int_equal(c.contended, 1);
    /* Just over 5 %. */
    assert_int_equal(cn_contention_update(&c, 30 * MS, 5 * MS + 500001), 1);
    /* No waiting in the next interval: the core is ours again. */
    assert_int_equal(cn_contention_update(&c, 40 * MS, 5 * MS + 500001), 0);
}

static void a_clock_or_counter_going_back_keeps_the_verdict(void **state)
{
    (void)state;
    cn_contention c = {0};
    cn_contention_update(&c, 10 * MS, 0);
    assert_int_equal(cn_contention_update(&c, 20 * MS, 6 * MS), 1);
    /* A counter that went back (another thread's file?) decides nothing. */
    assert_int_equal(cn_contention_update(&c, 30 * MS, 1 * MS), 1);
    /* Neither does a sample at the same instant. */
    assert_int_equal(cn_contention_update(&c, 30 * MS, 1 * MS), 1);
    assert_int_equal(cn_contention_update(&c, 40 * MS, 1 * MS), 0);
}

/* A temporary file holding text, opened for reading. */
static int file_with(const char *text)
{
    char path[] = "/tmp/test_contention.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    return fd;
}

static void reads_the_second_field(void **state)
{
    (void)state;
    int fd = file_with("123456789 987654321 42\n");
    uint64_t v = 0;
    assert_int_equal(cn_contention_read(fd, &v), 0);
    assert_int_equal(v, 987654321ULL);
    /* pread: reading again gives the same, not the end of the file. */
    v = 0;
    assert_int_equal(cn_contention_read(fd, &v), 0);
    assert_int_equal(v, 987654321ULL);
    close(fd);
}

static void refuses_what_is_not_the_format(void **state)
{
    (void)state;
    const char *bad[] = {"", "\n", "12", "12 ", "12 x 3\n", "x 12 3\n", "12 34\n", "12\t34 5\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = file_with(bad[i]);
        uint64_t v = 77;
        assert_int_equal(cn_contention_read(fd, &v), CN_EDECODE);
        assert_int_equal(v, 77);
        close(fd);
    }
    uint64_t v;
    assert_true(cn_contention_read(-1, &v) < 0);
}

static void reads_this_threads_real_run_delay(void **state)
{
    (void)state;
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    uint64_t a = 0, b = 0;
    assert_int_equal(cn_contention_read(fd, &a), 0);
    usleep(2000);
    assert_int_equal(cn_contention_read(fd, &b), 0);
    assert_true(b >= a);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_first_sample_only_sets_the_mark),
        cmocka_unit_test(a_thread_alone_on_its_core_is_not_contended),
        cmocka_unit_test(sharing_a_core_is_contended_until_it_is_spare_again),
        cmocka_unit_test(a_clock_or_counter_going_back_keeps_the_verdict),
        cmocka_unit_test(reads_the_second_field),
        cmocka_unit_test(refuses_what_is_not_the_format),
        cmocka_unit_test(reads_this_threads_real_run_delay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
