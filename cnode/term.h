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
#include <ei.h>

/*
 * Checks that one complete, well-formed term (no version byte) starts at buf[*idx]
 * and ends within len bytes. On success advances *idx past it and returns 0; on
 * failure returns CN_EDECODE and leaves *idx unchanged. Atom cache references and
 * internal-only tags are refused, and so is every atom the BEAM would refuse:
 * more than 255 characters, or a UTF-8 atom whose text is not valid UTF-8.
 */
int cn_term_skip(const char *buf, size_t len, size_t *idx);

/* The same for a term preceded by the version byte 131. */
int cn_term_skip_versioned(const char *buf, size_t len, size_t *idx);

/*
 * Reads the atom at buf[*idx], in any of its four encodings, within len bytes,
 * as UTF-8 text: out (at least MAXATOMLEN_UTF8 bytes, CN_ATOM_MAX_BYTES + 1)
 * gets the text NUL-terminated, *out_len its length in bytes. The text may hold
 * NUL bytes, as atoms may: use *out_len, not strlen. Returns 0 and advances
 * *idx, or CN_EDECODE (not an atom, truncated, or an atom the walker refuses)
 * with *idx unchanged. Unlike ei_decode_atom it takes every legal atom, however
 * far from Latin-1, and never reads past len.
 */
int cn_term_decode_atom(const char *buf, size_t len, size_t *idx, char *out, size_t *out_len);

/*
 * Reads the pid (PID_EXT, NEW_PID_EXT) or reference (REFERENCE_EXT,
 * NEW_REFERENCE_EXT, NEWER_REFERENCE_EXT) at buf[*idx] within len bytes into
 * the fields ei_decode_pid and ei_decode_ref fill, with the same values (the
 * node's text as UTF-8, cn_term_decode_atom's); *node_len gets its length in
 * bytes (it may hold NUL bytes, as an atom may). Every length is checked
 * against len; the node atom is checked as the walker checks atoms. Returns 0
 * and advances *idx, or CN_EDECODE with *idx unchanged. Without ei's own atom
 * decoding, at a fraction of its cost: the receive path decodes several a call.
 */
int cn_term_decode_pid(const char *buf, size_t len, size_t *idx, erlang_pid *p, size_t *node_len);
int cn_term_decode_ref(const char *buf, size_t len, size_t *idx, erlang_ref *r, size_t *node_len);

/*
 * Writes pid p (NEW_PID_EXT) or reference r (NEWER_REFERENCE_EXT) at buf[*idx]
 * with the bytes ei_encode_pid and ei_encode_ref write (the node as
 * SMALL_ATOM_UTF8_EXT, or ATOM_UTF8_EXT past 255 bytes), and advances *idx.
 * As ei, it refuses (CN_EDECODE, nothing written) a node that is not the text
 * of an atom (valid UTF-8, at most 255 characters); a reference of more than 5
 * words too. buf must have the room (at most 1 + 3 + 1020 + 12 bytes for a
 * pid, 1 + 2 + 3 + 1020 + 4 + 20 for a reference): the send path reserves it.
 */
int cn_term_encode_pid(char *buf, int *idx, const erlang_pid *p);
int cn_term_encode_ref(char *buf, int *idx, const erlang_ref *r);

/*
 * Skips one term in a buffer that has already been walked by cn_term_skip (every
 * message a process receives has): no bounds to check, but, unlike ei_skip_term,
 * no recursion either, so a deeply nested term cannot exhaust the C stack.
 * Returns 0, or -1 on an unknown tag.
 */
int cn_term_skip_trusted(const char *buf, int *index);

/*
 * The term at buf[index] as text for a log line, in a malloc'd string the caller
 * frees, escaped by cn_log_escape (the term came from a peer: its atoms and
 * strings may hold line breaks). Terms above a few kilobytes are summarised
 * ("<term of N bytes>") instead of printed: ei's printer recurses, and a log
 * line has no use for them. Never NULL.
 */
char *cn_term_sprint(const char *buf, int index);

#endif
