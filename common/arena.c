/*
 * common/arena.c — per-request bump allocator (see arena.h).
 *
 * Blocks form a singly linked list, newest first; allocations are carved from the head block.
 * A request too large for a normal block gets a dedicated block that is linked *behind* the
 * head, so the head's free space stays usable for the small allocations that follow.
 */
#include "arena.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define ARENA_ALIGN alignof(max_align_t)

struct arena_block {
    struct arena_block *next;
    size_t size; /* usable bytes in data[] */
    size_t used;
    alignas(max_align_t) unsigned char data[];
};

struct arena {
    struct arena_block *head;
    struct arena_block *first; /* made by arena_create(); kept by arena_reset() */
    size_t block_size;
    size_t bytes_used;
};

static void arena_die(const char *what)
{
    fprintf(stderr, "fatal: arena: %s\n", what);
    abort();
}

static size_t arena_round_up(size_t n)
{
    if (n > SIZE_MAX - (ARENA_ALIGN - 1))
        arena_die("allocation size overflow");
    return (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
}

static struct arena_block *arena_block_new(size_t size)
{
    if (size > SIZE_MAX - sizeof(struct arena_block))
        arena_die("allocation size overflow");
    struct arena_block *blk = xmalloc(sizeof *blk + size);
    blk->next = NULL;
    blk->size = size;
    blk->used = 0;
    return blk;
}

struct arena *arena_create(size_t block_size)
{
    struct arena *a = xmalloc(sizeof *a);
    a->block_size = arena_round_up(block_size ? block_size : ARENA_BLOCK_SIZE);
    a->head = arena_block_new(a->block_size);
    a->first = a->head;
    a->bytes_used = 0;
    return a;
}

void arena_destroy(struct arena *a)
{
    if (!a)
        return;
    struct arena_block *blk = a->head;
    while (blk) {
        struct arena_block *next = blk->next;
        free(blk);
        blk = next;
    }
    free(a);
}

void arena_reset(struct arena *a)
{
    struct arena_block *blk = a->head;
    while (blk) {
        struct arena_block *next = blk->next;
        if (blk != a->first)
            free(blk);
        blk = next;
    }
    a->first->next = NULL;
    a->first->used = 0;
    a->head = a->first;
    a->bytes_used = 0;
}

void *arena_alloc(struct arena *a, size_t n)
{
    size_t need = arena_round_up(n ? n : 1);
    a->bytes_used += need;
    struct arena_block *head = a->head;
    if (need <= head->size - head->used) {
        void *p = head->data + head->used;
        head->used += need;
        return p;
    }
    if (need > a->block_size / 4) {
        struct arena_block *big = arena_block_new(need);
        big->used = need;
        big->next = head->next;
        head->next = big;
        return big->data;
    }
    struct arena_block *blk = arena_block_new(a->block_size);
    blk->next = head;
    a->head = blk;
    blk->used = need;
    return blk->data;
}

void *arena_calloc(struct arena *a, size_t count, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(count, size, &n))
        arena_die("calloc size overflow");
    void *p = arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

void *arena_memdup(struct arena *a, const void *p, size_t n)
{
    void *q = arena_alloc(a, n);
    if (n)
        memcpy(q, p, n);
    return q;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = arena_alloc(a, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
    return arena_strndup(a, s, SIZE_MAX);
}

char *arena_vprintf(struct arena *a, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n < 0)
        arena_die("bad format string");
    char *p = arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

char *arena_printf(struct arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = arena_vprintf(a, fmt, ap);
    va_end(ap);
    return p;
}

size_t arena_bytes_used(const struct arena *a)
{
    return a->bytes_used;
}
