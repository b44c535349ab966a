/*
 * A /proc/stat for tests of cnode/cpu_watch.h: a line for every CPU the test
 * may run on (its affinity mask), each with the same counters.
 */
#ifndef TEST_FAKE_STAT_H
#define TEST_FAKE_STAT_H

#include <stdint.h>

/* Makes an empty file from a mkstemp template (ending in XXXXXX), its name left in path. */
void fs_temp_stat(char *path);

/* Writes path afresh: every CPU has busy ticks of user time and idle ticks of idle. Fails the test on error. */
void fs_write_stat(const char *path, uint64_t busy, uint64_t idle);

#endif
