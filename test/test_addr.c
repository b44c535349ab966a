/*
 * Unit tests of cnode/addr.h: node names split at the first '@' (IPv6 host
 * parts hold colons), literals parsed per family as inet_tcp and inet6_tcp
 * take them, and addresses written for logs ([::1]:port).
 */
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>
#include <cmocka.h>

#include "cnode/addr.h"

static void split_ok(const char *name, const char *want_alive, const char *want_host)
{
    char alive[256], host[256];
    assert_int_equal(cn_name_split(name, alive, sizeof alive, host, sizeof host), 0);
    assert_string_equal(alive, want_alive);
    assert_string_equal(host, want_host);
}

static void names_split_at_the_first_at(void **state)
{
    (void)state;
    split_ok("cnode@127.0.0.1", "cnode", "127.0.0.1");
    split_ok("cnode@::1", "cnode", "::1");
    split_ok("a@fe80::1%eth0", "a", "fe80::1%eth0");
    split_ok("a@::ffff:127.0.0.1", "a", "::ffff:127.0.0.1");
    split_ok("b@2001:db8::8:800:200c:417a", "b", "2001:db8::8:800:200c:417a");
    split_ok("node@host.example.org", "node", "host.example.org");
    split_ok("x@y", "x", "y");
}

static void bad_names_are_refused(void **state)
{
    (void)state;
    static const char *bad[] = {"cnode", "@::1", "cnode@", "a@b@c", "a@::1@x", "", "@"};
    char alive[256] = "untouched", host[256] = "untouched";
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(cn_name_split(bad[i], alive, sizeof alive, host, sizeof host), -EINVAL);
        assert_string_equal(alive, "untouched");
        assert_string_equal(host, "untouched");
    }
    assert_int_equal(cn_name_split(NULL, alive, sizeof alive, host, sizeof host), -EINVAL);
}

static void parts_must_fit_their_room(void **state)
{
    (void)state;
    char alive[4], host[4];
    assert_int_equal(cn_name_split("abc@::1", alive, sizeof alive, host, sizeof host), 0);
    assert_string_equal(alive, "abc");
    assert_string_equal(host, "::1");
    assert_int_equal(cn_name_split("abcd@::1", alive, sizeof alive, host, sizeof host), -EINVAL);
    assert_int_equal(cn_name_split("abc@::11", alive, sizeof alive, host, sizeof host), -EINVAL);
}

static void families(void **state)
{
    (void)state;
    assert_int_equal(cn_addr_family(0), AF_INET);
    assert_int_equal(cn_addr_family(AF_INET), AF_INET);
    assert_int_equal(cn_addr_family(AF_INET6), AF_INET6);
    assert_int_equal(cn_addr_family(AF_UNIX), -EINVAL);
    assert_int_equal(cn_addr_family(-1), -EINVAL);
}

static void ipv4_literals(void **state)
{
    (void)state;
    struct sockaddr_storage a;
    assert_int_equal(cn_addr_literal(AF_INET, "127.0.0.1", 4369, &a), 0);
    assert_int_equal(a.ss_family, AF_INET);
    const struct sockaddr_in *in = (const struct sockaddr_in *)&a;
    assert_int_equal(ntohl(in->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(cn_addr_port((const struct sockaddr *)&a), 4369);
    /* Not an IPv4 literal: a name to resolve, or IPv6. */
    static const char *not4[] = {"::1", "localhost", "127.0.0", "127.0.0.1:80", "", "[127.0.0.1]"};
    for (size_t i = 0; i < sizeof not4 / sizeof not4[0]; i++)
        assert_int_equal(cn_addr_literal(AF_INET, not4[i], 1, &a), -EINVAL);
}

static void ipv6_literals(void **state)
{
    (void)state;
    struct sockaddr_storage a;
    assert_int_equal(cn_addr_literal(AF_INET6, "::1", 4369, &a), 0);
    assert_int_equal(a.ss_family, AF_INET6);
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a;
    assert_memory_equal(&in6->sin6_addr, &in6addr_loopback, sizeof in6addr_loopback);
    assert_int_equal(cn_addr_port((const struct sockaddr *)&a), 4369);
    assert_int_equal(cn_addr_literal(AF_INET6, "fd00::2", 1, &a), 0);
    assert_int_equal(cn_addr_literal(AF_INET6, "2001:db8::8:800:200c:417a", 1, &a), 0);
    assert_int_equal(cn_addr_literal(AF_INET6, "::ffff:127.0.0.1", 1, &a), 0);
    /*
     * Not an IPv6 literal. An IPv4 one is not mapped: OTP 25's
     * inet:getaddr("127.0.0.1", inet6) is {error, nxdomain} too. Brackets
     * belong to URLs, not to node names.
     */
    static const char *not6[] = {"127.0.0.1", "localhost", "[::1]", ":::1", "::1::", "", "1:2:3:4:5:6:7:8:9"};
    for (size_t i = 0; i < sizeof not6 / sizeof not6[0]; i++)
        assert_int_equal(cn_addr_literal(AF_INET6, not6[i], 1, &a), -EINVAL);
    assert_int_equal(cn_addr_literal(AF_UNIX, "::1", 1, &a), -EINVAL);
}

/* A link-local literal keeps its scope, and the log line shows it. */
static void scoped_ipv6_literals(void **state)
{
    (void)state;
    unsigned lo = if_nametoindex("lo");
    if (lo == 0)
        skip();
    struct sockaddr_storage a;
    assert_int_equal(cn_addr_literal(AF_INET6, "fe80::1%lo", 7, &a), 0);
    assert_int_equal(((const struct sockaddr_in6 *)&a)->sin6_scope_id, lo);
    char s[CN_ADDR_STRLEN];
    cn_addr_format((const struct sockaddr *)&a, s, sizeof s);
    assert_string_equal(s, "[fe80::1%lo]:7");
}

static void loopback_and_any(void **state)
{
    (void)state;
    struct sockaddr_storage a;
    char s[CN_ADDR_STRLEN];
    cn_addr_loopback(AF_INET, 4369, &a);
    cn_addr_format((const struct sockaddr *)&a, s, sizeof s);
    assert_string_equal(s, "127.0.0.1:4369");
    cn_addr_loopback(AF_INET6, 4369, &a);
    cn_addr_format((const struct sockaddr *)&a, s, sizeof s);
    assert_string_equal(s, "[::1]:4369");
    cn_addr_any(AF_INET, 0, &a);
    cn_addr_format((const struct sockaddr *)&a, s, sizeof s);
    assert_string_equal(s, "0.0.0.0:0");
    cn_addr_any(AF_INET6, 9, &a);
    cn_addr_format((const struct sockaddr *)&a, s, sizeof s);
    assert_string_equal(s, "[::]:9");
}

static void ports_are_set_and_read(void **state)
{
    (void)state;
    struct sockaddr_storage a;
    cn_addr_loopback(AF_INET6, 1, &a);
    cn_addr_set_port(&a, 65535);
    assert_int_equal(cn_addr_port((const struct sockaddr *)&a), 65535);
    cn_addr_loopback(AF_INET, 1, &a);
    cn_addr_set_port(&a, 4370);
    assert_int_equal(cn_addr_port((const struct sockaddr *)&a), 4370);
    struct sockaddr_storage other;
    memset(&other, 0, sizeof other);
    other.ss_family = AF_UNIX;
    cn_addr_set_port(&other, 5);
    assert_int_equal(cn_addr_port((const struct sockaddr *)&other), 0);
}

static void addresses_are_written_for_logs(void **state)
{
    (void)state;
    struct sockaddr_storage a;
    char s[CN_ADDR_STRLEN];
    assert_int_equal(cn_addr_literal(AF_INET6, "2001:db8::1", 4370, &a), 0);
    cn_addr_format((const struct sockaddr *)&a, s, sizeof s);
    assert_string_equal(s, "[2001:db8::1]:4370");
    /* An IPv4 peer on a dual-stack listener is shown as the IPv4 address it is. */
    assert_int_equal(cn_addr_literal(AF_INET6, "::ffff:10.0.0.1", 80, &a), 0);
    cn_addr_format((const struct sockaddr *)&a, s, sizeof s);
    assert_string_equal(s, "10.0.0.1:80");
    /* The longest IPv6 address fits the room. */
    assert_int_equal(cn_addr_literal(AF_INET6, "1111:2222:3333:4444:5555:6666:7777:8888", 65535, &a), 0);
    cn_addr_format((const struct sockaddr *)&a, s, sizeof s);
    assert_string_equal(s, "[1111:2222:3333:4444:5555:6666:7777:8888]:65535");
    /* A short room truncates and still terminates. */
    char small[6];
    cn_addr_format((const struct sockaddr *)&a, small, sizeof small);
    assert_string_equal(small, "[1111");
    struct sockaddr_storage other;
    memset(&other, 0, sizeof other);
    other.ss_family = AF_UNIX;
    cn_addr_format((const struct sockaddr *)&other, s, sizeof s);
    assert_string_equal(s, "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_split_at_the_first_at),
        cmocka_unit_test(bad_names_are_refused),
        cmocka_unit_test(parts_must_fit_their_room),
        cmocka_unit_test(families),
        cmocka_unit_test(ipv4_literals),
        cmocka_unit_test(ipv6_literals),
        cmocka_unit_test(scoped_ipv6_literals),
        cmocka_unit_test(loopback_and_any),
        cmocka_unit_test(ports_are_set_and_read),
        cmocka_unit_test(addresses_are_written_for_logs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
