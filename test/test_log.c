/*
 * Unit tests of cnode/log.h: level names, the threshold checked before anything
 * is formatted, and the line written to stderr.
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

#include "cnode/log.h"

static void parses_the_four_level_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        cn_log_level level;
    } ok[] = {
        {"debug", CN_LOG_DEBUG},
        {"info", CN_LOG_INFO},
        {"warning", CN_LOG_WARNING},
        {"error", CN_LOG_ERROR},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cn_log_level l = CN_LOG_NONE;
        assert_int_equal(cn_log_parse_level(ok[i].name, &l), 0);
        assert_int_equal(l, ok[i].level);
    }
}

static void refuses_anything_else(void **state)
{
    (void)state;
    static const char *const bad[] = {"", "none", "warn", "DEBUG", "Info", "errors", "debug ", " info",
                                      "inf", "critical", "0", "3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cn_log_level l = CN_LOG_WARNING;
        if (cn_log_parse_level(bad[i], &l) != -1)
            fail_msg("\"%s\" was accepted", bad[i]);
    }
}

static int evaluated;

static int side_effect(void)
{
    return ++evaluated;
}

static void arguments_are_not_evaluated_below_the_threshold(void **state)
{
    (void)state;
    cn_log_level saved = cn_log_threshold;
    cn_log_threshold = CN_LOG_NONE;
    evaluated = 0;
    CN_DEBUG("test", "%d", side_effect());
    CN_INFO("test", "%d", side_effect());
    CN_WARN("test", "%d", side_effect());
    CN_ERROR("test", "%d", side_effect());
    assert_int_equal(evaluated, 0);
    cn_log_threshold = CN_LOG_WARNING;
    CN_INFO("test", "%d", side_effect());
    assert_int_equal(evaluated, 0);
    cn_log_threshold = saved;
}

/* Runs fn with stderr captured; returns what it wrote (static storage). */
static const char *capture(void (*fn)(void))
{
    static char out[8192];
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    fn();
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, sizeof out - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    return out;
}

static void write_lines(void)
{
    cn_log_threshold = CN_LOG_INFO;
    CN_DEBUG("comp", "hidden %d", 1);
    CN_WARN("comp", "hello %d", 42);
    CN_INFO("other", "x=%s", "y");
}

static void lines_name_the_level_and_component(void **state)
{
    (void)state;
    cn_log_level saved = cn_log_threshold;
    const char *out = capture(write_lines);
    cn_log_threshold = saved;
    assert_null(strstr(out, "hidden"));
    const char *first = strstr(out, "[comp] hello 42\n");
    const char *second = strstr(out, "[other] x=y\n");
    assert_non_null(first);
    assert_non_null(second);
    assert_true(first < second);
    /* Each line carries its level name before the component. */
    const char *nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_true(first < nl);
    const char *warn = strstr(out, "warning");
    assert_non_null(warn);
    assert_true(warn < first);
    const char *info = strstr(nl, "info");
    assert_non_null(info);
    assert_true(info < second);
    /* Exactly two lines. */
    int lines = 0;
    for (const char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 2);
}

static void write_long(void)
{
    static char big[5000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cn_log_write(CN_LOG_ERROR, "big", "%s", big);
}

static void a_long_message_is_cut_not_overflowed(void **state)
{
    (void)state;
    const char *out = capture(write_long);
    assert_non_null(strstr(out, "[big] zzzz"));
    size_t len = strlen(out);
    assert_true(len > 1000);
    assert_true(len < 5000);
    assert_int_equal(out[len - 1], '\n');
}

/* cn_log_escape's output for the n bytes of s, in a buffer of cap bytes (static storage). */
static const char *esc(const char *s, size_t n, size_t cap)
{
    static char buf[CN_LOG_ESC_MAX];
    assert_true(cap <= sizeof buf);
    const char *r = cn_log_escape(buf, cap, s, n);
    assert_ptr_equal(r, buf);
    return buf;
}

static void escaping_shows_control_bytes_and_keeps_text(void **state)
{
    (void)state;
    /* The adversary's node name: one line, the break shown as backslash n. */
    const char evil[] = "evil\nERROR [node] forged line@127.0.0.1";
    assert_string_equal(esc(evil, sizeof evil - 1, 256), "evil\\nERROR [node] forged line@127.0.0.1");
    assert_string_equal(esc("a\rb\tc\\d", 7, 64), "a\\rb\\tc\\\\d");
    /* Other controls, DEL and NUL as \xHH; the text around them kept. */
    assert_string_equal(esc("\x1b[31mred\x7f\0z", 11, 64), "\\x1B[31mred\\x7F\\x00z");
    /* Valid UTF-8 is kept; stray bytes are not. */
    assert_string_equal(esc("\xE6\x97\xA5\xE6\x9C\xAC", 6, 64), "\xE6\x97\xA5\xE6\x9C\xAC");
    assert_string_equal(esc("caf\xE9!", 5, 64), "caf\\xE9!");
    assert_string_equal(esc("\xF0\x9F\x98", 3, 64), "\\xF0\\x9F\\x98");
    /* C1 controls (NEL) and the Unicode line separator would break a line for some readers. */
    assert_string_equal(esc("a\xC2\x85" "b\xE2\x80\xA8" "c", 8, 64), "a\\xC2\\x85b\\xE2\\x80\\xA8c");
    assert_string_equal(esc("", 0, 8), "");
}

static void escaping_cuts_between_units_with_an_ellipsis(void **state)
{
    (void)state;
    /* Never half an escape or half a character: what does not fit becomes "...". */
    const char *out = esc("abcdefghij", 10, 8);
    assert_string_equal(out, "abcd...");
    out = esc("\n\n\n\n\n", 5, 10);
    assert_string_equal(out, "\\n\\n\\n...");
    out = esc("\xE6\x97\xA5\xE6\x9C\xAC", 6, 9);
    assert_string_equal(out, "\xE6\x97\xA5...");
    /* Fits exactly with room for the NUL and a possible ellipsis. */
    assert_string_equal(esc("abcd", 4, 8), "abcd");
    /* A name of the longest kind, escaped wholly hostile, stays within the buffer. */
    static char hostile[1020];
    memset(hostile, '\n', sizeof hostile);
    out = esc(hostile, sizeof hostile, CN_LOG_ESC_MAX);
    assert_true(strlen(out) < CN_LOG_ESC_MAX);
    assert_null(strchr(out, '\n'));
}

static void write_raw_control_bytes(void)
{
    cn_log_threshold = CN_LOG_INFO;
    CN_WARN("comp", "forgot to escape: %s", "a\nERROR [x] forged\rb");
}

/* A call site that forgot to escape still writes one line. */
static void the_writer_keeps_one_call_one_line(void **state)
{
    (void)state;
    cn_log_level saved = cn_log_threshold;
    const char *out = capture(write_raw_control_bytes);
    cn_log_threshold = saved;
    assert_non_null(strstr(out, "forgot to escape: a?ERROR [x] forged?b\n"));
    int lines = 0;
    for (const char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_the_four_level_names),
        cmocka_unit_test(refuses_anything_else),
        cmocka_unit_test(arguments_are_not_evaluated_below_the_threshold),
        cmocka_unit_test(lines_name_the_level_and_component),
        cmocka_unit_test(a_long_message_is_cut_not_overflowed),
        cmocka_unit_test(escaping_shows_control_bytes_and_keeps_text),
        cmocka_unit_test(escaping_cuts_between_units_with_an_ellipsis),
        cmocka_unit_test(the_writer_keeps_one_call_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
