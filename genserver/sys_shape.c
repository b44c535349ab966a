/*
 * The reply shapes of the sys protocol per stdlib version, and the per-server
 * cache of what each calling node runs (see sys_shape.h).
 */
#include <stdlib.h>
#include <string.h>

#include "cnode/mem.h"
#include "genserver/sys_shape.h"

/* Reads a decimal number at *p, advancing it; -1 when there is no digit. */
static long read_number(const char **p)
{
    const char *s = *p;
    long n = 0;
    if (*s < '0' || *s > '9')
        return -1;
    while (*s >= '0' && *s <= '9' && n < 100000)
        n = n * 10 + (*s++ - '0');
    *p = s;
    return n;
}

gs_sys_shape gs_sys_shape_for_stdlib(const char *vsn)
{
    if (vsn == NULL)
        return GS_SYS_SHAPE_OK;
    const char *p = vsn;
    long major = read_number(&p);
    if (major < 0)
        return GS_SYS_SHAPE_OK;
    long minor = 0;
    if (*p == '.') {
        p++;
        minor = read_number(&p);
        if (minor < 0)
            return GS_SYS_SHAPE_OK;
    }
    /* OTP-18633 came with stdlib 5.1 (OTP 26.1); 5.0.x is still the old sys. */
    if (major < 5 || (major == 5 && minor < 1))
        return GS_SYS_SHAPE_RAW;
    return GS_SYS_SHAPE_OK;
}

void gs_sys_shape_begin(ei_x_buff *x, gs_sys_shape shape)
{
    if (shape == GS_SYS_SHAPE_RAW)
        return;
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "ok");
}

static int find(const gs_sys_cache *c, const char *node)
{
    for (int k = 0; k < GS_SYS_CACHE_SIZE; k++)
        if (c->e[k].node != NULL && strcmp(c->e[k].node, node) == 0)
            return k;
    return -1;
}

gs_sys_shape gs_sys_cache_get(const gs_sys_cache *c, const char *node, uint32_t creation)
{
    int k = find(c, node);
    if (k < 0 || c->e[k].creation != creation)
        return GS_SYS_SHAPE_UNKNOWN;
    return c->e[k].shape;
}

/* The slot for a new node: a free one, else the one stored longest ago. */
static int slot_for_new(const gs_sys_cache *c)
{
    int oldest = 0;
    for (int k = 0; k < GS_SYS_CACHE_SIZE; k++) {
        if (c->e[k].node == NULL)
            return k;
        if (c->e[k].stamp < c->e[oldest].stamp)
            oldest = k;
    }
    return oldest;
}

void gs_sys_cache_put(gs_sys_cache *c, const char *node, uint32_t creation, gs_sys_shape shape)
{
    int k = find(c, node);
    if (k < 0) {
        k = slot_for_new(c);
        free(c->e[k].node);
        c->e[k].node = cn_strdup(node);
    }
    c->e[k].creation = creation;
    c->e[k].shape = shape;
    c->e[k].stamp = ++c->clock;
}

void gs_sys_cache_forget(gs_sys_cache *c, const char *node)
{
    int k = find(c, node);
    if (k >= 0) {
        free(c->e[k].node);
        c->e[k].node = NULL;
    }
}

void gs_sys_cache_clear(gs_sys_cache *c)
{
    for (int k = 0; k < GS_SYS_CACHE_SIZE; k++)
        free(c->e[k].node);
    memset(c, 0, sizeof *c);
}
