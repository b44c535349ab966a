/*
 * The handshake harness's configuration, shared with the corpus generator so that
 * a recorded peer stream replays against exactly the machine that recorded it.
 *
 * An input is: one configuration byte, one piece-size seed, then the peer's bytes.
 *   bit 0      role: 0 we accept (the peer dialed), 1 we connect
 *   bits 1-2   accepting: the status we give (ok, ok_simultaneous, alive, nok)
 *   bit 3      connecting: answer an "alive" status with true
 *   bit 4      connecting: insist that the peer is FH_PEER
 *   bit 5      4-byte length prefixes, as over TLS distribution (cn_hs_config.len4)
 */
#ifndef TEST_FUZZ_HANDSHAKE_H
#define TEST_FUZZ_HANDSHAKE_H

#include <stdint.h>
#include <string.h>

#include "cnode/handshake.h"
#include "cnode/protocol.h"

#define FH_OURS "cnode@127.0.0.1"
#define FH_PEER "peer@127.0.0.1"
#define FH_COOKIE "fuzz"

static uint32_t fh_random(void *ctx)
{
    (void)ctx;
    return 0x12345678u;
}

static const char *fh_status(void *ctx, const char *peer)
{
    static const char *const statuses[] = {"ok", "ok_simultaneous", "alive", "nok"};
    (void)peer;
    return statuses[*(const uint8_t *)ctx >> 1 & 3];
}

/* The configuration byte *cfg_byte must outlive the handshake (status_for reads it). */
static inline void fh_config(const uint8_t *cfg_byte, cn_hs_config *hc)
{
    memset(hc, 0, sizeof *hc);
    hc->role = (*cfg_byte & 1) ? CN_HS_CONNECT : CN_HS_ACCEPT;
    hc->our_name = FH_OURS;
    hc->cookie = FH_COOKIE;
    hc->our_flags = CN_DFLAGS;
    hc->our_creation = 4242;
    hc->random32 = fh_random;
    hc->status_for = fh_status;
    hc->status_ctx = (void *)cfg_byte;
    hc->alive_continue = (*cfg_byte >> 3) & 1;
    hc->expect_peer = (*cfg_byte >> 4) & 1 ? FH_PEER : NULL;
    hc->len4 = (*cfg_byte >> 5) & 1;
}

#endif
