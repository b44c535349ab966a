/*
 * Memory: one out-of-memory policy for the whole program.
 *
 * An allocation that fails ends the process with one log line and abort(), as
 * the BEAM ends the emulator when it cannot allocate ("eheap_alloc: Cannot
 * allocate N bytes"). Half-handled ENOMEM paths that leave a server in a state
 * nobody tested are worse than a clean crash the supervisor of the whole
 * process (heart, systemd, the Elixir port owner) restarts from saved state.
 * What a peer can make us allocate is bounded before it is allocated (frame
 * size, write queue, term limits), so no remote input reaches this policy.
 *
 * Every allocation in cnode/, genserver/ and supervisor/ goes through these
 * functions, and every ei_x_buff is made with cn_x_new or cn_x_new_with_version.
 * They never return NULL. Memory from them is released with free() (and
 * ei_x_free for ei_x_buff).
 */
#ifndef CN_MEM_H
#define CN_MEM_H

#include <stddef.h>
#include <ei.h>

void *cn_malloc(size_t size);
void *cn_calloc(size_t n, size_t size);
void *cn_realloc(void *p, size_t size);
char *cn_strdup(const char *s);

/* ei_x_new / ei_x_new_with_version that abort instead of returning -1. */
void cn_x_new(ei_x_buff *x);
void cn_x_new_with_version(ei_x_buff *x);

/* Logs "out of memory allocating N bytes" and aborts. For ei's -1 after growth. */
_Noreturn void cn_oom(size_t size);

#endif
