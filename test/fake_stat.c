/* A /proc/stat for tests: see fake_stat.h. */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <cmocka.h>

#include "test/fake_stat.h"

void fs_temp_stat(char *path)
{
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
}

void fs_write_stat(const char *path, uint64_t busy, uint64_t idle)
{
    cpu_set_t cpus;
    assert_int_equal(sched_getaffinity(0, sizeof cpus, &cpus), 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "cpu  0 0 0 0 0 0 0 0 0 0\n");
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &cpus))
            fprintf(f, "cpu%d %llu 0 0 %llu 0 0 0 0 0 0\n", i, (unsigned long long)busy, (unsigned long long)idle);
    fprintf(f, "intr 0\n");
    assert_int_equal(fclose(f), 0);
}
