/*
 * Watches the program's stdin for its end, so a node run as a port of a BEAM
 * (the CNode Elixir package, erlexec, any parent holding a pipe to it) stops
 * when its owner is gone, even when the owner was killed with SIGKILL and
 * could send no signal: the kernel closes the owner's end of the pipe, and
 * read() here returns 0. This is the contract OTP ports follow (a port
 * program exits when its stdin closes).
 *
 * Whatever arrives on stdin before the end is read and dropped. The handle is
 * unreferenced, so it never keeps the loop running by itself.
 */
#ifndef SUP_STDIN_WATCH_H
#define SUP_STDIN_WATCH_H

#include <uv.h>

typedef struct sup_stdin_watch sup_stdin_watch;

/* Called once, on the loop, when stdin reached its end or failed. */
typedef void (*sup_stdin_eof_cb)(void *data);

/*
 * Starts watching fd 0 on loop. The watch is the caller's, freed by
 * sup_stdin_watch_close; fd 0 is borrowed (libuv makes it nonblocking, which
 * is why a terminal is no place for it). Returns 0 and the watch in *out, or a libuv error
 * (UV_EPERM when stdin is a regular file or /dev/null, which epoll cannot
 * watch and which no owner holds open), and then nothing was made.
 */
int sup_stdin_watch_start(uv_loop_t *loop, sup_stdin_eof_cb eof_cb, void *data, sup_stdin_watch **out);

/* Stops watching; the memory goes on a later loop turn. fd 0 stays open. NULL does nothing. */
void sup_stdin_watch_close(sup_stdin_watch *w);

#endif
