/*
 * common/ids.h — unguessable identifiers and tokens from the kernel CSPRNG (getrandom).
 *
 * Contract: ids are a fixed prefix followed by IDS_RANDOM_CHARS base62 characters (about 143
 * bits of entropy), drawn without modulo bias, so they are unique in practice and safe to show
 * to clients: "req_…" (request ids, also the request-id header), "chatcmpl-…", "cmpl-…",
 * "msg_…", "toolu_…", "call_…". The ids_new() functions write into a caller buffer and never
 * allocate. If the kernel cannot supply random bytes the process aborts: an id is never made
 * from a weak source. All functions are thread-safe.
 */
#ifndef CORTEX_IDS_H
#define CORTEX_IDS_H

#include <stddef.h>

enum ids_kind {
    IDS_KIND_REQUEST,         /* "req_"      a gateway request (logs, request-id, requests row) */
    IDS_KIND_CHAT_COMPLETION, /* "chatcmpl-" OpenAI chat completion */
    IDS_KIND_COMPLETION,      /* "cmpl-"     OpenAI legacy completion */
    IDS_KIND_MESSAGE,         /* "msg_"      Anthropic message */
    IDS_KIND_TOOL_USE,        /* "toolu_"    Anthropic tool_use block */
    IDS_KIND_TOOL_CALL,       /* "call_"     OpenAI tool call */
    IDS_KIND_COUNT,
};

/* Random characters after the prefix. */
#define IDS_RANDOM_CHARS 24
/* Bytes that hold any id from ids_new(), NUL included. */
#define IDS_SIZE 40

/* The prefix of kind ("req_", …); "" for a value outside the enum. */
const char *ids_kind_prefix(enum ids_kind kind);

/* Writes a new id of kind into out (IDS_SIZE bytes) and returns out. */
char *ids_new(enum ids_kind kind, char *out);

/* Fills out with n random bytes. */
void ids_random_bytes(void *out, size_t n);

/* Writes n random characters from [0-9A-Za-z] and a NUL into out (n + 1 bytes). */
void ids_random_base62(char *out, size_t n);

/* Writes n_bytes random bytes as 2 * n_bytes lowercase hex digits and a NUL into out
 * (2 * n_bytes + 1 bytes): API keys, secrets, nonces. */
void ids_random_hex(char *out, size_t n_bytes);

#endif
