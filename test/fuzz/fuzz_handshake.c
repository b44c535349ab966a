/*
 * Fuzz target: the handshake state machine in both roles, with a fixed cookie and
 * a fixed challenge. The input (see fuzz_handshake.h) chooses the role and the
 * answers, then gives the peer's bytes, which arrive in pieces whose sizes a small
 * generator seeded by the input picks: the machine must keep what it did not
 * consume and go on when more arrives, as the connection layer feeds it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test/fuzz/fuzz_handshake.h"

/* Feeds what is pending until the machine consumes no more. -1 once it failed. */
static int drain(cn_hs *hs, cn_buf *in, cn_buf *out)
{
    for (;;) {
        int rc = cn_hs_feed(hs, in->data, in->len, out);
        /* What we would send is not examined; it must only be whole and bounded. */
        if (out->len > 4 * (CN_HS_MAX_MSG + 2))
            abort();
        cn_buf_reset(out);
        if (rc < 0)
            return -1;
        if ((size_t)rc > in->len)
            abort();
        if (rc == 0)
            return 0;
        cn_buf_consume(in, (size_t)rc);
    }
}

/* After success, the results must be what the contract says. */
static void check_done(const cn_hs *hs)
{
    if (memchr(hs->peer_name, '\0', sizeof hs->peer_name) == NULL ||
        strchr(hs->peer_name, '@') == NULL)
        abort();
    if ((hs->flags & ~hs->cfg.our_flags) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t cfg_byte = data[0];
    uint32_t seed = data[1];
    data += 2;
    size -= 2;
    cn_hs_config hc;
    fh_config(&cfg_byte, &hc);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    if (cn_hs_init(&hs, &hc) != 0)
        abort();
    if (hc.role == CN_HS_CONNECT && cn_hs_start(&hs, &out) != 0)
        abort();
    cn_buf_reset(&out);
    size_t at = 0;
    int failed = 0;
    while (at < size && !failed) {
        /* Seed 0 gives everything at once; others, pieces of 1 to 64 bytes. */
        size_t piece = size - at;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            size_t want = 1 + (seed >> 16) % 64;
            piece = want < piece ? want : piece;
        }
        cn_buf_append(&in, data + at, piece);
        at += piece;
        failed = drain(&hs, &in, &out) < 0;
    }
    if (cn_hs_done(&hs)) {
        check_done(&hs);
        /* A finished machine consumes nothing more: those bytes are frames. */
        if (in.len > 0 && cn_hs_feed(&hs, in.data, in.len, &out) != 0)
            abort();
    }
    cn_buf_free(&in);
    cn_buf_free(&out);
    return 0;
}
