/*
 * common/xalloc.h — the allocation policy of Cortex.
 *
 * Contract: every allocation in Cortex goes through these wrappers. They never return NULL: on
 * out-of-memory they log one line to stderr and abort(). Callers therefore never check the
 * result. Memory returned is owned by the caller and released with free().
 */
#ifndef CORTEX_XALLOC_H
#define CORTEX_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
/* Grows an array of *cap elements of elem_size bytes to hold at least need elements. */
void *xgrow(void *p, size_t *cap, size_t need, size_t elem_size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string; the caller frees it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
