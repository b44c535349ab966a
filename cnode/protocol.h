/*
 * Constants of the Erlang distribution protocol, taken from OTP's
 * erts/emulator/beam/dist.h and the "Distribution Protocol" chapter of the erts
 * documentation. Do not type these from memory: published tables disagree.
 */
#ifndef CN_PROTOCOL_H
#define CN_PROTOCOL_H

#include <stdint.h>

#define DFLAG_PUBLISHED 0x01ULL
#define DFLAG_ATOM_CACHE 0x02ULL
#define DFLAG_EXTENDED_REFERENCES 0x04ULL
#define DFLAG_DIST_MONITOR 0x08ULL
#define DFLAG_FUN_TAGS 0x10ULL
#define DFLAG_DIST_MONITOR_NAME 0x20ULL
#define DFLAG_HIDDEN_ATOM_CACHE 0x40ULL
#define DFLAG_NEW_FUN_TAGS 0x80ULL
#define DFLAG_EXTENDED_PIDS_PORTS 0x100ULL
#define DFLAG_EXPORT_PTR_TAG 0x200ULL
#define DFLAG_BIT_BINARIES 0x400ULL
#define DFLAG_NEW_FLOATS 0x800ULL
#define DFLAG_UNICODE_IO 0x1000ULL
#define DFLAG_DIST_HDR_ATOM_CACHE 0x2000ULL
#define DFLAG_SMALL_ATOM_TAGS 0x4000ULL
#define DFLAG_UTF8_ATOMS 0x10000ULL
#define DFLAG_MAP_TAG 0x20000ULL
#define DFLAG_BIG_CREATION 0x40000ULL
#define DFLAG_SEND_SENDER 0x80000ULL
#define DFLAG_BIG_SEQTRACE_LABELS 0x100000ULL
#define DFLAG_EXIT_PAYLOAD 0x400000ULL
#define DFLAG_FRAGMENTS 0x800000ULL
#define DFLAG_HANDSHAKE_23 0x1000000ULL
#define DFLAG_UNLINK_ID 0x2000000ULL
/*
 * OTP 25+: this one bit stands for the whole DFLAG_MANDATORY_25 set. dist.h has
 * 0x4000000 (bit 26); the protocol chapter says bit 36, which is wrong.
 */
#define DFLAG_MANDATORY_25_DIGEST 0x4000000ULL
#define DFLAG_SPAWN (0x1ULL << 32)
#define DFLAG_NAME_ME (0x2ULL << 32)
#define DFLAG_V4_NC (0x4ULL << 32)
#define DFLAG_ALIAS (0x8ULL << 32)
/* OTP 28+: the peer takes ALTACT_SIG_SEND; ALIAS and ALIAS_SEND go away in OTP 30. */
#define DFLAG_ALTACT_SIG (0x20ULL << 32)

/* What OTP 25 refuses to talk without. */
#define DFLAG_MANDATORY_25                                                        \
    (DFLAG_EXTENDED_REFERENCES | DFLAG_FUN_TAGS | DFLAG_EXTENDED_PIDS_PORTS |     \
     DFLAG_UTF8_ATOMS | DFLAG_NEW_FUN_TAGS | DFLAG_BIG_CREATION | DFLAG_NEW_FLOATS | \
     DFLAG_MAP_TAG | DFLAG_EXPORT_PTR_TAG | DFLAG_BIT_BINARIES | DFLAG_HANDSHAKE_23)
/* OTP 26 adds these to the mandatory set; advertising them keeps newer peers happy. */
#define DFLAG_MANDATORY_26 (DFLAG_V4_NC | DFLAG_UNLINK_ID)

/*
 * The flags this node advertises. No atom cache and no fragments: every frame is
 * a plain 'p' frame, which keeps decoding simple and cheap. DIST_MONITOR and
 * DIST_MONITOR_NAME make the BEAM send MONITOR_P for calls by name, so a call to a
 * missing server fails at once with noproc; ALIAS (OTP 24-29) and ALTACT_SIG
 * (OTP 28+, which replaces it) let replies go to the caller's alias, so a late
 * reply is dropped as in OTP. MANDATORY_25_DIGEST is advertised beside the full
 * set it stands for, as erts' DFLAG_DIST_DEFAULT does, for the day it becomes
 * the mandatory form.
 */
#define CN_DFLAGS                                                                 \
    (DFLAG_MANDATORY_25 | DFLAG_MANDATORY_26 | DFLAG_PUBLISHED | DFLAG_DIST_MONITOR | \
     DFLAG_DIST_MONITOR_NAME | DFLAG_SMALL_ATOM_TAGS | DFLAG_SEND_SENDER |        \
     DFLAG_EXIT_PAYLOAD | DFLAG_UNICODE_IO | DFLAG_BIG_SEQTRACE_LABELS | DFLAG_ALIAS | \
     DFLAG_ALTACT_SIG | DFLAG_MANDATORY_25_DIGEST)

/* Control message operations (enum dop in dist.h). */
enum cn_dop {
    DOP_LINK = 1,
    DOP_SEND = 2,
    DOP_EXIT = 3,
    DOP_UNLINK = 4,
    DOP_REG_SEND = 6,
    DOP_GROUP_LEADER = 7,
    DOP_EXIT2 = 8,
    DOP_SEND_TT = 12,
    DOP_EXIT_TT = 13,
    DOP_REG_SEND_TT = 16,
    DOP_EXIT2_TT = 18,
    DOP_MONITOR_P = 19,
    DOP_DEMONITOR_P = 20,
    DOP_MONITOR_P_EXIT = 21,
    DOP_SEND_SENDER = 22,
    DOP_SEND_SENDER_TT = 23,
    DOP_PAYLOAD_EXIT = 24,
    DOP_PAYLOAD_EXIT_TT = 25,
    DOP_PAYLOAD_EXIT2 = 26,
    DOP_PAYLOAD_EXIT2_TT = 27,
    DOP_PAYLOAD_MONITOR_P_EXIT = 28,
    DOP_SPAWN_REQUEST = 29,
    DOP_SPAWN_REQUEST_TT = 30,
    DOP_SPAWN_REPLY = 31,
    DOP_SPAWN_REPLY_TT = 32,
    DOP_ALIAS_SEND = 33,
    DOP_ALIAS_SEND_TT = 34,
    DOP_UNLINK_ID = 35,
    DOP_UNLINK_ID_ACK = 36,
    DOP_ALTACT_SIG_SEND = 37
};

/*
 * The Flags field of ALTACT_SIG_SEND {37, Flags, FromPid, To[, Token]}
 * (ERTS_DOP_ALTACT_SIG_FLG_* in dist.h). Only the low byte means anything;
 * erts ignores the other bits, and so do we.
 */
#define CN_ALTACT_PRIO 0x01u    /* a priority message or exit signal */
#define CN_ALTACT_TOKEN 0x02u   /* a fifth element: a seq_trace token */
#define CN_ALTACT_ALIAS 0x04u   /* To is an alias (a reference) */
#define CN_ALTACT_NAME 0x08u    /* To is a registered name (an atom) */
#define CN_ALTACT_EXIT 0x10u    /* the payload is an exit reason, not a message */

/* Distribution frames after the handshake: 4-byte length, then 'p' (pass through). */
#define CN_PASS_THROUGH 112
#define CN_VERSION_MAGIC 131

/* The lowest and highest handshake versions we speak (5 = pre-OTP 23, 6 = OTP 23+). */
#define CN_DIST_VSN_LOW 5
#define CN_DIST_VSN_HIGH 6

/* EPMD requests and replies. */
#define EPMD_PORT 4369
#define EPMD_ALIVE2_REQ 120
#define EPMD_ALIVE2_RESP 121
#define EPMD_ALIVE2_X_RESP 118
#define EPMD_PORT_PLEASE2_REQ 122
#define EPMD_PORT2_RESP 119

#endif
