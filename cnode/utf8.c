/*
 * UTF-8 validation (utf8.h), by the rules of RFC 3629, which are the BEAM's for
 * atoms: the shortest form only, no UTF-16 surrogates, at most U+10FFFF.
 */
#include "cnode/utf8.h"

/* A continuation byte: 10xxxxxx. */
static int cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

size_t cn_utf8_seq(const unsigned char *s, size_t n, unsigned *cp)
{
    if (n == 0)
        return 0;
    unsigned c = s[0], v, need, min;
    if (c < 0x80) {
        v = c, need = 0, min = 0;
    } else if ((c & 0xE0) == 0xC0) {
        v = c & 0x1F, need = 1, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        v = c & 0x0F, need = 2, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        v = c & 0x07, need = 3, min = 0x10000;
    } else {
        return 0;
    }
    if (n <= need)
        return 0;
    for (unsigned k = 1; k <= need; k++) {
        if (!cont(s[k]))
            return 0;
        v = v << 6 | (s[k] & 0x3F);
    }
    /* Overlong forms, surrogates and code points past Unicode are not UTF-8. */
    if (v < min || (v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF)
        return 0;
    if (cp != NULL)
        *cp = v;
    return need + 1;
}

int cn_utf8_atom_chars(const char *s, size_t n)
{
    /*
     * Every atom from the network passes here, several times a call (issue 13:
     * a quarter of the node's instructions at 64 caller nodes), and nearly all
     * are ASCII: those are settled a word at a time, a character a byte.
     */
    if (cn_utf8_short_ascii(s, n))
        return (int)n;
    const unsigned char *p = (const unsigned char *)s;
    int chars = 0;
    size_t i = 0;
    while (i < n) {
        size_t k = p[i] < 0x80 ? 1 : cn_utf8_seq(p + i, n - i, NULL);
        if (k == 0 || ++chars > CN_ATOM_MAX_CHARS)
            return -1;
        i += k;
    }
    return chars;
}
