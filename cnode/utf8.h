/*
 * UTF-8 as the distribution protocol's atoms use it: validation by the rules
 * the BEAM applies to an atom's text (no overlong forms, no surrogates, nothing
 * past U+10FFFF), and the limit of 255 characters per atom.
 *
 * Used by the term walker (every atom from the network), by process
 * registration (a name is an atom) and by the log's escaping (valid text is kept
 * as it is, anything else is shown as bytes).
 */
#ifndef CN_UTF8_H
#define CN_UTF8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The most characters an atom has, and the most bytes its UTF-8 text takes. */
#define CN_ATOM_MAX_CHARS 255
#define CN_ATOM_MAX_BYTES (4 * CN_ATOM_MAX_CHARS)

/*
 * The length (1 to 4) of the valid UTF-8 sequence at s[0..n), or 0 when s does
 * not start with one (n == 0 included). *cp gets the code point (may be NULL).
 */
size_t cn_utf8_seq(const unsigned char *s, size_t n, unsigned *cp);

/*
 * The number of characters in s[0..n) when it is valid UTF-8 of at most
 * CN_ATOM_MAX_CHARS characters, the text of a legal atom; -1 otherwise. NUL
 * bytes are legal characters here, as they are in atoms.
 */
int cn_utf8_atom_chars(const char *s, size_t n);

/*
 * Whether s[0..n) is at most CN_ATOM_MAX_CHARS bytes of ASCII, read a word at a
 * time (a byte at a time below 8): the common atom, a legal one, settled
 * without a call. False says
 * nothing: cn_utf8_atom_chars decides.
 */
static inline int cn_utf8_short_ascii(const char *s, size_t n)
{
    if (n > CN_ATOM_MAX_CHARS)
        return 0;
    if (n < 8) {
        unsigned char acc = 0;
        for (size_t i = 0; i < n; i++)
            acc |= (unsigned char)s[i];
        return acc < 0x80;
    }
    uint64_t acc = 0, w;
    size_t i = 0;
    for (; n - i > 8; i += 8) {
        memcpy(&w, s + i, 8);
        acc |= w;
    }
    memcpy(&w, s + n - 8, 8);
    return ((acc | w) & 0x8080808080808080ull) == 0;
}

#endif
