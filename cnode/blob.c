/* Reference-counted immutable bytes (blob.h). */
#include "cnode/blob.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>

#include "cnode/mem.h"

struct cn_blob {
    size_t refs;
    size_t len;
    char data[];
};

cn_blob *cn_blob_new(size_t len)
{
    /* The bytes are left untouched: a large blob's pages are faulted in as they are written. */
    cn_blob *b = cn_malloc(sizeof *b + len);
    b->refs = 1;
    b->len = len;
    return b;
}

char *cn_blob_data(cn_blob *b)
{
    return b->data;
}

size_t cn_blob_len(const cn_blob *b)
{
    return b->len;
}

cn_blob *cn_blob_hold(cn_blob *b)
{
    assert(b->refs > 0);
    b->refs++;
    return b;
}

void cn_blob_release(cn_blob *b)
{
    if (b == NULL)
        return;
    assert(b->refs > 0);
    if (--b->refs == 0)
        free(b);
}

int cn_blob_holds(const cn_blob *b, const void *p, size_t n)
{
    if (b == NULL)
        return 0;
    uintptr_t lo = (uintptr_t)b->data, at = (uintptr_t)p;
    return at >= lo && at - lo <= b->len && n <= b->len - (at - lo);
}
