/*
 * erl's -ssl_dist_optfile, read by a C node: the one file that configures the
 * BEAM nodes of a TLS cluster configures the C node too.
 *
 * The file is an Erlang term and a dot, as erl reads it:
 *
 *     [{server, [{certfile, "..."}, {keyfile, "..."}, {cacertfile, "..."},
 *                {verify, verify_peer}, {fail_if_no_peer_cert, true}]},
 *      {client, [...]}].
 *
 * A C node has one configuration for both roles, so the server's options are
 * taken, and the client's fill what the server's leave out; options that
 * differ between the two sections are refused rather than half applied.
 * Understood: certfile, keyfile, cacertfile, verify, fail_if_no_peer_cert.
 * Accepted without effect, as they change nothing the C node checks:
 * secure_renegotiate and reuse_sessions (it refuses renegotiation and keeps no
 * sessions), hibernate_after, and versions listing only TLS 1.2 and 1.3 (it
 * offers both; the peer's own list decides). Anything else (verify_fun,
 * depth, crl_check, password, ciphers...) is refused with its name, so a file
 * never means less to the C node than it says to the BEAM.
 */
#ifndef CN_TLS_OPTFILE_H
#define CN_TLS_OPTFILE_H

#include <stddef.h>

#include "cnode/tls.h"

/* What a file set; the strings the config points to live here. */
typedef struct cn_tls_optfile {
    char certfile[4096], keyfile[4096], cacertfile[4096];
    int has_verify, verify_none;
    int has_fail, fail_if_no_peer_cert;
} cn_tls_optfile;

/*
 * Reads the file at path into *out. Returns 0, or CN_ETLS with one line in
 * why[0..whylen) (a syntax error with its line, an unsupported option).
 */
int cn_tls_optfile_read(const char *path, cn_tls_optfile *out, char *why, size_t whylen);

/*
 * Fills what cfg leaves unset (NULL files; verify and fail_if_no_peer_cert
 * unless *_set says the caller chose them) from f, which must outlive cfg.
 */
void cn_tls_optfile_apply(const cn_tls_optfile *f, cn_tls_config *cfg, int verify_set, int fail_set);

#endif
