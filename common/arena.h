/*
 * common/arena.h — a bump allocator for memory that lives exactly as long as one request.
 *
 * Contract: everything allocated from an arena is released together by arena_destroy() (or
 * arena_reset()); nothing from it is ever passed to free(). Allocation never fails (blocks come
 * from xmalloc, which aborts on out-of-memory) and is aligned for any object type. An arena is
 * not thread-safe: it belongs to one request, handled by one thread at a time.
 *
 *     struct arena *a = arena_create(0);
 *     char *model = arena_strdup(a, json_string_value(m));
 *     ...
 *     arena_destroy(a);            // model and everything else are gone
 */
#ifndef CORTEX_ARENA_H
#define CORTEX_ARENA_H

#include <stdarg.h>
#include <stddef.h>

struct arena;

/* Default size of each block when arena_create() is given 0. */
#define ARENA_BLOCK_SIZE 8192

/* Creates an empty arena carving blocks of block_size bytes (0: ARENA_BLOCK_SIZE). Larger
 * requests get a block of their own. Destroy with arena_destroy(). */
struct arena *arena_create(size_t block_size);

/* Frees the arena and every allocation made from it; accepts NULL. */
void arena_destroy(struct arena *a);

/* Frees every allocation but keeps the first block for reuse (a connection serving requests
 * one after another). */
void arena_reset(struct arena *a);

/* n bytes (n may be 0), uninitialised, aligned to max_align_t. */
void *arena_alloc(struct arena *a, size_t n);
/* count * size zeroed bytes; aborts if the product overflows. */
void *arena_calloc(struct arena *a, size_t count, size_t size);
void *arena_memdup(struct arena *a, const void *p, size_t n);
char *arena_strdup(struct arena *a, const char *s);
/* At most n bytes of s, always NUL-terminated. */
char *arena_strndup(struct arena *a, const char *s, size_t n);
char *arena_printf(struct arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *arena_vprintf(struct arena *a, const char *fmt, va_list ap)
        __attribute__((format(printf, 2, 0)));

/* Bytes handed out since creation or the last reset (for statistics and tests). */
size_t arena_bytes_used(const struct arena *a);

#endif
