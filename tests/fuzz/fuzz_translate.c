/*
 * tests/fuzz/fuzz_translate.c — libFuzzer target for the gateway's request parsing and
 * translation (gateway/anthropic.h, gateway/openai.h).
 *
 * The first input byte picks what the rest is:
 *   0  a request body: parsed as JSON, then given to every request translator (Anthropic
 *      messages and count_tokens, OpenAI chat, completions, embeddings);
 *   1  a non-streamed chat completion from a neuron, translated into an Anthropic message;
 *   2  an upstream event stream: each line is the data of one event, fed to the Anthropic
 *      stream translator, then the stream is ended;
 *   3  a neuron's error answer (next two bytes: the HTTP status), mapped to an error code.
 * Beyond "no crash, no leak, no undefined behaviour" (the sanitizers), every output must be
 * valid JSON and the stream must be well formed: each event an "event:" line, one "data:"
 * line of JSON whose type is the event's name, a blank line; and nothing after the end.
 * A violation aborts, so libFuzzer records the input.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anthropic.h"
#include "buf.h"
#include "error.h"
#include "jsonutil.h"
#include "openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_translate: check failed: %s (line %d)\n", #cond, __LINE__);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A translation either fails with an error code, or succeeds with serialisable JSON. */
static void fuzz_check_result(int rc, json_t *out, struct error *err)
{
    if (rc == 0) {
        FUZZ_CHECK(out != NULL);
        char *text = json_dumps(out, JSON_COMPACT);
        FUZZ_CHECK(text != NULL);
        free(text);
    } else {
        FUZZ_CHECK(rc == -1 && out == NULL);
        FUZZ_CHECK(err->code != ERR_NONE);
        FUZZ_CHECK(error_message(err)[0] != '\0');
    }
    json_decref(out);
    error_clear(err);
}

static void fuzz_requests(const char *text, size_t len)
{
    struct error err = ERROR_INIT;
    json_t *req = jsonutil_parse(text, len, &err);
    error_clear(&err);
    if (!req)
        return;
    json_t *copy = json_deep_copy(req);
    json_t *out = NULL;
    struct anthropic_options aopt = {.max_tokens_cap = 4096};
    fuzz_check_result(anthropic_request_to_openai(req, &aopt, &out, &err), out, &err);
    aopt.count_tokens = true;
    fuzz_check_result(anthropic_request_to_openai(req, &aopt, &out, &err), out, &err);
    struct openai_options oopt = {.max_tokens_cap = 4096};
    fuzz_check_result(openai_chat_request_normalize(req, &oopt, &out, &err), out, &err);
    fuzz_check_result(openai_completion_request_normalize(req, &oopt, &out, &err), out, &err);
    fuzz_check_result(openai_embedding_request_normalize(req, &out, &err), out, &err);
    FUZZ_CHECK(json_equal(req, copy)); /* inputs are never modified */
    json_decref(copy);
    json_decref(req);
}

static void fuzz_response(const char *text, size_t len)
{
    json_t *chat = json_loadb(text, len, JSON_DECODE_ANY, NULL);
    if (!chat)
        return;
    struct error err = ERROR_INIT;
    json_t *out = NULL;
    int rc = anthropic_response_from_openai(chat, "msg_fuzz", NULL, &out, &err);
    if (rc == 0)
        FUZZ_CHECK(json_is_array(json_object_get(out, "content")));
    fuzz_check_result(rc, out, &err);
    json_decref(chat);
}

/* Checks the SSE text of the Anthropic stream; returns the number of events. */
static size_t fuzz_check_events(const struct buf *out, bool *ended)
{
    const char *p = buf_cstr(out), *end = p + out->len;
    size_t n = 0;
    *ended = false;
    while (p < end) {
        FUZZ_CHECK(!*ended);
        FUZZ_CHECK(strncmp(p, "event: ", 7) == 0);
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        FUZZ_CHECK(nl != NULL);
        const char *name = p + 7;
        size_t name_len = (size_t)(nl - name);
        FUZZ_CHECK(strncmp(nl + 1, "data: ", 6) == 0);
        const char *d = nl + 7;
        const char *nl2 = memchr(d, '\n', (size_t)(end - d));
        FUZZ_CHECK(nl2 != NULL && nl2 + 1 < end && nl2[1] == '\n');
        json_t *ev = json_loadb(d, (size_t)(nl2 - d), 0, NULL);
        FUZZ_CHECK(ev != NULL);
        const char *type = json_string_value(json_object_get(ev, "type"));
        FUZZ_CHECK(type && strlen(type) == name_len && memcmp(type, name, name_len) == 0);
        if (strcmp(type, "message_stop") == 0 || strcmp(type, "error") == 0)
            *ended = true;
        json_decref(ev);
        n++;
        p = nl2 + 2;
    }
    return n;
}

static void fuzz_stream(const char *text, size_t len)
{
    struct anthropic_stream *s = anthropic_stream_create("msg_fuzz", "fuzz");
    struct buf out = BUF_INIT;
    const char *p = text, *end = text + len;
    int final = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        struct error err = ERROR_INIT;
        int rc = anthropic_stream_feed_data(s, p, n, &out, &err);
        FUZZ_CHECK(rc >= -1 && rc <= 1);
        if (final == 0 && rc < 0)
            FUZZ_CHECK(err.code != ERR_NONE);
        if (final == 0)
            final = rc;
        error_clear(&err);
        p += n + 1;
    }
    struct error err = ERROR_INIT;
    int rc = anthropic_stream_end(s, &out, &err);
    if (final == 0)
        final = rc == 0 ? 1 : -1;
    error_clear(&err);
    bool ended;
    size_t events = fuzz_check_events(&out, &ended);
    FUZZ_CHECK(events >= 1 && ended && anthropic_stream_done(s));
    int64_t in_tokens, out_tokens, cached;
    anthropic_stream_usage(s, &in_tokens, &out_tokens, &cached);
    FUZZ_CHECK(in_tokens >= 0 && out_tokens >= 0 && cached >= 0);
    buf_free(&out);
    anthropic_stream_destroy(s);
}

static void fuzz_upstream_error(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    long status = (long)data[0] << 8 | data[1];
    json_t *body = json_loadb((const char *)data + 2, size - 2, JSON_DECODE_ANY, NULL);
    struct error err = ERROR_INIT;
    openai_error_from_upstream(status, body, &err);
    FUZZ_CHECK(err.code != ERR_NONE);
    json_t *b = error_body(ERROR_DIALECT_ANTHROPIC, &err, "req_fuzz");
    char *t = json_dumps(b, JSON_COMPACT);
    FUZZ_CHECK(t != NULL);
    free(t);
    json_decref(b);
    error_clear(&err);
    json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 4) {
    case 0:
        fuzz_requests(text, len);
        break;
    case 1:
        fuzz_response(text, len);
        break;
    case 2:
        fuzz_stream(text, len);
        break;
    case 3:
        fuzz_upstream_error(data + 1, len);
        break;
    }
    return 0;
}
