/*
 * The node's end of the heart (supervisor/heart.h): a uv_timer that writes a
 * heartbeat byte to the watchdog, and a watch on the same socket that notices
 * the watchdog's death (end-of-file) at once.
 *
 * Both handles are unreferenced: they never keep the loop running, so the
 * loop ends when the application has stopped, and the beats go on through the
 * whole shutdown (a shutdown that hangs is killed like any hung loop). Close
 * the heart after uv_run returns and run the loop once more to finish it.
 */
#ifndef SUP_HEART_BEAT_H
#define SUP_HEART_BEAT_H

#include <uv.h>

typedef struct sup_heart_beat sup_heart_beat;

/* Called once, on the loop, when the watchdog's end of the socket has closed. */
typedef void (*sup_heart_lost_cb)(void *data);

/* The beat interval for a timeout: a tenth of it, at most a second, so a few late beats never look dead. */
unsigned sup_heart_beat_interval_ms(unsigned timeout_s);

/*
 * Starts beating on fd every interval_ms, the first beat at once, and watching
 * fd for the watchdog's end. Takes fd (closed by sup_heart_beat_close; a
 * nonblocking stream socket). lost_cb may be NULL. Returns 0 and the heart in
 * *out, or a libuv error, and then fd is closed and nothing was made.
 */
int sup_heart_beat_start(uv_loop_t *loop, int fd, unsigned interval_ms, sup_heart_lost_cb lost_cb, void *data,
                         sup_heart_beat **out);

/* Stops beating and closes fd; the memory goes on a later loop turn. NULL does nothing. */
void sup_heart_beat_close(sup_heart_beat *b);

#endif
