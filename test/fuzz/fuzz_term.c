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

#include "cnode/buf.h"
#include "cnode/term.h"
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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
    /* The log printer runs on terms peers send (unknown calls are logged). */
    free(cn_term_sprint(term, 0));
    free(term);
    return 0;
}
