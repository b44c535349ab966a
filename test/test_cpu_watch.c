/*
 * Unit tests of cnode/cpu_watch.h: /proc/stat's cpu lines summed over a CPU
 * set, the verdict of an interval (do the others leave a whole CPU?), and the
 * watch itself over a file the test writes, sampled no more often than its
 * interval.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cnode/cpu_watch.h"
#include "test/fake_stat.h"

/* A /proc/stat as Linux 6 writes it, two CPUs. */
static const char stat_text[] =
    "cpu  300 10 200 5000 40 6 4 2 0 0\n"
    "cpu0 100 0 100 2500 20 3 2 1 0 0\n"
    "cpu1 200 10 100 2500 20 3 2 1 0 0\n"
    "intr 123456 0 0 0\n"
    "ctxt 99\n"
    "cpu9 is not a cpu line after all\n";

static cpu_set_t cpus_of(int a, int b)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    if (a >= 0)
        CPU_SET(a, &s);
    if (b >= 0)
        CPU_SET(b, &s);
    return s;
}

static void cpu_lines_are_summed_over_the_set(void **state)
{
    (void)state;
    cn_cpu_ticks t;
    cpu_set_t both = cpus_of(0, 1);
    /* The last line names cpu9, which is not in the set: it is never parsed. */
    assert_int_equal(cn_cpu_ticks_parse(stat_text, strlen(stat_text), &both, &t), 0);
    assert_int_equal(t.ncpu, 2);
    /* busy: user nice system irq softirq steal; total adds idle and iowait. */
    assert_int_equal(t.busy, (100 + 0 + 100 + 3 + 2 + 1) + (200 + 10 + 100 + 3 + 2 + 1));
    assert_int_equal(t.total, t.busy + 2500 + 20 + 2500 + 20);

    cpu_set_t one = cpus_of(1, -1);
    assert_int_equal(cn_cpu_ticks_parse(stat_text, strlen(stat_text), &one, &t), 0);
    assert_int_equal(t.ncpu, 1);
    assert_int_equal(t.busy, 200 + 10 + 100 + 3 + 2 + 1);
    assert_int_equal(t.total, 316 + 2520);
}

static void no_line_for_the_set_or_a_bad_line_is_refused(void **state)
{
    (void)state;
    cn_cpu_ticks t = {7, 7, 7};
    cpu_set_t other = cpus_of(5, -1);
    assert_int_equal(cn_cpu_ticks_parse(stat_text, strlen(stat_text), &other, &t), -EINVAL);
    assert_int_equal(t.ncpu, 7);
    cpu_set_t nine = cpus_of(9, -1);
    assert_int_equal(cn_cpu_ticks_parse(stat_text, strlen(stat_text), &nine, &t), -EINVAL);
    /* Cut inside cpu0's line: 7 counters where 8 are needed. */
    cpu_set_t zero = cpus_of(0, -1);
    const char *cut = strstr(stat_text, "cpu0");
    assert_int_equal(cn_cpu_ticks_parse(cut, 20, &zero, &t), -EINVAL);
    /* A counter too big for 64 bits. */
    const char *huge = "cpu0 99999999999999999999999 0 0 0 0 0 0 0\n";
    assert_int_equal(cn_cpu_ticks_parse(huge, strlen(huge), &zero, &t), -EINVAL);
    /* The text need not end in a newline, nor in NUL. */
    const char *last = "cpu0 1 2 3 4 5 6 7 8 9 10";
    assert_int_equal(cn_cpu_ticks_parse(last, strlen(last), &zero, &t), 0);
    assert_int_equal(t.busy, 1 + 2 + 3 + 6 + 7 + 8);
    assert_int_equal(t.total, t.busy + 4 + 5);
}

static void the_others_must_leave_a_whole_cpu(void **state)
{
    (void)state;
    const uint64_t s = 1000000000; /* an interval of 1 s */
    cn_cpu_ticks a = {.busy = 1000, .total = 4000, .ncpu = 2};
    /* 2 CPUs, 100 ticks each: 110 busy is 1.1 CPUs. */
    cn_cpu_ticks b = {.busy = 1110, .total = 4200, .ncpu = 2};
    /* All of it the others': 0.9 CPUs left. */
    assert_int_equal(cn_cpu_spare(&a, &b, 0, s), 0);
    /* 0.2 CPUs of it ours: the others used 0.9, leaving 1.1. */
    assert_int_equal(cn_cpu_spare(&a, &b, s / 5, s), 1);
    /* 90 busy: the others alone leave 1.1. */
    b.busy = 1090;
    assert_int_equal(cn_cpu_spare(&a, &b, 0, s), 1);
    /* Everything busy, and one CPU of it ours: exactly one left. */
    b.busy = 1200;
    assert_int_equal(cn_cpu_spare(&a, &b, s, s), 1);
    assert_int_equal(cn_cpu_spare(&a, &b, s / 2, s), 0);
    /* One CPU, busy with others half the time: never a whole CPU. */
    cn_cpu_ticks c = {.busy = 0, .total = 0, .ncpu = 1}, d = {.busy = 50, .total = 100, .ncpu = 1};
    assert_int_equal(cn_cpu_spare(&c, &d, 0, s), 0);
    d.busy = 0;
    assert_int_equal(cn_cpu_spare(&c, &d, 0, s), 1);
}

static void an_interval_without_ticks_leaves_a_cpu(void **state)
{
    (void)state;
    cn_cpu_ticks a = {.busy = 1000, .total = 4000, .ncpu = 2};
    cn_cpu_ticks same = a;
    assert_int_equal(cn_cpu_spare(&a, &same, 0, 1000), 1);
    cn_cpu_ticks back = {.busy = 900, .total = 4100, .ncpu = 2};
    assert_int_equal(cn_cpu_spare(&a, &back, 0, 1000), 1);
    cn_cpu_ticks fewer = {.busy = 1200, .total = 4200, .ncpu = 1};
    assert_int_equal(cn_cpu_spare(&a, &fewer, 0, 1000), 1);
    cn_cpu_ticks busy = {.busy = 1200, .total = 4200, .ncpu = 2};
    assert_int_equal(cn_cpu_spare(&a, &busy, 0, 0), 1);
    assert_int_equal(cn_cpu_spare(&a, &busy, 0, 1000), 0);
}

static void the_watch_samples_once_per_interval(void **state)
{
    (void)state;
    char path[] = "/tmp/test_cpu_watch.XXXXXX";
    fs_temp_stat(path);
    cn_cpu_watch w;
    cn_cpu_watch_init(&w, path);
    assert_int_equal(w.interval_ns, CN_CPU_WATCH_INTERVAL_NS);
    /*
     * The clock is the test's: a second between samples, so the few
     * microseconds of CPU this process really spends between them are nothing
     * next to the ticks the file says the others used.
     */
    const uint64_t s = 1000000000;
    w.interval_ns = s;

    fs_write_stat(path, 100, 100);
    /* The first sample is a baseline: a core is to spare until an interval says otherwise. */
    assert_int_equal(cn_cpu_watch_spare(&w, 5 * s), 1);
    assert_int_equal(w.samples, 1);
    /* Every CPU busy since, a thousand ticks each. */
    fs_write_stat(path, 1100, 100);
    /* Within the interval the verdict stands, and the file is not read. */
    assert_int_equal(cn_cpu_watch_spare(&w, 6 * s - 1), 1);
    assert_int_equal(w.samples, 1);
    assert_int_equal(cn_cpu_watch_spare(&w, 6 * s), 0);
    assert_int_equal(w.samples, 2);
    /* Idle since: a core again. */
    fs_write_stat(path, 1100, 1100);
    assert_int_equal(cn_cpu_watch_spare(&w, 6 * s + s / 2), 0);
    assert_int_equal(cn_cpu_watch_spare(&w, 7 * s), 1);
    assert_int_equal(w.samples, 3);
    /* A file gone keeps the last verdict. */
    fs_write_stat(path, 2100, 1100);
    assert_int_equal(cn_cpu_watch_spare(&w, 8 * s), 0);
    unlink(path);
    assert_int_equal(cn_cpu_watch_spare(&w, 9 * s), 0);
    assert_int_equal(w.samples, 4);
}

static void no_file_means_a_core_to_spare(void **state)
{
    (void)state;
    cn_cpu_watch off;
    cn_cpu_watch_init(&off, NULL);
    assert_int_equal(cn_cpu_watch_spare(&off, 1), 1);
    assert_int_equal(cn_cpu_watch_spare(&off, 1000000000000ULL), 1);
    assert_int_equal(off.samples, 0);
    cn_cpu_watch missing;
    cn_cpu_watch_init(&missing, "/nonexistent/stat");
    assert_int_equal(cn_cpu_watch_spare(&missing, 1), 1);
    assert_int_equal(cn_cpu_watch_spare(&missing, 1000000000000ULL), 1);
    assert_int_equal(missing.samples, 0);
}

/* The real /proc/stat parses, with a line for each CPU we may run on. */
static void proc_stat_parses(void **state)
{
    (void)state;
    cpu_set_t cpus;
    assert_int_equal(sched_getaffinity(0, sizeof cpus, &cpus), 0);
    FILE *f = fopen("/proc/stat", "r");
    assert_non_null(f);
    char buf[32768];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    while (len > 0 && buf[len - 1] != '\n')
        len--;
    cn_cpu_ticks t;
    assert_int_equal(cn_cpu_ticks_parse(buf, len, &cpus, &t), 0);
    assert_int_equal(t.ncpu, CPU_COUNT(&cpus));
    assert_true(t.total >= t.busy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cpu_lines_are_summed_over_the_set),
        cmocka_unit_test(no_line_for_the_set_or_a_bad_line_is_refused),
        cmocka_unit_test(the_others_must_leave_a_whole_cpu),
        cmocka_unit_test(an_interval_without_ticks_leaves_a_cpu),
        cmocka_unit_test(the_watch_samples_once_per_interval),
        cmocka_unit_test(no_file_means_a_core_to_spare),
        cmocka_unit_test(proc_stat_parses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
