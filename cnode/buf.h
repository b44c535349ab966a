/*
 * A growable byte buffer used for frames, handshake messages and write queues.
 *
 * The buffer owns its memory. cn_buf_init() makes an empty buffer that allocates
 * nothing; cn_buf_free() releases it. Appends grow the buffer geometrically, so a
 * buffer that is reused (cn_buf_reset) stops allocating once it has reached its
 * working size: that is what keeps the per-message path allocation-free.
 *
 * A buffer that one large message made large gives the memory back afterwards
 * (cn_buf_shrink): what a peer made us allocate must not stay with us.
 */
#ifndef CN_BUF_H
#define CN_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct cn_buf {
    char *data;
    size_t len;
    size_t cap;
} cn_buf;

void cn_buf_init(cn_buf *b);
void cn_buf_free(cn_buf *b);
/* Forget the contents but keep the memory. */
static inline void cn_buf_reset(cn_buf *b) { b->len = 0; }
/*
 * Make room for n more bytes. Returns 0, or -ENOMEM for a size no memory can
 * hold (len + n past SIZE_MAX); running out of memory otherwise ends the
 * program (cnode/mem.h), so appends of bounded sizes cannot fail.
 */
int cn_buf_reserve(cn_buf *b, size_t n);
int cn_buf_append(cn_buf *b, const void *p, size_t n);
int cn_buf_put_u8(cn_buf *b, uint8_t v);
int cn_buf_put_u16(cn_buf *b, uint16_t v);   /* big endian */
int cn_buf_put_u32(cn_buf *b, uint32_t v);   /* big endian */
int cn_buf_put_u64(cn_buf *b, uint64_t v);   /* big endian */
/* Drop the first n bytes (n <= len), moving the rest to the front. */
void cn_buf_consume(cn_buf *b, size_t n);

/*
 * The room a reused buffer keeps after a large message: buffers that stay below
 * it never shrink, so the steady state allocates nothing, and one that grew past
 * it goes back to it.
 */
#define CN_BUF_KEEP (64 * 1024)

/*
 * Gives back the memory a large message left: when b has room for more than
 * keep bytes and holds at most keep, its capacity becomes keep (0 frees it).
 * Otherwise nothing happens, so it is cheap to call after every use.
 */
void cn_buf_shrink(cn_buf *b, size_t keep);

static inline uint16_t cn_get_u16(const void *p)
{
    const unsigned char *s = p;
    return (uint16_t)((s[0] << 8) | s[1]);
}

static inline uint32_t cn_get_u32(const void *p)
{
    const unsigned char *s = p;
    return ((uint32_t)s[0] << 24) | ((uint32_t)s[1] << 16) | ((uint32_t)s[2] << 8) | s[3];
}

static inline uint64_t cn_get_u64(const void *p)
{
    const unsigned char *s = p;
    return ((uint64_t)cn_get_u32(s) << 32) | cn_get_u32(s + 4);
}

static inline void cn_set_u32(void *p, uint32_t v)
{
    unsigned char *d = p;
    d[0] = (unsigned char)(v >> 24);
    d[1] = (unsigned char)(v >> 16);
    d[2] = (unsigned char)(v >> 8);
    d[3] = (unsigned char)v;
}

#endif
