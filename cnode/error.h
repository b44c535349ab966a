/*
 * Error codes. Functions return 0 (or a count) on success and a negative code on
 * failure. System errors pass up as -errno; the codes below are our own and lie
 * below -4000 so they never collide with an errno value. ei's -1 becomes
 * CN_EDECODE at the boundary.
 */
#ifndef CN_ERROR_H
#define CN_ERROR_H

#define CN_ERRNO_MAP(X)                                                     \
    X(EDECODE, -4001, "malformed term or message")                          \
    X(EPROTO, -4002, "distribution protocol violation")                     \
    X(ECOOKIE, -4003, "cookie mismatch")                                    \
    X(ENOPROC, -4004, "no such process")                                    \
    X(ENOCONN, -4005, "not connected to that node")                         \
    X(EEXIST, -4006, "name already registered")                             \
    X(EFULL, -4007, "write queue full")                                     \
    X(ECORRUPT, -4008, "corrupt state file")                                \
    X(EVERSION, -4009, "unsupported version")                               \
    X(ENOTALIVE, -4010, "name not allowed or already in use")               \
    X(EAGAIN_HS, -4011, "handshake needs more bytes")                      \
    X(ESTOPPED, -4012, "server stopped in init")                            \
    X(EIGNORED, -4013, "server init returned ignore")                       \
    X(EBUSY, -4014, "still open: close it first")                           \
    X(ETLS, -4015, "TLS failure")

enum {
#define CN_ERR_ENUM(name, value, text) CN_##name = (value),
    CN_ERRNO_MAP(CN_ERR_ENUM)
#undef CN_ERR_ENUM
};

/* A static description of any code this project returns, ours or -errno. */
const char *cn_strerror(int err);

#endif
