/*
 * One logging entry point. The level is checked before anything is formatted, so
 * a debug line on the per-message path costs one comparison when debug is off.
 * Lines go to stderr as "LEVEL [component] message".
 */
#ifndef CN_LOG_H
#define CN_LOG_H

typedef enum cn_log_level {
    CN_LOG_DEBUG = 0,
    CN_LOG_INFO = 1,
    CN_LOG_WARNING = 2,
    CN_LOG_ERROR = 3,
    CN_LOG_NONE = 4
} cn_log_level;

extern cn_log_level cn_log_threshold;

/* Parses "debug", "info", "warning" or "error". Returns 0, or -1 for anything else. */
int cn_log_parse_level(const char *s, cn_log_level *out);
void cn_log_write(cn_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define cn_log(level, component, ...)                                   \
    do {                                                                \
        if ((level) >= cn_log_threshold)                                \
            cn_log_write((level), (component), __VA_ARGS__);            \
    } while (0)

#define CN_DEBUG(c, ...) cn_log(CN_LOG_DEBUG, c, __VA_ARGS__)
#define CN_INFO(c, ...) cn_log(CN_LOG_INFO, c, __VA_ARGS__)
#define CN_WARN(c, ...) cn_log(CN_LOG_WARNING, c, __VA_ARGS__)
#define CN_ERROR(c, ...) cn_log(CN_LOG_ERROR, c, __VA_ARGS__)

#endif
