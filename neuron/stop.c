/*
 * neuron/stop.c — stop-string matching over streamed text (contract in stop.h).
 *
 * The buffer holds the text not yet handed out; on each call its front part, given out by the
 * previous call, is dropped first (so the pointer handed out stays valid until then), the new
 * text is appended, and every stop string is searched for with memmem(). A new match must end
 * in the new text: anything ending earlier was looked for by an earlier call. It also cannot
 * start before the held part: the held part is the longest tail that is a proper prefix of a
 * stop string, and a later match's bytes before the new text form exactly such a tail.
 */
#include "stop.h"

#include "xalloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct stop_matcher {
    char **stops;
    size_t *lens;
    size_t n_stops;
    char *buf;
    size_t len, cap;
    size_t given; /* bytes at the front of buf handed out by the last call */
    int stopped;  /* index of the matched stop string, or -1 */
};

struct stop_matcher *stop_matcher_create(const char *const *stops, size_t n_stops)
{
    struct stop_matcher *m = xcalloc(1, sizeof(*m));
    m->n_stops = n_stops;
    m->stops = xcalloc(n_stops ? n_stops : 1, sizeof(*m->stops));
    m->lens = xcalloc(n_stops ? n_stops : 1, sizeof(*m->lens));
    for (size_t i = 0; i < n_stops; i++) {
        m->stops[i] = xstrdup(stops[i]);
        m->lens[i] = strlen(stops[i]);
    }
    m->stopped = -1;
    return m;
}

void stop_matcher_destroy(struct stop_matcher *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_stops; i++)
        free(m->stops[i]);
    free(m->stops);
    free(m->lens);
    free(m->buf);
    free(m);
}

const char *stop_matcher_string(const struct stop_matcher *m, int index)
{
    if (index < 0 || (size_t)index >= m->n_stops)
        return NULL;
    return m->stops[index];
}

static void stop_matcher_drop_given(struct stop_matcher *m)
{
    if (m->given == 0)
        return;
    memmove(m->buf, m->buf + m->given, m->len - m->given);
    m->len -= m->given;
    m->given = 0;
}

static void stop_matcher_give(struct stop_matcher *m, size_t n, struct stop_result *out)
{
    m->given = n;
    out->text = m->buf ? m->buf : "";
    out->len = n;
    out->stop = m->stopped;
}

/* Length of the longest tail of buf that is a proper prefix of some stop string. */
static size_t stop_matcher_prefix_tail(const struct stop_matcher *m)
{
    size_t best = 0;
    for (size_t i = 0; i < m->n_stops; i++) {
        size_t k = m->lens[i] ? m->lens[i] - 1 : 0;
        if (k > m->len)
            k = m->len;
        for (; k > best; k--) {
            if (memcmp(m->buf + m->len - k, m->stops[i], k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

/* Length of an incomplete UTF-8 character at the end of buf (0 if the text ends cleanly or the
 * tail is not UTF-8 at all: invalid bytes are passed through rather than held forever). */
static size_t stop_matcher_utf8_tail(const struct stop_matcher *m)
{
    for (size_t back = 1; back <= 3 && back <= m->len; back++) {
        unsigned char b = (unsigned char)m->buf[m->len - back];
        if ((b & 0xc0) == 0x80)
            continue; /* continuation byte: the lead is further back */
        if (b < 0xc0)
            return 0; /* ASCII */
        size_t need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
        return need > back ? back : 0;
    }
    return 0;
}

void stop_matcher_feed(struct stop_matcher *m, const char *text, size_t len,
                       struct stop_result *out)
{
    stop_matcher_drop_given(m);
    if (m->stopped >= 0) {
        stop_matcher_give(m, 0, out);
        return;
    }
    size_t old_len = m->len;
    if (len > 0) {
        m->buf = xgrow(m->buf, &m->cap, m->len + len, 1);
        memcpy(m->buf + m->len, text, len);
        m->len += len;
    }

    size_t best_start = 0, best_end = SIZE_MAX;
    for (size_t i = 0; i < m->n_stops; i++) {
        size_t l = m->lens[i];
        if (l == 0 || l > m->len)
            continue;
        size_t from = old_len >= l - 1 ? old_len - (l - 1) : 0;
        const char *hit = memmem(m->buf + from, m->len - from, m->stops[i], l);
        if (!hit)
            continue;
        size_t start = (size_t)(hit - m->buf);
        if (start + l < best_end || (start + l == best_end && start < best_start)) {
            best_start = start;
            best_end = start + l;
            m->stopped = (int)i;
        }
    }
    if (m->stopped >= 0) {
        m->len = best_start; /* the stop string and what follows are gone */
        stop_matcher_give(m, best_start, out);
        return;
    }

    size_t hold = stop_matcher_prefix_tail(m);
    size_t utf8 = stop_matcher_utf8_tail(m);
    if (utf8 > hold)
        hold = utf8;
    stop_matcher_give(m, m->len - hold, out);
}

void stop_matcher_flush(struct stop_matcher *m, struct stop_result *out)
{
    stop_matcher_drop_given(m);
    stop_matcher_give(m, m->stopped >= 0 ? 0 : m->len, out);
}
