/*
 * Fuzz target: the term walker (cnode/term.h) and the rate limiter's canonical key
 * (genserver/term_key.h). Every term the walker accepts is one a process may
 * receive, so the canonicaliser must be safe on it in both forms, and agree with
 * itself: canonical bytes are a term the walker accepts, and canonicalising them
 * again gives them back. The accepted bytes are copied to an allocation of exactly
 * their size, so a read past the term is a heap over-read ASan reports.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ei.h>

#include "cnode/buf.h"
#include "cnode/log.h"
#include "cnode/term.h"
#include "cnode/utf8.h"
#include "genserver/term_key.h"

/* memcmp's pointers must not be NULL, even for no bytes: an empty cn_buf's are. */
static int same(const cn_buf *a, const cn_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void check_canonical(const char *term, size_t len)
{
    cn_buf a, b;
    cn_buf_init(&a);
    cn_buf_init(&b);
    int i = 0, j = 0;
    int rc = tk_canonical(term, &i, &a);
    int rc_n = tk_canonical_n(term, len, &j, &b);
    if (rc != rc_n || i != j || !same(&a, &b))
        abort();
    if (rc == 0) {
        if ((size_t)i != len)
            abort();
        /* The canonical bytes are a valid term, their own canonical form. */
        size_t end = 0;
        if (cn_term_skip(a.data, a.len, &end) != 0 || end != a.len)
            abort();
        int k = 0;
        cn_buf_reset(&b);
        if (tk_canonical_n(a.data, a.len, &k, &b) != 0 || !same(&a, &b))
            abort();
    }
    cn_buf_free(&a);
    cn_buf_free(&b);
}

/* A walked term that is an atom reads as its text, legal UTF-8 of at most 255 characters. */
static void check_atom(const char *term, size_t len)
{
    unsigned char tag = (unsigned char)term[0];
    int is_atom = tag == ERL_ATOM_EXT || tag == ERL_SMALL_ATOM_EXT || tag == ERL_ATOM_UTF8_EXT ||
                  tag == ERL_SMALL_ATOM_UTF8_EXT;
    char text[MAXATOMLEN_UTF8];
    size_t idx = 0, n = 0;
    int rc = cn_term_decode_atom(term, len, &idx, text, &n);
    if ((rc == 0) != is_atom)
        abort();
    if (rc == 0 && (idx != len || n > CN_ATOM_MAX_BYTES || text[n] != '\0' || cn_utf8_atom_chars(text, n) < 0))
        abort();
}

/* Any bytes at all escape to one line of printable text within the buffer. */
static void check_escape(const char *s, size_t n)
{
    char out[256];
    cn_log_escape(out, sizeof out, s, n);
    size_t k = strnlen(out, sizeof out);
    if (k >= sizeof out)
        abort();
    for (size_t i = 0; i < k; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7F)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_escape((const char *)data, size);
    size_t end = 0;
    if (cn_term_skip((const char *)data, size, &end) != 0)
        return 0;
    char *term = malloc(end ? end : 1);
    if (term == NULL)
        return 0;
    memcpy(term, data, end);
    int e = 0;
    if (cn_term_skip_trusted(term, &e) != 0 || (size_t)e != end)
        abort();
    check_canonical(term, end);
    check_atom(term, end);
    /* The log printer runs on terms peers send (unknown calls are logged). */
    free(cn_term_sprint(term, 0));
    free(term);
    return 0;
}
