/*
 * erl's -ssl_dist_optfile read by the C node (cnode/tls_optfile.h): the files a
 * BEAM operator writes, what the C node takes from each section, what it
 * refuses (an option it would not honour, sections that disagree, bad syntax)
 * with a reason, and how the --tls-* flags win over the file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cnode/error.h"
#include "cnode/tls_optfile.h"

static char file[64];

/* Writes text to a fresh temporary file and reads it; the result, and the reason in why. */
static int read_text(const char *text, cn_tls_optfile *out, char *why, size_t n)
{
    snprintf(file, sizeof file, "/tmp/cnode_optfile_XXXXXX");
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    why[0] = '\0';
    int rc = cn_tls_optfile_read(file, out, why, n);
    unlink(file);
    return rc;
}

static void refused(const char *text, const char *reason)
{
    cn_tls_optfile f;
    char why[512];
    assert_int_equal(read_text(text, &f, why, sizeof why), CN_ETLS);
    if (strstr(why, reason) == NULL)
        fail_msg("'%s' lacks '%s'", why, reason);
    assert_null(strchr(why, '\n'));
}

static void a_mutual_verification_file(void **state)
{
    (void)state;
    cn_tls_optfile f;
    char why[512];
    const char *text =
        "%% The dist options of the cluster.\n"
        "[{server, [{certfile, \"/etc/dist/node.pem\"}, {keyfile, \"/etc/dist/node.key\"},\n"
        "           {cacertfile, \"/etc/dist/ca.pem\"}, {verify, verify_peer},\n"
        "           {fail_if_no_peer_cert, true}, {secure_renegotiate, true},\n"
        "           {versions, ['tlsv1.2', 'tlsv1.3']}]},\n"
        " {client, [{certfile, \"/etc/dist/node.pem\"}, {keyfile, \"/etc/dist/node.key\"},\n"
        "           {cacertfile, \"/etc/dist/ca.pem\"}, {verify, verify_peer}]}].  % done\n";
    assert_int_equal(read_text(text, &f, why, sizeof why), 0);
    assert_string_equal(f.certfile, "/etc/dist/node.pem");
    assert_string_equal(f.keyfile, "/etc/dist/node.key");
    assert_string_equal(f.cacertfile, "/etc/dist/ca.pem");
    assert_true(f.has_verify);
    assert_false(f.verify_none);
    assert_true(f.has_fail);
    assert_true(f.fail_if_no_peer_cert);
}

static void the_client_section_fills_in(void **state)
{
    (void)state;
    cn_tls_optfile f;
    char why[512];
    const char *text = "[{server, [{certfile, \"a.pem\"}]}, {client, [{cacertfile, \"ca.pem\"}, "
                       "{verify, verify_none}, {fail_if_no_peer_cert, false}]}].";
    assert_int_equal(read_text(text, &f, why, sizeof why), 0);
    assert_string_equal(f.certfile, "a.pem");
    assert_string_equal(f.keyfile, "");
    assert_string_equal(f.cacertfile, "ca.pem");
    assert_true(f.has_verify && f.verify_none);
    /* fail_if_no_peer_cert is the server's: a client section's says nothing. */
    assert_false(f.has_fail);
}

static void what_is_refused(void **state)
{
    (void)state;
    refused("[{server, [{certfile, \"a.pem\"}]}, {client, [{certfile, \"b.pem\"}]}].", "differ in certfile");
    refused("[{server, [{verify_fun, {m, f, []}}]}].", "verify_fun");
    refused("[{server, [{depth, 3}]}].", "depth");
    refused("[{server, [{versions, ['tlsv1.1']}]}].", "versions");
    refused("[{server, [{verify, maybe}]}].", "verify");
    refused("[{server, [{certfile, \"a.pem\"}]}]", "final '.'");
    refused("[{server, [{certfile, \"a.pem\"}]},\n\n {client, [}].", "line 3");
    refused("[{server, [{certfile, \"a.pem}]}].", "unterminated string");
    refused("[{elsewhere, []}].", "{server, Options}");
    refused("{server, []}.", "not a list");
    refused("[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]].", "nested");
    cn_tls_optfile f;
    char why[512];
    assert_int_equal(cn_tls_optfile_read("/nonexistent/dist.conf", &f, why, sizeof why), CN_ETLS);
    assert_non_null(strstr(why, "cannot read /nonexistent/dist.conf"));
}

static void the_flags_win_over_the_file(void **state)
{
    (void)state;
    cn_tls_optfile f;
    char why[512];
    const char *text = "[{server, [{certfile, \"f.pem\"}, {keyfile, \"f.key\"}, {cacertfile, \"fca.pem\"}, "
                       "{verify, verify_none}, {fail_if_no_peer_cert, false}]}].";
    assert_int_equal(read_text(text, &f, why, sizeof why), 0);
    cn_tls_config cfg = {.certfile = "flag.pem"};
    cn_tls_optfile_apply(&f, &cfg, 1, 0);
    assert_string_equal(cfg.certfile, "flag.pem");
    assert_string_equal(cfg.keyfile, "f.key");
    assert_string_equal(cfg.cacertfile, "fca.pem");
    assert_false(cfg.verify_none);               /* --tls-verify was given */
    assert_true(cfg.no_fail_if_no_peer_cert);    /* from the file */
    /* What the file leaves out keeps the C node's defaults (verify_peer, fail_if_no_peer_cert). */
    assert_int_equal(read_text("[{server, [{certfile, \"x.pem\"}]}].", &f, why, sizeof why), 0);
    cn_tls_config dflt = {0};
    cn_tls_optfile_apply(&f, &dflt, 0, 0);
    assert_false(dflt.verify_none);
    assert_false(dflt.no_fail_if_no_peer_cert);
    assert_null(dflt.keyfile);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_mutual_verification_file),
        cmocka_unit_test(the_client_section_fills_in),
        cmocka_unit_test(what_is_refused),
        cmocka_unit_test(the_flags_win_over_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
