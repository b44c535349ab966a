/*
 * Fuzz target: a connected node fed arbitrary bytes by its peer after the
 * handshake. The input is the peer's byte stream (4-byte length-prefixed frames
 * of control tuples and messages, see gen_corpus.c), fed in two pieces so that
 * frames straddling reads are reassembled, with loop turns between them. The node
 * runs the rate limiter, the counter and two bare processes, so REG_SEND, SEND,
 * MONITOR_P, LINK, UNLINK_ID and the EXIT family reach real targets. Every input
 * gets a fresh node, freed completely afterwards (LeakSanitizer checks it).
 */
#include <stdint.h>
#include <stdlib.h>

#include "test/fuzz/fuzz_node.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_node fn;
    if (fn_setup(&fn) != 0)
        abort();
    size_t half = size / 2;
    fn_feed(&fn, data, half);
    fn_feed(&fn, data + half, size - half);
    fn_teardown(&fn);
    return 0;
}
