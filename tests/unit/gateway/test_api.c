/*
 * tests/unit/gateway/test_api.c — the gateway service (gateway/api.h, proxy.h, upstream.h,
 * catalog.h) end to end on 127.0.0.1: a real gateway in front of fake neurons built on
 * common/http_server, driven with libcurl.
 *
 * The fake neuron speaks the OpenAI dialect of shared/API.md and picks its behaviour from the
 * last user message: "tool" answers with a streamed tool call; "overflow" with a 400
 * context_length_exceeded; "cut" stops its stream without finishing; "slow" streams a chunk
 * every 20 ms until the client goes; anything else answers "Hello!". A neuron can also be
 * made to answer 503 to everything. Each records the last body it received.
 *
 * Covers: model lists in both forms and aliases; OpenAI chat streamed and not (usage chunk
 * dropped unless asked); Anthropic messages streamed and not (translated both ways, request-id
 * header, billing line dropped, max_tokens capped, ?beta=true ignored); count_tokens; errors in
 * each dialect (bad JSON, unknown model, upstream 400 worded "prompt is too long"); a stream
 * the neuron cuts (in-band error, no [DONE]); retry on 503 and on refused connections, and
 * ejection; client disconnect aborting the neuron request; Claude Code's side routes; /metrics.
 */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "buf.h"
#include "http_client.h"
#include "http_server.h"
#include "jsonutil.h"
#include "sse.h"
#include "timing.h"
#include "upstream.h"

#include "common/test_util.h"
#include "gateway/case_util.h"

#define WAIT_MS 10000

/* ---- the fake neuron --------------------------------------------------------------------- */

struct fake {
    http_server_t *server;
    char url[64];
    bool busy; /* answer 503 to every completion */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    json_t *last_body; /* under mu */
    int n_requests;    /* completions received, under mu */
    int n_gone;        /* slow streams whose client went away, under mu */
};

static void fake_models(http_request_t *req, void *ud)
{
    (void)ud;
    static const char body[] = "{\"object\":\"list\",\"data\":[{\"id\":\"tiny\",\"object\":"
                               "\"model\",\"created\":1,\"owned_by\":\"x\"}]}";
    http_request_reply(req, 200, "application/json", body, sizeof body - 1);
}

static void stream_write(http_stream_t *s, const char *text)
{
    ck_assert_int_eq(http_stream_write(s, text, strlen(text)), HTTP_STREAM_OK);
}

#define CHUNK(delta, finish)                                                                       \
    "data: {\"id\":\"chatcmpl-f\",\"object\":\"chat.completion.chunk\",\"created\":1,"             \
    "\"model\":\"tiny\",\"choices\":[{\"index\":0,\"delta\":" delta ",\"finish_reason\":" finish   \
    "}]}\n\n"
#define USAGE_CHUNK                                                                                \
    "data: {\"id\":\"chatcmpl-f\",\"object\":\"chat.completion.chunk\",\"created\":1,"             \
    "\"model\":\"tiny\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2,"   \
    "\"total_tokens\":13}}\n\n"

struct slow {
    struct fake *f;
    http_stream_t *s;
};

static void *fake_slow_thread(void *arg)
{
    struct slow *sl = arg;
    for (int i = 0; i < 1000; i++) {
        if (http_stream_write(sl->s, CHUNK("{\"content\":\"x\"}", "null"),
                              strlen(CHUNK("{\"content\":\"x\"}", "null"))) == HTTP_STREAM_GONE)
            break;
        timing_sleep_ms(20); /* pacing the producer */
    }
    http_stream_close(sl->s);
    free(sl);
    return NULL;
}

/* "quiet": headers at once, then 700 ms of silence (a long prefill), then the answer. */
static void *fake_quiet_thread(void *arg)
{
    http_stream_t *s = arg;
    timing_sleep_ms(700); /* pacing the producer: the silence under test */
    stream_write(s, CHUNK("{\"content\":\"late\"}", "\"stop\""));
    stream_write(s, "data: [DONE]\n\n");
    http_stream_close(s);
    return NULL;
}

static void fake_slow_gone(void *ud)
{
    struct fake *f = ud;
    pthread_mutex_lock(&f->mu);
    f->n_gone++;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mu);
}

static void fake_chat(http_request_t *req, void *ud)
{
    struct fake *f = ud;
    size_t len;
    const char *text = http_request_body(req, &len);
    json_t *body = json_loadb(text, len, 0, NULL);
    ck_assert_ptr_nonnull(body);
    pthread_mutex_lock(&f->mu);
    json_decref(f->last_body);
    f->last_body = json_incref(body);
    f->n_requests++;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mu);
    if (f->busy) {
        static const char busy[] = "{\"error\":{\"message\":\"busy\",\"type\":\"server_error\"}}";
        http_request_reply(req, 503, "application/json", busy, sizeof busy - 1);
        json_decref(body);
        return;
    }
    json_t *messages = json_object_get(body, "messages");
    const char *last = json_string_value(
            json_object_get(json_array_get(messages, json_array_size(messages) - 1), "content"));
    last = last ? last : "";
    bool stream = json_is_true(json_object_get(body, "stream"));
    if (strcmp(last, "overflow") == 0) {
        static const char e[] = "{\"error\":{\"message\":\"9000 tokens > 8192\",\"type\":"
                                "\"invalid_request_error\",\"code\":\"context_length_exceeded\"}}";
        http_request_reply(req, 400, "application/json", e, sizeof e - 1);
    } else if (!stream) {
        static const char answer[] =
                "{\"id\":\"chatcmpl-f\",\"object\":\"chat.completion\",\"created\":1,\"model\":"
                "\"tiny\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                "\"content\":\"Hello!\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                "\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2,\"total_tokens\":13}}";
        http_request_reply(req, 200, "application/json", answer, sizeof answer - 1);
    } else if (strcmp(last, "quiet") == 0) {
        http_request_defer(req, NULL, NULL);
        http_stream_t *s = http_stream_start(req, 200, "text/event-stream", NULL, NULL);
        ck_assert_ptr_nonnull(s);
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, fake_quiet_thread, s), 0);
        pthread_detach(t);
    } else if (strcmp(last, "slow") == 0) {
        http_request_defer(req, fake_slow_gone, f);
        struct slow *sl = calloc(1, sizeof *sl);
        sl->f = f;
        sl->s = http_stream_start(req, 200, "text/event-stream", NULL, NULL);
        ck_assert_ptr_nonnull(sl->s);
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, fake_slow_thread, sl), 0);
        pthread_detach(t);
    } else {
        http_stream_t *s = http_stream_start(req, 200, "text/event-stream", NULL, NULL);
        ck_assert_ptr_nonnull(s);
        stream_write(s, ": keep-alive\n\n");
        stream_write(s, CHUNK("{\"role\":\"assistant\",\"content\":\"\"}", "null"));
        if (strcmp(last, "tool") == 0) {
            stream_write(s, CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"call_7\",\"type\":"
                                  "\"function\",\"function\":{\"name\":\"get_weather\","
                                  "\"arguments\":\"\"}}]}",
                                  "null"));
            stream_write(s, CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
                                  "\"{\\\"city\\\":\\\"Paris\\\"}\"}}]}",
                                  "null"));
            stream_write(s, CHUNK("{}", "\"tool_calls\""));
        } else {
            stream_write(s, CHUNK("{\"content\":\"Hel\"}", "null"));
            stream_write(s, CHUNK("{\"content\":\"lo!\"}", "null"));
            if (strcmp(last, "cut") != 0)
                stream_write(s, CHUNK("{}", "\"stop\""));
        }
        if (strcmp(last, "cut") != 0) {
            stream_write(s, USAGE_CHUNK);
            stream_write(s, "data: [DONE]\n\n");
        }
        http_stream_close(s);
    }
    json_decref(body);
}

/* POST /tokenize as the neuron answers it: the prompt's tokens for a chat request. */
static void fake_tokenize(http_request_t *req, void *ud)
{
    struct fake *f = ud;
    size_t len;
    const char *text = http_request_body(req, &len);
    json_t *body = json_loadb(text, len, 0, NULL);
    ck_assert_ptr_nonnull(body);
    pthread_mutex_lock(&f->mu);
    json_decref(f->last_body);
    f->last_body = body;
    pthread_mutex_unlock(&f->mu);
    static const char answer[] =
            "{\"model\":\"tiny\",\"count\":17,\"ids\":[],\"max_context\":8192}";
    http_request_reply(req, 200, "application/json", answer, sizeof answer - 1);
}

static const http_route_t fake_routes[] = {
        {"GET", "/v1/models", fake_models},
        {"POST", "/v1/chat/completions", fake_chat},
        {"POST", "/tokenize", fake_tokenize},
};

static struct fake *fake_start(bool busy)
{
    struct fake *f = calloc(1, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cond, NULL);
    f->busy = busy;
    http_server_config_t cfg = {.routes = fake_routes, .n_routes = 3, .ud = f};
    f->server = test_util_server_start(&cfg);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%u", http_server_port(f->server));
    return f;
}

static void fake_stop(struct fake *f)
{
    http_server_destroy(f->server);
    json_decref(f->last_body);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static json_t *fake_last_body(struct fake *f)
{
    pthread_mutex_lock(&f->mu);
    json_t *b = json_incref(f->last_body);
    pthread_mutex_unlock(&f->mu);
    return b;
}

static int fake_requests(struct fake *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->n_requests;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* ---- the gateway and a client ------------------------------------------------------------ */

static struct api *gateway_start_ping(const char *const *upstreams, size_t n, int64_t ping_ms)
{
    struct api_config cfg = {
            .listen = "127.0.0.1:0",
            .metrics_listen = "127.0.0.1:0",
            .upstreams = upstreams,
            .n_upstreams = n,
            .aliases = "claude-*=tiny",
            .open = true,
            .max_tokens_cap = 4096,
            .catalog_refresh_ms = 60000,
            .upstream_connect_timeout_ms = 2000,
            .ping_interval_ms = ping_ms,
    };
    char *err = NULL;
    struct api *a = api_create(&cfg, &err);
    ck_assert_msg(a != NULL, "api_create: %s", err ? err : "?");
    api_refresh_catalog(a);
    return a;
}

static struct api *gateway_start(const char *const *upstreams, size_t n)
{
    return gateway_start_ping(upstreams, n, 0);
}

struct answer {
    long status;
    char *body;
    size_t len;
    char request_id[128];
    char retry_after[32];
    char content_type[128];
};

static void answer_free(struct answer *a)
{
    free(a->body);
}

/* Sends a request to the gateway and buffers the answer. headers: NULL-terminated or NULL. */
static struct answer call(struct api *a, const char *method, const char *path, const char *body,
                          const char *const *headers, bool metrics)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", metrics ? api_metrics_port(a) : api_port(a),
             path);
    static const char *const json_headers[] = {"Content-Type: application/json", NULL};
    http_client_request_t req = {.method = method,
                                 .url = url,
                                 .headers = headers ? headers : json_headers,
                                 .body = body,
                                 .body_len = body ? strlen(body) : 0,
                                 .timeout_ms = WAIT_MS};
    http_client_response_t resp;
    ck_assert_int_eq(http_client_request(&req, &resp), HTTP_CLIENT_OK);
    struct answer ans = {.status = resp.status, .body = resp.body, .len = resp.body_len};
    const char *h = http_client_response_header(&resp, "request-id");
    snprintf(ans.request_id, sizeof ans.request_id, "%s", h ? h : "");
    h = http_client_response_header(&resp, "Retry-After");
    snprintf(ans.retry_after, sizeof ans.retry_after, "%s", h ? h : "");
    h = http_client_response_header(&resp, "Content-Type");
    snprintf(ans.content_type, sizeof ans.content_type, "%s", h ? h : "");
    resp.body = NULL;
    http_client_response_free(&resp);
    return ans;
}

static json_t *answer_json(const struct answer *a)
{
    json_t *j = json_loadb(a->body, a->len, 0, NULL);
    ck_assert_msg(j != NULL, "answer is not JSON: %.*s", (int)a->len, a->body);
    return j;
}

static int collect(const sse_event_t *ev, void *ud)
{
    json_t *events = ud;
    json_t *data = json_loadb(ev->data, ev->data_len, 0, NULL);
    json_array_append_new(events, json_pack("{s:s, s:o}", "event", ev->event, "data",
                                            data ? data : json_stringn(ev->data, ev->data_len)));
    return 0;
}

/* The events of an SSE body: [{"event", "data" (parsed JSON, or the raw string)}]. */
static json_t *answer_events(const struct answer *a)
{
    json_t *events = json_array();
    sse_parser_t *p = sse_parser_create(0);
    ck_assert_int_eq(sse_parser_feed(p, a->body, a->len, collect, events), SSE_OK);
    sse_parser_destroy(p);
    return events;
}

static const char *event_type(const json_t *events, size_t i)
{
    return json_string_value(json_object_get(json_array_get(events, i), "event"));
}

static const json_t *event_data(const json_t *events, size_t i)
{
    return json_object_get(json_array_get(events, i), "data");
}

static const char *const anthropic_headers[] = {"Content-Type: application/json",
                                                "anthropic-version: 2023-06-01",
                                                "anthropic-beta: weird-beta-2099,other", NULL};

/* ---- tests -------------------------------------------------------------------------------- */

START_TEST(test_models_and_side_routes)
{
    struct fake *f = fake_start(false);
    const char *ups[] = {f->url};
    struct api *a = gateway_start(ups, 1);

    struct answer ans = call(a, "GET", "/v1/models", NULL, NULL, false);
    ck_assert_int_eq(ans.status, 200);
    json_t *list = answer_json(&ans);
    json_t *want = json_pack("{s:s, s:[{s:s, s:s, s:s, s:s, s:s, s:s, s:s}], s:b, s:s, s:s}",
                             "object", "list", "data", "id", "tiny", "object", "model", "owned_by",
                             "cortex", "type", "model", "display_name", "tiny", "created", "$re:.*",
                             "created_at", "$re:^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$",
                             "has_more", 0, "first_id", "tiny", "last_id", "tiny");
    /* created is an integer, not a string: checked apart. */
    json_t *created = json_object_get(json_array_get(json_object_get(list, "data"), 0), "created");
    ck_assert(json_is_integer(created) && json_integer_value(created) > 1700000000);
    json_object_set_new(json_array_get(json_object_get(want, "data"), 0), "created",
                        json_deep_copy(created));
    case_util_assert_match("models", want, list);
    json_decref(want);
    json_decref(list);
    answer_free(&ans);

    ans = call(a, "GET", "/v1/models/tiny", NULL, NULL, false);
    ck_assert_int_eq(ans.status, 200);
    json_t *m = answer_json(&ans);
    ck_assert_str_eq(json_string_value(json_object_get(m, "id")), "tiny");
    json_decref(m);
    answer_free(&ans);

    ans = call(a, "GET", "/v1/models/claude-opus-4-1", NULL, anthropic_headers, false);
    ck_assert_int_eq(ans.status, 200); /* an alias resolves */
    answer_free(&ans);

    ans = call(a, "GET", "/v1/models/nope", NULL, NULL, false);
    ck_assert_int_eq(ans.status, 404);
    m = answer_json(&ans);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(m, "error"), "code")),
                     "model_not_found");
    json_decref(m);
    answer_free(&ans);

    ans = call(a, "GET", "/v1/models/nope", NULL, anthropic_headers, false);
    ck_assert_int_eq(ans.status, 404);
    m = answer_json(&ans);
    ck_assert_str_eq(json_string_value(json_object_get(m, "type")), "error");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(m, "error"), "type")),
                     "not_found_error");
    json_decref(m);
    answer_free(&ans);

    ans = call(a, "HEAD", "/api/hello", NULL, NULL, false);
    ck_assert_int_eq(ans.status, 200);
    answer_free(&ans);
    ans = call(a, "POST", "/api/event_logging/batch", "{\"events\":[]}", NULL, false);
    ck_assert_int_eq(ans.status, 200);
    answer_free(&ans);
    ans = call(a, "GET", "/health", NULL, NULL, false);
    ck_assert_int_eq(ans.status, 200);
    answer_free(&ans);

    ans = call(a, "GET", "/metrics", NULL, NULL, true);
    ck_assert_int_eq(ans.status, 200);
    ck_assert_ptr_nonnull(strstr(ans.body, "# TYPE cortex_gateway_in_flight gauge\n"
                                           "cortex_gateway_in_flight 0\n"));
    ck_assert_ptr_nonnull(strstr(ans.body, "cortex_gateway_upstream_ejected{upstream=\""));
    answer_free(&ans);

    api_destroy(a);
    fake_stop(f);
}
END_TEST

START_TEST(test_openai_chat)
{
    struct fake *f = fake_start(false);
    const char *ups[] = {f->url};
    struct api *a = gateway_start(ups, 1);

    struct answer ans = call(a, "POST", "/v1/chat/completions",
                             "{\"model\":\"tiny\",\"max_completion_tokens\":99999,\"user\":\"u\","
                             "\"messages\":[{\"role\":\"developer\",\"content\":\"Be nice.\"},"
                             "{\"role\":\"user\",\"content\":\"hi\"}]}",
                             NULL, false);
    ck_assert_int_eq(ans.status, 200);
    json_t *j = answer_json(&ans);
    ck_assert_str_eq(json_string_value(json_object_get(j, "object")), "chat.completion");
    json_decref(j);
    answer_free(&ans);
    json_t *sent = fake_last_body(f);
    json_t *want = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}], s:i}", "model", "tiny", "messages",
                             "role", "system", "content", "Be nice.", "role", "user", "content",
                             "hi", "max_tokens", 4096);
    case_util_assert_match("neuron request", want, sent);
    json_decref(want);
    json_decref(sent);

    /* Streamed, without include_usage: chunks pass, the usage-only chunk does not. */
    ans = call(a, "POST", "/v1/chat/completions",
               "{\"model\":\"tiny\",\"stream\":true,\"messages\":[{\"role\":\"user\","
               "\"content\":\"hi\"}]}",
               NULL, false);
    ck_assert_int_eq(ans.status, 200);
    ck_assert_str_eq(ans.content_type, "text/event-stream");
    json_t *events = answer_events(&ans);
    size_t n = json_array_size(events);
    ck_assert_uint_eq(n, 5); /* role, Hel, lo!, finish, [DONE] */
    ck_assert_str_eq(json_string_value(event_data(events, n - 1)), "[DONE]");
    ck_assert_str_eq(
            json_string_value(json_object_get(
                    json_object_get(
                            json_array_get(json_object_get(event_data(events, 1), "choices"), 0),
                            "delta"),
                    "content")),
            "Hel");
    json_decref(events);
    answer_free(&ans);
    sent = fake_last_body(f);
    ck_assert(json_is_true(
            json_object_get(json_object_get(sent, "stream_options"), "include_usage")));
    json_decref(sent);

    /* With include_usage the usage chunk arrives before [DONE]. */
    ans = call(a, "POST", "/v1/chat/completions",
               "{\"model\":\"tiny\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
               "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
               NULL, false);
    events = answer_events(&ans);
    n = json_array_size(events);
    ck_assert_uint_eq(n, 6);
    ck_assert_int_eq(json_integer_value(json_object_get(
                             json_object_get(event_data(events, n - 2), "usage"), "prompt_tokens")),
                     11);
    json_decref(events);
    answer_free(&ans);

    /* The neuron cuts the stream: an in-band error, never [DONE]. */
    ans = call(a, "POST", "/v1/chat/completions",
               "{\"model\":\"tiny\",\"stream\":true,\"messages\":[{\"role\":\"user\","
               "\"content\":\"cut\"}]}",
               NULL, false);
    ck_assert_int_eq(ans.status, 200);
    events = answer_events(&ans);
    n = json_array_size(events);
    ck_assert_uint_eq(n, 4);
    ck_assert(json_is_object(json_object_get(event_data(events, n - 1), "error")));
    ck_assert_ptr_null(strstr(ans.body, "[DONE]"));
    json_decref(events);
    answer_free(&ans);

    /* Errors in the OpenAI form. */
    ans = call(a, "POST", "/v1/chat/completions", "{\"model\":", NULL, false);
    ck_assert_int_eq(ans.status, 400);
    j = answer_json(&ans);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                     "invalid_request_error");
    json_decref(j);
    answer_free(&ans);
    ans = call(a, "POST", "/v1/chat/completions",
               "{\"model\":\"gpt-9\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL,
               false);
    ck_assert_int_eq(ans.status, 404);
    answer_free(&ans);
    ans = call(a, "POST", "/v1/chat/completions",
               "{\"model\":\"tiny\",\"n\":3,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
               NULL, false);
    ck_assert_int_eq(ans.status, 400);
    answer_free(&ans);
    ans = call(a, "POST", "/v1/chat/completions",
               "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"overflow\"}]}",
               NULL, false);
    ck_assert_int_eq(ans.status, 400);
    j = answer_json(&ans);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                     "context_length_exceeded");
    json_decref(j);
    answer_free(&ans);

    api_destroy(a);
    fake_stop(f);
}
END_TEST

START_TEST(test_anthropic_messages)
{
    struct fake *f = fake_start(false);
    const char *ups[] = {f->url};
    struct api *a = gateway_start(ups, 1);

    struct answer ans = call(
            a, "POST", "/v1/messages?beta=true",
            "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64000,\"system\":[{\"type\":\"text\","
            "\"text\":\"x-anthropic-billing-header: cc_version=1\"},{\"type\":\"text\",\"text\":"
            "\"You help.\",\"cache_control\":{\"type\":\"ephemeral\"}}],\"metadata\":{\"user_id\":"
            "\"u\"},\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
            anthropic_headers, false);
    ck_assert_int_eq(ans.status, 200);
    ck_assert_str_ne(ans.request_id, "");
    json_t *j = answer_json(&ans);
    json_t *want =
            json_pack("{s:s, s:s, s:s, s:[{s:s, s:s}], s:s, s:s, s:n, s:{s:i, s:i, s:i, s:i}}",
                      "id", "$re:^msg_", "type", "message", "role", "assistant", "content", "type",
                      "text", "text", "Hello!", "model", "claude-sonnet-4-5", "stop_reason",
                      "end_turn", "stop_sequence", "usage", "input_tokens", 11, "output_tokens", 2,
                      "cache_creation_input_tokens", 0, "cache_read_input_tokens", 0);
    case_util_assert_match("message", want, j);
    json_decref(want);
    json_decref(j);
    answer_free(&ans);
    json_t *sent = fake_last_body(f);
    want = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}], s:i}", "model", "tiny", "messages", "role",
                     "system", "content", "You help.", "role", "user", "content", "hi",
                     "max_tokens", 4096);
    case_util_assert_match("neuron request", want, sent);
    json_decref(want);
    json_decref(sent);

    /* Streamed tool call: the exact Anthropic event sequence. */
    ans = call(a, "POST", "/v1/messages",
               "{\"model\":\"claude-x\",\"max_tokens\":100,\"stream\":true,\"tools\":[{\"name\":"
               "\"get_weather\",\"input_schema\":{\"type\":\"object\"}}],\"messages\":[{\"role\":"
               "\"user\",\"content\":\"tool\"}]}",
               anthropic_headers, false);
    ck_assert_int_eq(ans.status, 200);
    ck_assert_str_ne(ans.request_id, "");
    json_t *events = answer_events(&ans);
    static const char *const order[] = {
            "message_start",      "ping",          "content_block_start", "content_block_delta",
            "content_block_stop", "message_delta", "message_stop"};
    ck_assert_uint_eq(json_array_size(events), 7);
    for (size_t i = 0; i < 7; i++)
        ck_assert_str_eq(event_type(events, i), order[i]);
    want = json_pack("{s:s, s:i, s:{s:s, s:s, s:s, s:{}}}", "type", "content_block_start", "index",
                     0, "content_block", "type", "tool_use", "id", "toolu_7", "name", "get_weather",
                     "input");
    case_util_assert_match("tool block", want, event_data(events, 2));
    json_decref(want);
    want = json_pack("{s:s, s:{s:s, s:n}, s:{s:i, s:i, s:i, s:i}}", "type", "message_delta",
                     "delta", "stop_reason", "tool_use", "stop_sequence", "usage", "input_tokens",
                     11, "output_tokens", 2, "cache_creation_input_tokens", 0,
                     "cache_read_input_tokens", 0);
    case_util_assert_match("message_delta", want, event_data(events, 5));
    json_decref(want);
    json_decref(events);
    answer_free(&ans);

    /* Cut stream: message_start went out, then one error event, no message_stop. */
    ans = call(a, "POST", "/v1/messages",
               "{\"model\":\"tiny\",\"max_tokens\":10,\"stream\":true,\"messages\":[{\"role\":"
               "\"user\",\"content\":\"cut\"}]}",
               anthropic_headers, false);
    events = answer_events(&ans);
    size_t n = json_array_size(events);
    ck_assert_str_eq(event_type(events, 0), "message_start");
    ck_assert_str_eq(event_type(events, n - 1), "error");
    ck_assert_ptr_null(strstr(ans.body, "message_stop"));
    json_decref(events);
    answer_free(&ans);

    /* count_tokens: the neuron's /tokenize count for the translated request, tools included. */
    ans = call(a, "POST", "/v1/messages/count_tokens?beta=true",
               "{\"model\":\"claude-x\",\"system\":\"S\",\"tools\":[{\"name\":\"t\","
               "\"input_schema\":{\"type\":\"object\"}}],\"messages\":[{\"role\":\"user\","
               "\"content\":\"hi\"}]}",
               anthropic_headers, false);
    ck_assert_int_eq(ans.status, 200);
    j = answer_json(&ans);
    want = json_pack("{s:i}", "input_tokens", 17);
    case_util_assert_match("count_tokens", want, j);
    json_decref(want);
    json_decref(j);
    answer_free(&ans);
    sent = fake_last_body(f);
    want = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}], s:[{s:s, s:{s:s, s:{s:s}}}]}", "model",
                     "tiny", "messages", "role", "system", "content", "S", "role", "user",
                     "content", "hi", "tools", "type", "function", "function", "name", "t",
                     "parameters", "type", "object");
    case_util_assert_match("tokenize request", want, sent);
    json_decref(want);
    json_decref(sent);

    /* Errors in the Anthropic form. */
    ans = call(a, "POST", "/v1/messages", "not json", anthropic_headers, false);
    ck_assert_int_eq(ans.status, 400);
    ck_assert_str_ne(ans.request_id, "");
    j = answer_json(&ans);
    want = json_pack("{s:s, s:{s:s, s:s}, s:s}", "type", "error", "error", "type",
                     "invalid_request_error", "message", "$re:invalid JSON", "request_id", "$re:.");
    case_util_assert_match("bad json", want, j);
    json_decref(want);
    json_decref(j);
    answer_free(&ans);
    ans = call(a, "POST", "/v1/messages",
               "{\"model\":\"gpt-x\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\","
               "\"content\":\"x\"}]}",
               anthropic_headers, false);
    ck_assert_int_eq(ans.status, 404);
    answer_free(&ans);
    ans = call(a, "POST", "/v1/messages",
               "{\"model\":\"tiny\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
               "\"content\":\"overflow\"}]}",
               anthropic_headers, false);
    ck_assert_int_eq(ans.status, 400);
    j = answer_json(&ans);
    want = json_pack("{s:s, s:{s:s, s:s}, s:s}", "type", "error", "error", "type",
                     "invalid_request_error", "message", "$re:^prompt is too long", "request_id",
                     "$re:.");
    case_util_assert_match("overflow", want, j);
    json_decref(want);
    json_decref(j);
    answer_free(&ans);

    api_destroy(a);
    fake_stop(f);
}
END_TEST

START_TEST(test_retry_and_ejection)
{
    struct fake *busy = fake_start(true);
    struct fake *good = fake_start(false);
    struct fake *dead = fake_start(false);
    const char *ups[] = {busy->url, dead->url, good->url};
    struct api *a = gateway_start(ups, 3);
    /* It listed its models, then died: connections to it are refused from now on. */
    http_server_destroy(dead->server);
    dead->server = NULL;

    /* Whatever the order tried, each request ends on the good neuron. */
    for (int i = 0; i < 4; i++) {
        struct answer ans = call(a, "POST", "/v1/chat/completions",
                                 "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\","
                                 "\"content\":\"hi\"}]}",
                                 NULL, false);
        ck_assert_int_eq(ans.status, 200);
        answer_free(&ans);
    }
    ck_assert_int_eq(fake_requests(good), 4);
    ck_assert_int_ge(fake_requests(busy), 1);
    api_destroy(a);

    /* Only busy neurons: 503 with Retry-After in each dialect (529 for Anthropic). */
    const char *only_busy[] = {busy->url};
    a = gateway_start(only_busy, 1);
    struct answer ans = call(a, "POST", "/v1/chat/completions",
                             "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\","
                             "\"content\":\"hi\"}]}",
                             NULL, false);
    ck_assert_int_eq(ans.status, 503);
    ck_assert_str_ne(ans.retry_after, "");
    answer_free(&ans);
    /* Three failures eject it: the next request finds no neuron at all. */
    for (int i = 0; i < 2; i++) {
        ans = call(a, "POST", "/v1/chat/completions",
                   "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                   NULL, false);
        answer_free(&ans);
    }
    int before = fake_requests(busy);
    ans = call(a, "POST", "/v1/messages",
               "{\"model\":\"tiny\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
               "\"content\":\"hi\"}]}",
               anthropic_headers, false);
    ck_assert_int_eq(ans.status, 503);
    ck_assert_int_eq(fake_requests(busy), before);
    json_t *j = answer_json(&ans);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                     "api_error");
    json_decref(j);
    answer_free(&ans);
    api_destroy(a);
    fake_stop(dead);
    fake_stop(good);
    fake_stop(busy);
}
END_TEST

struct disconnect {
    int chunks;
};

static int disconnect_on_data(const char *data, size_t len, void *ud)
{
    struct disconnect *d = ud;
    (void)data;
    (void)len;
    return ++d->chunks >= 3; /* hang up after a few pieces */
}

START_TEST(test_client_disconnect_aborts_upstream)
{
    struct fake *f = fake_start(false);
    const char *ups[] = {f->url};
    struct api *a = gateway_start(ups, 1);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/messages", api_port(a));
    const char *body = "{\"model\":\"tiny\",\"max_tokens\":100,\"stream\":true,\"messages\":"
                       "[{\"role\":\"user\",\"content\":\"slow\"}]}";
    http_client_request_t req = {.method = "POST",
                                 .url = url,
                                 .headers = anthropic_headers,
                                 .body = body,
                                 .body_len = strlen(body),
                                 .timeout_ms = WAIT_MS};
    struct disconnect d = {0};
    http_client_response_t resp;
    ck_assert_int_eq(http_client_stream(&req, NULL, disconnect_on_data, &d, &resp),
                     HTTP_CLIENT_ERR_ABORTED);
    http_client_response_free(&resp);
    /* The gateway notices and aborts its request to the neuron, whose stream then ends. */
    test_util_wait_count(&f->mu, &f->cond, &f->n_gone, 1, WAIT_MS);
    api_destroy(a);
    fake_stop(f);
}
END_TEST

/* A neuron silent after its headers (a long prefill): the client gets keep-alives meanwhile,
 * in its dialect, and then the answer. */
START_TEST(test_keepalive_while_neuron_is_silent)
{
    struct fake *f = fake_start(false);
    const char *ups[] = {f->url};
    struct api *a = gateway_start_ping(ups, 1, 100);
    struct answer ans = call(a, "POST", "/v1/messages",
                             "{\"model\":\"tiny\",\"max_tokens\":10,\"stream\":true,"
                             "\"messages\":[{\"role\":\"user\",\"content\":\"quiet\"}]}",
                             anthropic_headers, false);
    ck_assert_int_eq(ans.status, 200);
    json_t *events = answer_events(&ans);
    size_t n = json_array_size(events), pings = 0, first_text = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(event_type(events, i), "ping") == 0 && first_text == 0)
            pings++;
        if (strcmp(event_type(events, i), "content_block_delta") == 0 && first_text == 0)
            first_text = i;
    }
    /* message_start's ping, then several while the neuron said nothing for 700 ms. */
    ck_assert_uint_ge(pings, 3);
    ck_assert_uint_gt(first_text, 0);
    ck_assert_str_eq(event_type(events, n - 1), "message_stop");
    json_decref(events);
    answer_free(&ans);

    ans = call(a, "POST", "/v1/chat/completions",
               "{\"model\":\"tiny\",\"stream\":true,\"messages\":[{\"role\":\"user\","
               "\"content\":\"quiet\"}]}",
               NULL, false);
    ck_assert_int_eq(ans.status, 200);
    const char *ka = strstr(ans.body, ": keep-alive\n\n");
    const char *late = strstr(ans.body, "late");
    ck_assert(ka && late && ka < late);
    ck_assert_ptr_nonnull(strstr(ans.body, "data: [DONE]\n\n"));
    answer_free(&ans);
    api_destroy(a);
    fake_stop(f);
}
END_TEST

START_TEST(test_refuses_closed_mode)
{
    const char *ups[] = {"http://127.0.0.1:1"};
    struct api_config cfg = {.listen = "127.0.0.1:0", .upstreams = ups, .n_upstreams = 1};
    char *err = NULL;
    ck_assert_ptr_null(api_create(&cfg, &err));
    ck_assert_ptr_nonnull(strstr(err, "--open"));
    free(err);
    cfg.open = true;
    cfg.aliases = "claude-*";
    ck_assert_ptr_null(api_create(&cfg, &err));
    ck_assert_ptr_nonnull(strstr(err, "pattern=model"));
    free(err);
}
END_TEST

static Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("service");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_models_and_side_routes);
    tcase_add_test(tc, test_openai_chat);
    tcase_add_test(tc, test_anthropic_messages);
    tcase_add_test(tc, test_retry_and_ejection);
    tcase_add_test(tc, test_client_disconnect_aborts_upstream);
    tcase_add_test(tc, test_keepalive_while_neuron_is_silent);
    tcase_add_test(tc, test_refuses_closed_mode);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* As cortex-gateway runs: every transfer on shared loops (http_client_set_loops). */
    http_client_set_loops(2);
    return test_util_run_suite(api_suite());
}
