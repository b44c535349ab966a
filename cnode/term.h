/*
 * Bounds-checked walking of external-format terms.
 *
 * ei's decoders trust their input: a truncated or lying term makes them read past
 * the buffer. Every term that arrives from the network is first walked here, with
 * every length checked against the bytes we really have; after that, ei may decode
 * it safely.
 */
#ifndef CN_TERM_H
#define CN_TERM_H

#include <stddef.h>

/*
 * Checks that one complete, well-formed term (no version byte) starts at buf[*idx]
 * and ends within len bytes. On success advances *idx past it and returns 0; on
 * failure returns CN_EDECODE and leaves *idx unchanged. Atom cache references and
 * internal-only tags are refused.
 */
int cn_term_skip(const char *buf, size_t len, size_t *idx);

/* The same for a term preceded by the version byte 131. */
int cn_term_skip_versioned(const char *buf, size_t len, size_t *idx);

#endif
