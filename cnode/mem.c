#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/log.h"
#include "cnode/mem.h"

_Noreturn void cn_oom(size_t size)
{
    /* Not through cn_log: this line must appear whatever the threshold. */
    fprintf(stderr, "ERROR [mem] out of memory allocating %zu bytes; aborting\n", size);
    fflush(stderr);
    abort();
}

void *cn_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        cn_oom(size);
    return p;
}

void *cn_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        cn_oom(n * size);
    return p;
}

void *cn_realloc(void *old, size_t size)
{
    void *p = realloc(old, size ? size : 1);
    if (p == NULL)
        cn_oom(size);
    return p;
}

char *cn_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = cn_malloc(n);
    memcpy(p, s, n);
    return p;
}

void cn_x_new(ei_x_buff *x)
{
    if (ei_x_new(x) < 0)
        cn_oom(2048);
}

void cn_x_new_with_version(ei_x_buff *x)
{
    if (ei_x_new_with_version(x) < 0)
        cn_oom(2048);
}
