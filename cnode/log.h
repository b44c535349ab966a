/*
 * One logging entry point. The level is checked before anything is formatted, so
 * a debug line on the per-message path costs one comparison when debug is off.
 * Lines go to stderr as "LEVEL [component] message".
 *
 * Untrusted text (a peer's node name, an atom or a term from the network, an
 * address) goes into a line only through cn_log_escape, so a peer can neither
 * forge lines nor hide what it sent: the BEAM, too, prints such names quoted.
 * As a last resort the writer replaces any control byte left in a message, so
 * one call is always one line.
 */
#ifndef CN_LOG_H
#define CN_LOG_H

#include <stddef.h>

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

/* Room for any node name or atom escaped, up to the length of a log line. */
#define CN_LOG_ESC_MAX 1024

/*
 * Writes s[0..n) into dst (cap bytes, at least 8) as one printable line and
 * returns dst: backslash, newline, carriage return and tab become \\, \n, \r
 * and \t; any other control byte, any byte that is not part of valid UTF-8, and
 * the UTF-8 of C1 controls and of the line and paragraph separators become
 * \xHH; valid UTF-8 text is kept. What does not fit ends in "...". Cheap
 * enough for any log line, and only runs when the line is written when called
 * among the arguments of CN_INFO and friends.
 */
const char *cn_log_escape(char *dst, size_t cap, const char *s, size_t n);
/* The same for a NUL-terminated string. */
const char *cn_log_escape_str(char *dst, size_t cap, const char *s);

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
