/*
 * Blobs: immutable bytes shared by reference count, so that a large message can
 * be passed on without being copied.
 *
 * Why: on the machines this runs on, touching fresh memory is the dearest thing
 * a loop turn can do (copying 100 MB into freshly allocated memory took 861 ms,
 * into reused memory 12 ms), and a buffer that shrinks after a large message
 * pays that again for the next one. So a connection reads a large frame into a
 * blob of its announced size, 64 KiB a turn, and whoever echoes part of it (a
 * gen_server's reply {Tag, Reply} to a call with a 100 MB tag) sends those bytes
 * from the blob (cn_piece in node.h): no turn copies or touches more than a
 * read's worth of them.
 *
 * Ownership: cn_blob_new returns a blob holding one reference, the caller's.
 * cn_blob_hold adds one; cn_blob_release drops one and the last one frees the
 * blob. One loop thread: the count is a plain integer.
 */
#ifndef CN_BLOB_H
#define CN_BLOB_H

#include <stddef.h>

typedef struct cn_blob cn_blob;

/*
 * A part of a message shorter than this is copied rather than referenced: the
 * copy costs less than keeping the blob until the write completes.
 */
#define CN_BLOB_SHARE_MIN (64 * 1024)

/* A blob of len bytes, not initialised, with one reference. Never NULL (cnode/mem.h). */
cn_blob *cn_blob_new(size_t len);
char *cn_blob_data(cn_blob *b);
size_t cn_blob_len(const cn_blob *b);
/* Adds a reference; returns b. */
cn_blob *cn_blob_hold(cn_blob *b);
/* Drops a reference; the last one frees b. NULL is ignored. */
void cn_blob_release(cn_blob *b);
/* Do the n bytes at p lie within b's bytes? (b may be NULL: then no.) */
int cn_blob_holds(const cn_blob *b, const void *p, size_t n);

#endif
