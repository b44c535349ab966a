/*
 * The log writer and the escaping of untrusted text (log.h).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "utf8.h"

cn_log_level cn_log_threshold = CN_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warning", "error"};

int cn_log_parse_level(const char *s, cn_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (cn_log_level)i;
            return 0;
        }
    }
    return -1;
}

/* Code points a log reader could take for a line break or a terminal command. */
static int unsafe_code_point(unsigned cp)
{
    return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029;
}

/*
 * The escaped form of the unit at s[0..n) (one character or one byte) into out
 * (at least 5 bytes, not NUL-terminated); returns its length, and in *used the
 * input bytes it stands for.
 */
static size_t escape_unit(const unsigned char *s, size_t n, char *out, size_t *used)
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned cp = 0;
    size_t k = cn_utf8_seq(s, n, &cp);
    *used = k ? k : 1;
    if (k > 0 && !unsafe_code_point(cp)) {
        if (cp == '\\') {
            memcpy(out, "\\\\", 2);
            return 2;
        }
        memcpy(out, s, k);
        return k;
    }
    if (k == 1 && (cp == '\n' || cp == '\r' || cp == '\t')) {
        out[0] = '\\';
        out[1] = cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't';
        return 2;
    }
    /* A control character is shown byte by byte; so is a byte outside valid UTF-8. */
    *used = 1;
    out[0] = '\\';
    out[1] = 'x';
    out[2] = hex[s[0] >> 4];
    out[3] = hex[s[0] & 0xF];
    return 4;
}

const char *cn_log_escape(char *dst, size_t cap, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0, i = 0;
    while (i < n) {
        char unit[5];
        size_t used, len = escape_unit(p + i, n - i, unit, &used);
        /* Room for this unit and for the "..." a later one may need, and the NUL. */
        if (o + len + 4 > cap) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(dst + o, unit, len);
        o += len;
        i += used;
    }
    dst[o] = '\0';
    return dst;
}

const char *cn_log_escape_str(char *dst, size_t cap, const char *s)
{
    return cn_log_escape(dst, cap, s, strlen(s));
}

void cn_log_write(cn_log_level level, const char *component, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* A caller that forgot to escape still cannot break the line. */
    for (char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7F)
            *c = '?';

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%H:%M:%S", &tm);
    const char *name = level < CN_LOG_NONE ? level_names[level] : "?";
    fprintf(stderr, "%s.%03ld %-7s [%s] %s\n", when, ts.tv_nsec / 1000000, name, component, msg);
}
