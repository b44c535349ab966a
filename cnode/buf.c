/*
 * Growable byte buffers (buf.h). Memory comes from cn_realloc, which ends the
 * program when it runs out (mem.h); the only failure left is a size no memory
 * could hold, which is refused with -ENOMEM before anything is allocated.
 */
#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

void cn_buf_init(cn_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void cn_buf_free(cn_buf *b)
{
    free(b->data);
    cn_buf_init(b);
}

int cn_buf_reserve(cn_buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    /* len + n must not wrap: such a request can never be met. */
    if (n > SIZE_MAX - b->len)
        return -ENOMEM;
    size_t want = b->len + n;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    b->data = cn_realloc(b->data, cap);
    b->cap = cap;
    return 0;
}

int cn_buf_append(cn_buf *b, const void *p, size_t n)
{
    int rc = cn_buf_reserve(b, n);
    if (rc < 0)
        return rc;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int cn_buf_put_u8(cn_buf *b, uint8_t v)
{
    return cn_buf_append(b, &v, 1);
}

int cn_buf_put_u16(cn_buf *b, uint16_t v)
{
    unsigned char s[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    return cn_buf_append(b, s, 2);
}

int cn_buf_put_u32(cn_buf *b, uint32_t v)
{
    unsigned char s[4];
    cn_set_u32(s, v);
    return cn_buf_append(b, s, 4);
}

int cn_buf_put_u64(cn_buf *b, uint64_t v)
{
    int rc = cn_buf_put_u32(b, (uint32_t)(v >> 32));
    return rc < 0 ? rc : cn_buf_put_u32(b, (uint32_t)v);
}

void cn_buf_consume(cn_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void cn_buf_shrink(cn_buf *b, size_t keep)
{
    if (b->cap <= keep || b->len > keep)
        return;
    if (keep == 0) {
        cn_buf_free(b);
        return;
    }
    b->data = cn_realloc(b->data, keep);
    b->cap = keep;
}
