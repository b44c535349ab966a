#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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

void cn_log_write(cn_log_level level, const char *component, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%H:%M:%S", &tm);
    const char *name = level < CN_LOG_NONE ? level_names[level] : "?";
    fprintf(stderr, "%s.%03ld %-7s [%s] %s\n", when, ts.tv_nsec / 1000000, name, component, msg);
}
