/*
 * neuron/stop.h — stop strings matched on the streamed text of one sequence.
 *
 * Contract: a stop_matcher sits between the detokeniser and the client. It is fed each piece of
 * newly decoded text and says which bytes are safe to send now; bytes that might still become
 * the start of a stop string are held back until the following text decides. When a stop
 * string appears, the output ends exactly before it: the stop string and everything after are
 * never emitted.
 *
 * Which stop wins: the one that is complete first in the byte stream (the lowest end offset);
 * among stops ending at the same byte, the longest. The result therefore does not depend on how
 * the text was split into pieces: stops "abc" and "b" on "abc" cut after "a" whether "abc" came
 * in one piece or three.
 *
 * UTF-8: matching is on bytes, and a stop string (valid UTF-8) can only start on a character
 * boundary, so cuts never split a character. The matcher also holds back an incomplete
 * multi-byte character at the end of the text (a token may end mid-character), so every emitted
 * piece ends on a character boundary and can go into a JSON string as is. Flush releases
 * whatever is held, complete or not.
 *
 * With no (non-empty) stop strings the matcher only does the UTF-8 holding.
 * Memory: the matcher copies the stop strings and owns a buffer of at most the longest stop
 * string plus the largest piece fed; emitted text points into it.
 */
#ifndef CORTEX_NEURON_STOP_H
#define CORTEX_NEURON_STOP_H

#include <stdbool.h>
#include <stddef.h>

struct stop_result {
    const char *text; /* bytes to emit now (never NULL); valid until the next call on the matcher */
    size_t len;
    int stop; /* index of the matched stop string in the creation list, or -1 */
};

struct stop_matcher;

/* Creates a matcher for stops[0..n_stops) (NUL-terminated, copied; empty strings never match
 * but keep their index). n_stops may be 0. The caller frees it with stop_matcher_destroy(). */
struct stop_matcher *stop_matcher_create(const char *const *stops, size_t n_stops);

void stop_matcher_destroy(struct stop_matcher *m);

/* Consumes text[0..len) and fills out with what may be emitted now. When out->stop >= 0 a stop
 * string matched: out->text is the last output of the sequence, and the matcher stays stopped
 * (later feeds and flushes emit nothing and report the same index). */
void stop_matcher_feed(struct stop_matcher *m, const char *text, size_t len,
                       struct stop_result *out);

/* Ends the stream: emits all held text (out->stop is -1, or the index if already stopped). */
void stop_matcher_flush(struct stop_matcher *m, struct stop_result *out);

/* The stop string with the given index (as copied at creation), for reporting which one hit. */
const char *stop_matcher_string(const struct stop_matcher *m, int index);

#endif
