/*
 * The Counter server: a drop-in for the Elixir Counter GenServer.
 *
 *   GenServer.call(counter, :increment)  -> new value
 *   GenServer.call(counter, :decrement)  -> new value
 *   GenServer.call(counter, :get_value)  -> current value
 *   GenServer.cast(counter, :increment)
 *
 * Values are exact integers of up to 128 bits: past 2^63 they travel as bignums,
 * exactly as an Elixir counter's would. An increment that would leave 128 bits
 * (2^64 times further than 64 bits reach) replies {:error, :overflow} and changes
 * nothing. :sys.replace_state takes any integer that fits.
 *
 * With a data directory the value is journaled (genserver/journal.h): every
 * :increment and :decrement (call or cast) and :sys.replace_state is a record.
 * While the journal refuses (the disk said no), the calls that would change the
 * value answer {:error, :not_durable} and change nothing; casts still change
 * the value in memory (they are never acknowledged), which the next snapshot
 * saves; :sys.replace_state is refused ({:error, :state_refused}).
 */
#ifndef GS_COUNTER_H
#define GS_COUNTER_H

#include "genserver/genserver.h"
#include "genserver/journal.h"

typedef struct counter_config {
    long long initial;      /* value when no saved state exists */
    const char *data_dir;   /* where the snapshot and journal live; NULL: not saved */
    gs_durability durability;   /* 0 is GS_DURABLE_TERMINATE; the program's default is crash */
    uint64_t snapshot_bytes;    /* journal bytes between snapshots; 0: the default */
    gs_handover *handover;      /* state a stopped incarnation could not save; may be NULL */
} counter_config;

extern const gs_callbacks counter_callbacks;

/* Starts the counter registered as name. cfg is borrowed for the server's life. */
int counter_start(cn_node *node, const counter_config *cfg, const char *name, cn_proc *parent, gs_server **out);

#endif
