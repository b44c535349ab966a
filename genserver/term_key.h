/*
 * Canonical bytes for an Erlang term, so that a term can be a hash-table key.
 *
 * Two terms get identical canonical bytes exactly when they are the same key of an
 * Elixir map (`===`, so 1 and 1.0 differ), however the sender chose to encode them:
 * Latin-1 or UTF-8 atoms, small or big integers, old or new pids, ports and
 * references, STRING_EXT or LIST_EXT, old text floats or IEEE floats, map pairs in
 * any order. The canonical bytes are themselves valid external term format (without
 * the version byte), so ei can decode a key for logging or debugging:
 *
 *   atoms       SMALL_ATOM_UTF8_EXT, or ATOM_UTF8_EXT above 255 bytes
 *   integers    the smallest of SMALL_INTEGER_EXT, INTEGER_EXT, SMALL_BIG_EXT,
 *               LARGE_BIG_EXT, without leading zero digits (as OTP encodes them)
 *   floats      NEW_FLOAT_EXT; -0.0 becomes 0.0, as OTP 25 treats them as one key
 *   pids        NEW_PID_EXT; ports NEW_PORT_EXT, or V4_PORT_EXT for ids above 32 bits
 *   references  NEWER_REFERENCE_EXT without trailing zero words (the BEAM ignores them)
 *   lists       STRING_EXT for proper lists of 0..255 up to 65535 long, else LIST_EXT;
 *               a list whose tail is a list is flattened into one
 *   maps        MAP_EXT with pairs sorted by the canonical bytes of their keys
 *   binaries    BINARY_EXT; BIT_BINARY_EXT only when the last byte is partial,
 *               with its unused bits cleared
 *   tuples, NEW_FUN_EXT and EXPORT_EXT keep their shape with canonical parts.
 *
 * Not accepted (CN_EDECODE): ATOM_CACHE_REF (this node negotiates no atom cache),
 * FUN_EXT (OTP 23 and later refuse it too), compressed terms, NaN and infinities,
 * invalid UTF-8 in atoms, duplicate map keys, and nesting deeper than TK_MAX_DEPTH.
 */
#ifndef GS_TERM_KEY_H
#define GS_TERM_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "cnode/buf.h"

/* Deepest nesting of tuples, lists, maps and funs accepted. The decoder recurses
 * (about 160 bytes of stack a level, measured), so the bound keeps it under 2 MiB,
 * a quarter of the main thread's default stack. Deeper client ids are refused. */
#define TK_MAX_DEPTH 10000

/*
 * Decodes the term at buf + *index (external format without the version byte) and
 * appends its canonical bytes to out, advancing *index past the term.
 *
 * The buffer is borrowed and only read. The caller guarantees that the term has
 * been checked by cn_term_skip (every term a process receives from the network
 * has): this form walks it again with cn_term_skip_trusted to find its end and
 * decodes nothing past that end, whatever the term's inner fields claim. Use
 * tk_canonical_n for bytes that have not been checked.
 *
 * Returns 0; CN_EDECODE for a malformed or unsupported term; -ENOMEM when out
 * cannot grow. On error *index and out->len are as they were on entry. Work is O(n log n) in the term's size
 * for realistic terms (see the note on maps in term_key.c): each byte is written
 * once, however deeply maps nest.
 */
int tk_canonical(const char *buf, int *index, cn_buf *out);

/*
 * As tk_canonical, but never reads at or past buf + len: a truncated term is
 * CN_EDECODE. An *index outside [0, len] is CN_EDECODE too.
 */
int tk_canonical_n(const char *buf, size_t len, int *index, cn_buf *out);

/*
 * As tk_canonical_n, and *work (when not NULL) receives the work the call did, in
 * bytes written, compared and copied plus pieces visited: the measure the tests
 * hold to a bound, since no test may time the call.
 */
int tk_canonical_measured(const char *buf, size_t len, int *index, cn_buf *out, uint64_t *work);

#endif
