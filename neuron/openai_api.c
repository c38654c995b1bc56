/*
 * neuron/openai_api.c — OpenAI chat/completions, completions and tokenize on the neuron
 * (see openai_api.h for the contract).
 *
 * Protocol of struct oai_request (one per inference request): created by the handler on an HTTP
 * thread; after a successful batcher_submit() two parties hold it (refs = 2): the handler, until
 * it has started the stream, and the batcher, whose done() callback answers. `mu` serialises
 * the stream's start and every write, so the handler and the batcher's callbacks never write at
 * once and the first chunk is always the role chunk. on_gone (HTTP thread) only sets the job's
 * cancel flag; it cannot run after the stream is closed or the reply sent (http_request.h), and
 * that happens in done() before the batcher frees the job.
 */
#include "openai_api.h"

#include "batcher.h"
#include "buf.h"
#include "error.h"
#include "http_stream.h"
#include "ids.h"
#include "jsonutil.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OAI_MAX_STOPS   16
#define OAI_PENDING_MAX (16u << 20) /* unsent stream bytes before the client counts as gone */

enum oai_kind { OAI_KIND_CHAT, OAI_KIND_COMPLETION };

struct oai_request {
    enum oai_kind kind;
    struct openai_api *api;
    http_request_t *req;
    char request_id[136];
    uint64_t t_start_ns;

    /* the parsed request */
    json_t *body; /* owned; the strings below are borrowed from it */
    const char *model;
    json_t *messages; /* owned (chat) */
    json_t *tools;    /* owned or NULL: offered to the template and parsed out of the answer */
    bool streaming, include_usage, echo, logprobs;
    int top_logprobs;
    bool has_max_tokens;
    int64_t max_tokens;
    const char *stops[OAI_MAX_STOPS];
    size_t n_stops;
    struct sample_params sample;
    const json_t *prompt; /* completions: the "prompt" member */

    /* the answer */
    char id[IDS_SIZE];
    int64_t created;
    char *model_name;
    const struct tokenizer *tok; /* the engine's, valid while the job lives */
    char *echo_text;             /* completions with echo: the prompt text */
    struct batcher_job *job;
    atomic_int refs;

    pthread_mutex_t mu; /* guards everything below */
    http_stream_t *stream;
    bool started, finished, gone;
    struct buf pending;     /* stream bytes refused while the client was slow */
    struct buf text;        /* non-streaming: the whole answer */
    json_t *calls;          /* non-streaming: tool_calls */
    json_t *lp_chat;        /* non-streaming chat logprobs content */
    json_t *lp_legacy;      /* non-streaming completions logprobs */
    size_t n_calls;         /* tool calls seen so far (their indexes) */
    size_t text_offset;     /* completions logprobs text_offset */
    uint64_t last_write_ms; /* monotonic: the last bytes written to the stream */

    struct oai_request *prev, *next; /* on api->streams while the stream is open (api->mu) */
    bool listed;                     /* api->mu */
};

static struct oai_request *oai_request_create(http_request_t *req, struct openai_api *api,
                                              enum oai_kind kind)
{
    struct oai_request *o = xcalloc(1, sizeof *o);
    o->kind = kind;
    o->api = api;
    o->req = req;
    snprintf(o->request_id, sizeof o->request_id, "%s", http_request_id(req));
    o->t_start_ns = timing_now_ns();
    ids_new(kind == OAI_KIND_CHAT ? IDS_KIND_CHAT_COMPLETION : IDS_KIND_COMPLETION, o->id);
    o->created = timing_wall_s();
    sample_params_init(&o->sample);
    atomic_init(&o->refs, 1);
    pthread_mutex_init(&o->mu, NULL);
    return o;
}

static void oai_request_free(struct oai_request *o)
{
    if (!o)
        return;
    json_decref(o->body);
    json_decref(o->messages);
    json_decref(o->tools);
    json_decref(o->calls);
    json_decref(o->lp_chat);
    json_decref(o->lp_legacy);
    free(o->model_name);
    free(o->echo_text);
    buf_free(&o->pending);
    buf_free(&o->text);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

static void oai_unref(struct oai_request *o)
{
    if (atomic_fetch_sub(&o->refs, 1) == 1)
        oai_request_free(o);
}

static void oai_reply_error(http_request_t *req, const struct error *e)
{
    if (error_info(e->code)->retry_after)
        http_request_add_reply_header(req, "Retry-After", "1");
    json_t *body = error_body(ERROR_DIALECT_OPENAI, e, NULL);
    http_request_reply_json(req, error_http_status(e->code, ERROR_DIALECT_OPENAI), body);
    json_decref(body);
}

static enum metrics_endpoint oai_endpoint(const struct oai_request *o)
{
    return o->kind == OAI_KIND_CHAT ? METRICS_ENDPOINT_CHAT : METRICS_ENDPOINT_COMPLETIONS;
}

/* ---- parsing ----------------------------------------------------------------------------- */

static const char *const oai_roles[] = {"system", "developer", "user", "assistant", "tool"};

/* Checks one message and returns the copy the template sees (developer becomes system). */
static json_t *oai_parse_message(const json_t *m, size_t i, struct error *err)
{
    char path[64];
    snprintf(path, sizeof path, "messages[%zu]", i);
    if (!json_is_object(m)) {
        error_set(err, ERR_INVALID_REQUEST, path, "'%s' must be an object", path);
        return NULL;
    }
    const char *role = NULL;
    if (jsonutil_get_string(m, path, "role", JSONUTIL_REQUIRED, &role, err) < 0)
        return NULL;
    bool known = false;
    for (size_t k = 0; k < sizeof oai_roles / sizeof oai_roles[0]; k++)
        known |= strcmp(role, oai_roles[k]) == 0;
    if (!known) {
        error_set(err, ERR_INVALID_REQUEST, path,
                  "'%s.role' must be one of system, developer, user, assistant, tool; got '%s'",
                  path, role);
        return NULL;
    }
    const json_t *content = json_object_get(m, "content");
    if (content && !json_is_null(content) && !json_is_string(content)) {
        if (!json_is_array(content)) {
            error_set(err, ERR_INVALID_REQUEST, path,
                      "'%s.content' must be a string or an array of content parts", path);
            return NULL;
        }
        size_t j;
        const json_t *part;
        json_array_foreach(content, j, part)
        {
            char ppath[112];
            snprintf(ppath, sizeof ppath, "%s.content[%zu]", path, j);
            const char *type = NULL, *text = NULL;
            if (!json_is_object(part)) {
                error_set(err, ERR_INVALID_REQUEST, ppath, "'%s' must be an object", ppath);
                return NULL;
            }
            if (jsonutil_get_string(part, ppath, "type", JSONUTIL_REQUIRED, &type, err) < 0)
                return NULL;
            if (strcmp(type, "text") != 0) {
                error_set(err, ERR_UNSUPPORTED, ppath,
                          "'%s' has type '%s': this model accepts only text parts", ppath, type);
                return NULL;
            }
            if (jsonutil_get_string(part, ppath, "text", JSONUTIL_REQUIRED, &text, err) < 0)
                return NULL;
        }
    } else if ((!content || json_is_null(content)) && strcmp(role, "assistant") != 0) {
        error_set(err, ERR_INVALID_REQUEST, path, "'%s.content' is required", path);
        return NULL;
    }
    json_t *calls = NULL;
    if (jsonutil_get_array(m, path, "tool_calls", JSONUTIL_OPTIONAL, &calls, err) < 0)
        return NULL;
    const char *call_id = NULL;
    if (jsonutil_get_string(m, path, "tool_call_id", JSONUTIL_OPTIONAL, &call_id, err) < 0)
        return NULL;
    json_t *copy = json_copy((json_t *)m);
    if (strcmp(role, "developer") == 0)
        json_object_set_new(copy, "role", json_string("system"));
    return copy;
}

static int oai_parse_messages(struct oai_request *o, struct error *err)
{
    json_t *msgs = NULL;
    if (jsonutil_get_array(o->body, NULL, "messages", JSONUTIL_REQUIRED, &msgs, err) < 0)
        return -1;
    if (json_array_size(msgs) == 0) {
        error_set(err, ERR_INVALID_REQUEST, "messages", "'messages' must not be empty");
        return -1;
    }
    o->messages = json_array();
    size_t i;
    const json_t *m;
    json_array_foreach(msgs, i, m)
    {
        json_t *copy = oai_parse_message(m, i, err);
        if (!copy)
            return -1;
        json_array_append_new(o->messages, copy);
    }
    return 0;
}

/* tools and tool_choice: the list the template renders and the answer is parsed with. */
static int oai_parse_tools(struct oai_request *o, struct error *err)
{
    json_t *tools = NULL;
    if (jsonutil_get_array(o->body, NULL, "tools", JSONUTIL_OPTIONAL, &tools, err) < 0)
        return -1;
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t)
    {
        char path[64];
        snprintf(path, sizeof path, "tools[%zu]", i);
        json_t *fn = NULL;
        const char *name = NULL;
        if (!json_is_object(t)) {
            error_set(err, ERR_INVALID_REQUEST, path, "'%s' must be an object", path);
            return -1;
        }
        if (jsonutil_get_object(t, path, "function", JSONUTIL_REQUIRED, &fn, err) < 0)
            return -1;
        snprintf(path, sizeof path, "tools[%zu].function", i);
        if (jsonutil_get_string(fn, path, "name", JSONUTIL_REQUIRED, &name, err) < 0)
            return -1;
    }
    const json_t *choice = json_object_get(o->body, "tool_choice");
    if (!tools || json_array_size(tools) == 0)
        return 0;
    if (!choice || json_is_null(choice)) {
        o->tools = json_incref(tools);
        return 0;
    }
    if (json_is_string(choice)) {
        const char *c = json_string_value(choice);
        if (strcmp(c, "none") == 0)
            return 0;
        if (strcmp(c, "auto") == 0 || strcmp(c, "required") == 0) {
            o->tools = json_incref(tools);
            return 0;
        }
        error_set(err, ERR_INVALID_REQUEST, "tool_choice",
                  "'tool_choice' must be \"none\", \"auto\", \"required\" or a function object");
        return -1;
    }
    const char *want =
            json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
    if (!json_is_object(choice) || !want) {
        error_set(err, ERR_INVALID_REQUEST, "tool_choice",
                  "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                  "{\"type\":\"function\",\"function\":{\"name\":...}}");
        return -1;
    }
    json_array_foreach(tools, i, t)
    {
        const char *name =
                json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (strcmp(name, want) == 0) {
            o->tools = json_array();
            json_array_append(o->tools, (json_t *)t);
            return 0;
        }
    }
    error_set(err, ERR_INVALID_REQUEST, "tool_choice",
              "'tool_choice' names function '%s', which is not among the tools", want);
    return -1;
}

static int oai_parse_stop(struct oai_request *o, struct error *err)
{
    const json_t *stop = json_object_get(o->body, "stop");
    if (!stop || json_is_null(stop))
        return 0;
    if (json_is_string(stop)) {
        if (json_string_length(stop))
            o->stops[o->n_stops++] = json_string_value(stop);
        return 0;
    }
    if (!json_is_array(stop) || json_array_size(stop) > OAI_MAX_STOPS) {
        error_set(err, ERR_INVALID_REQUEST, "stop",
                  "'stop' must be a string or an array of at most %d strings", OAI_MAX_STOPS);
        return -1;
    }
    size_t i;
    const json_t *s;
    json_array_foreach(stop, i, s)
    {
        if (!json_is_string(s)) {
            error_set(err, ERR_INVALID_REQUEST, "stop", "'stop[%zu]' must be a string", i);
            return -1;
        }
        if (json_string_length(s))
            o->stops[o->n_stops++] = json_string_value(s);
    }
    return 0;
}

/* The members both endpoints share: sampling, limits, stream options. */
static int oai_parse_common(struct oai_request *o, struct error *err)
{
    const json_t *b = o->body;
    if (jsonutil_get_string(b, NULL, "model", JSONUTIL_REQUIRED, &o->model, err) < 0)
        return -1;
    if (jsonutil_get_bool(b, NULL, "stream", JSONUTIL_OPTIONAL, &o->streaming, err) < 0)
        return -1;
    json_t *so = NULL;
    if (jsonutil_get_object(b, NULL, "stream_options", JSONUTIL_OPTIONAL, &so, err) < 0)
        return -1;
    if (so && jsonutil_get_bool(so, "stream_options", "include_usage", JSONUTIL_OPTIONAL,
                                &o->include_usage, err) < 0)
        return -1;
    int64_t n = 1;
    if (jsonutil_get_int(b, NULL, "n", JSONUTIL_OPTIONAL, &n, err) < 0)
        return -1;
    if (n != 1) {
        error_set(err, ERR_UNSUPPORTED, "n", "'n' must be 1 on this server");
        return -1;
    }
    int got = jsonutil_get_int_range(b, NULL, "max_completion_tokens", JSONUTIL_OPTIONAL, 1,
                                     INT32_MAX, &o->max_tokens, err);
    if (got == 0)
        got = jsonutil_get_int_range(b, NULL, "max_tokens", JSONUTIL_OPTIONAL, 1, INT32_MAX,
                                     &o->max_tokens, err);
    if (got < 0)
        return -1;
    o->has_max_tokens = got == 1;
    double v;
    struct sample_params *s = &o->sample;
    s->temperature = 1.0f;
    if ((got = jsonutil_get_number_range(b, NULL, "temperature", JSONUTIL_OPTIONAL, 0, 2, &v,
                                         err)) < 0)
        return -1;
    if (got)
        s->temperature = (float)v;
    if ((got = jsonutil_get_number_range(b, NULL, "top_p", JSONUTIL_OPTIONAL, 0, 1, &v, err)) < 0)
        return -1;
    if (got)
        s->top_p = (float)v;
    if ((got = jsonutil_get_number_range(b, NULL, "min_p", JSONUTIL_OPTIONAL, 0, 1, &v, err)) < 0)
        return -1;
    if (got)
        s->min_p = (float)v;
    if ((got = jsonutil_get_number_range(b, NULL, "presence_penalty", JSONUTIL_OPTIONAL, -2, 2, &v,
                                         err)) < 0)
        return -1;
    if (got)
        s->presence_penalty = (float)v;
    if ((got = jsonutil_get_number_range(b, NULL, "frequency_penalty", JSONUTIL_OPTIONAL, -2, 2, &v,
                                         err)) < 0)
        return -1;
    if (got)
        s->frequency_penalty = (float)v;
    if ((got = jsonutil_get_number_range(b, NULL, "repetition_penalty", JSONUTIL_OPTIONAL, 0.01, 10,
                                         &v, err)) < 0)
        return -1;
    if (got)
        s->repetition_penalty = (float)v;
    int64_t k;
    if ((got = jsonutil_get_int_range(b, NULL, "top_k", JSONUTIL_OPTIONAL, -1, INT32_MAX, &k,
                                      err)) < 0)
        return -1;
    if (got)
        s->top_k = k < 0 ? 0 : (int)k;
    int64_t seed;
    if ((got = jsonutil_get_int(b, NULL, "seed", JSONUTIL_OPTIONAL, &seed, err)) < 0)
        return -1;
    if (got) {
        s->seed = (uint64_t)seed;
        s->has_seed = true;
    }
    json_t *rf = NULL;
    if (jsonutil_get_object(b, NULL, "response_format", JSONUTIL_OPTIONAL, &rf, err) < 0)
        return -1;
    const char *rf_type = "text";
    if (rf &&
        jsonutil_get_string(rf, "response_format", "type", JSONUTIL_REQUIRED, &rf_type, err) < 0)
        return -1;
    if (strcmp(rf_type, "text") != 0) {
        error_set(err, ERR_UNSUPPORTED, "response_format",
                  "'response_format' of type '%s' is not supported; use \"text\"", rf_type);
        return -1;
    }
    return oai_parse_stop(o, err);
}

static int oai_parse_chat(struct oai_request *o, struct error *err)
{
    if (oai_parse_common(o, err) != 0 || oai_parse_messages(o, err) != 0 ||
        oai_parse_tools(o, err) != 0)
        return -1;
    if (jsonutil_get_bool(o->body, NULL, "logprobs", JSONUTIL_OPTIONAL, &o->logprobs, err) < 0)
        return -1;
    int64_t top = 0;
    if (jsonutil_get_int_range(o->body, NULL, "top_logprobs", JSONUTIL_OPTIONAL, 0,
                               SAMPLE_MAX_LOGPROBS, &top, err) < 0)
        return -1;
    if (top > 0 && !o->logprobs) {
        error_set(err, ERR_INVALID_REQUEST, "top_logprobs",
                  "'top_logprobs' needs 'logprobs' set to true");
        return -1;
    }
    o->top_logprobs = (int)top;
    return 0;
}

static int oai_parse_completion(struct oai_request *o, struct error *err)
{
    if (oai_parse_common(o, err) != 0)
        return -1;
    if (jsonutil_get_bool(o->body, NULL, "echo", JSONUTIL_OPTIONAL, &o->echo, err) < 0)
        return -1;
    int64_t lp = 0;
    int got = jsonutil_get_int_range(o->body, NULL, "logprobs", JSONUTIL_OPTIONAL, 0, 5, &lp, err);
    if (got < 0)
        return -1;
    o->logprobs = got == 1;
    o->top_logprobs = (int)lp;
    const char *suffix = NULL;
    if (jsonutil_get_string(o->body, NULL, "suffix", JSONUTIL_OPTIONAL, &suffix, err) < 0)
        return -1;
    if (suffix && suffix[0]) {
        error_set(err, ERR_UNSUPPORTED, "suffix", "'suffix' is not supported");
        return -1;
    }
    const json_t *p = json_object_get(o->body, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
        p = json_array_get(p, 0);
    bool ok = json_is_string(p);
    if (json_is_array(p) && json_array_size(p) > 0) {
        ok = true;
        size_t i;
        const json_t *t;
        json_array_foreach(p, i, t) ok &= json_is_integer(t);
    }
    if (!ok) {
        error_set(err, ERR_INVALID_REQUEST, "prompt",
                  "'prompt' must be a string, an array of one string, or an array of token ids");
        return -1;
    }
    o->prompt = p;
    return 0;
}

/* ---- prompt ------------------------------------------------------------------------------ */

/* Renders and tokenises the request's prompt into ids and checks it against the context. */
static int oai_build_prompt(struct oai_request *o, struct engine *e, struct tokenizer_ids *ids,
                            struct error *err)
{
    char msg[1024];
    if (o->kind == OAI_KIND_CHAT) {
        char *text = NULL;
        size_t len = 0;
        if (engine_render_chat(e, o->messages, o->tools, true, NULL, &text, &len, msg,
                               sizeof msg) != 0) {
            error_set(err, ERR_INVALID_REQUEST, "messages", "%s", msg);
            return -1;
        }
        int rc = engine_tokenize(e, text, len, true, ids, msg, sizeof msg);
        free(text);
        if (rc != 0) {
            error_set(err, ERR_INVALID_REQUEST, "messages", "%s", msg);
            return -1;
        }
    } else if (json_is_string(o->prompt)) {
        const char *text = json_string_value(o->prompt);
        size_t len = json_string_length(o->prompt);
        if (engine_tokenize(e, text, len, false, ids, msg, sizeof msg) != 0) {
            error_set(err, ERR_INVALID_REQUEST, "prompt", "%s", msg);
            return -1;
        }
        if (o->echo)
            o->echo_text = xstrndup(text, len);
    } else {
        int64_t vocab = model_config(e->model)->vocab_size;
        size_t i;
        const json_t *t;
        json_array_foreach(o->prompt, i, t)
        {
            json_int_t id = json_integer_value(t);
            if (id < 0 || id >= vocab) {
                error_set(err, ERR_INVALID_REQUEST, "prompt",
                          "'prompt[%zu]' is %lld, outside the vocabulary (0..%lld)", i,
                          (long long)id, (long long)vocab - 1);
                return -1;
            }
            ids->v = xgrow(ids->v, &ids->cap, ids->n + 1, sizeof *ids->v);
            ids->v[ids->n++] = (int32_t)id;
        }
        if (o->echo) {
            struct buf b = BUF_INIT;
            for (size_t k = 0; k < ids->n; k++) {
                size_t len;
                const char *bytes = tokenizer_token_bytes(e->tok, ids->v[k], &len);
                if (bytes)
                    buf_append(&b, bytes, len);
            }
            o->echo_text = buf_steal(&b, NULL);
        }
    }
    int64_t ctx = model_max_context(e->model);
    if (ids->n == 0) {
        error_set(err, ERR_INVALID_REQUEST, o->kind == OAI_KIND_CHAT ? "messages" : "prompt",
                  "the prompt is empty");
        return -1;
    }
    if ((int64_t)ids->n >= ctx) {
        error_set(err, ERR_PROMPT_TOO_LONG, o->kind == OAI_KIND_CHAT ? "messages" : "prompt",
                  "prompt is too long: %zu tokens > %lld maximum (the context length of model "
                  "'%s', which must also hold at least one new token)",
                  ids->n, (long long)ctx - 1, o->model);
        return -1;
    }
    return 0;
}

/* ---- answer pieces ----------------------------------------------------------------------- */

static json_t *oai_finite(float v)
{
    return json_real(isfinite(v) ? (double)v : -9999.0);
}

static json_t *oai_token_text(const struct tokenizer *tok, int32_t id)
{
    size_t len = 0;
    const char *b = tokenizer_token_bytes(tok, id, &len);
    return jsonutil_string_lossy(b ? b : "", b ? len : 0);
}

static json_t *oai_token_bytes(const struct tokenizer *tok, int32_t id)
{
    size_t len = 0;
    const char *b = tokenizer_token_bytes(tok, id, &len);
    json_t *a = json_array();
    for (size_t i = 0; b && i < len; i++)
        json_array_append_new(a, json_integer((unsigned char)b[i]));
    return a;
}

/* Chat logprobs entries for the tokens of out, appended to content. */
static void oai_chat_logprobs(struct oai_request *o, const struct gen_output *out, json_t *content)
{
    for (size_t i = 0; i < out->n_logprobs; i++) {
        const struct sample_result *r = &out->logprobs[i].r;
        json_t *top = json_array();
        for (int k = 0; k < r->n_top; k++)
            json_array_append_new(top, json_pack("{s:o, s:o, s:o}", "token",
                                                 oai_token_text(o->tok, r->top[k].token), "logprob",
                                                 oai_finite(r->top[k].logprob), "bytes",
                                                 oai_token_bytes(o->tok, r->top[k].token)));
        json_array_append_new(content,
                              json_pack("{s:o, s:o, s:o, s:o}", "token",
                                        oai_token_text(o->tok, r->token), "logprob",
                                        oai_finite(r->logprob), "bytes",
                                        oai_token_bytes(o->tok, r->token), "top_logprobs", top));
    }
}

/* Completions logprobs ({tokens, token_logprobs, top_logprobs, text_offset}) appended to lp. */
static void oai_legacy_logprobs(struct oai_request *o, const struct gen_output *out, json_t *lp)
{
    for (size_t i = 0; i < out->n_logprobs; i++) {
        const struct sample_result *r = &out->logprobs[i].r;
        json_t *top = json_object();
        for (int k = 0; k < r->n_top; k++) {
            json_t *t = oai_token_text(o->tok, r->top[k].token);
            json_object_set_new(top, json_string_value(t), oai_finite(r->top[k].logprob));
            json_decref(t);
        }
        size_t len = 0;
        tokenizer_token_bytes(o->tok, r->token, &len);
        json_array_append_new(json_object_get(lp, "tokens"), oai_token_text(o->tok, r->token));
        json_array_append_new(json_object_get(lp, "token_logprobs"), oai_finite(r->logprob));
        json_array_append_new(json_object_get(lp, "top_logprobs"), top);
        json_array_append_new(json_object_get(lp, "text_offset"),
                              json_integer((json_int_t)o->text_offset));
        o->text_offset += len;
    }
}

static json_t *oai_legacy_logprobs_new(void)
{
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                     "text_offset");
}

static json_t *oai_tool_call_json(const struct tool_call *c)
{
    char call_id[IDS_SIZE];
    ids_new(IDS_KIND_TOOL_CALL, call_id);
    return json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", call_id, "type", "function", "function",
                     "name", c->name, "arguments", c->arguments);
}

static json_t *oai_usage(const struct batcher_result *r)
{
    /* prompt_tokens stays the whole prompt; cached_tokens (OpenAI's name) is the part restored
     * from a saved prefix instead of being read again */
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens",
                     (json_int_t)r->stats.prompt_tokens, "completion_tokens",
                     (json_int_t)r->stats.completion_tokens, "total_tokens",
                     (json_int_t)(r->stats.prompt_tokens + r->stats.completion_tokens),
                     "prompt_tokens_details", "cached_tokens", (json_int_t)r->stats.cached_tokens);
}

static json_t *oai_timings(const struct batcher_result *r)
{
    const struct gen_stats *s = &r->stats;
    int64_t decode_tokens = s->completion_tokens > 1 ? s->completion_tokens - 1 : 0;
    int64_t read = s->prompt_tokens - s->cached_tokens; /* cached ones cost no pass */
    double pps = s->prompt_ms > 0 ? (double)read * 1000.0 / s->prompt_ms : 0;
    double dps = s->decode_ms > 0 ? (double)decode_tokens * 1000.0 / s->decode_ms : 0;
    return json_pack("{s:f, s:I, s:f, s:f, s:f, s:I, s:f, s:f}", "queue_ms", r->queue_ms,
                     "prompt_tokens", (json_int_t)s->prompt_tokens, "prompt_ms", s->prompt_ms,
                     "prompt_per_second", pps, "first_token_ms", s->first_token_ms, "decode_tokens",
                     (json_int_t)decode_tokens, "decode_ms", s->decode_ms, "decode_per_second",
                     dps);
}

/* vLLM's choices[].stop_reason: the stop string that ended the answer, else null. The gateway
 * reads it to answer Anthropic clients with stop_reason "stop_sequence" and the string. */
static json_t *oai_stop_reason(const struct oai_request *o, const struct batcher_result *r)
{
    if (r->stop_index >= 0 && (size_t)r->stop_index < o->n_stops)
        return json_string(o->stops[r->stop_index]);
    return json_null();
}

/* ---- streaming --------------------------------------------------------------------------- */

/* Puts an open stream on the keep-alive list. o->mu held: allowed because the ticker only
 * try-locks a request (see openai_api.h). */
static void oai_list_add(struct oai_request *o)
{
    struct openai_api *api = o->api;
    pthread_mutex_lock(&api->mu);
    o->prev = NULL;
    o->next = api->streams;
    if (api->streams)
        api->streams->prev = o;
    api->streams = o;
    o->listed = true;
    pthread_mutex_unlock(&api->mu);
}

/* Takes o off the keep-alive list (before its stream is closed). o->mu held. */
static void oai_list_remove(struct oai_request *o)
{
    struct openai_api *api = o->api;
    pthread_mutex_lock(&api->mu);
    if (o->listed) {
        if (o->prev)
            o->prev->next = o->next;
        else
            api->streams = o->next;
        if (o->next)
            o->next->prev = o->prev;
        o->listed = false;
    }
    pthread_mutex_unlock(&api->mu);
}

/* Queues bytes on the stream, keeping what a slow client cannot take yet. mu held. */
static void oai_write(struct oai_request *o, const char *data, size_t len)
{
    if (o->gone || !o->stream)
        return;
    o->last_write_ms = timing_now_ms();
    http_stream_result_t rc;
    if (o->pending.len) {
        rc = http_stream_write(o->stream, o->pending.data, o->pending.len);
        if (rc == HTTP_STREAM_GONE) {
            o->gone = true;
            return;
        }
        if (rc == HTTP_STREAM_OK)
            buf_reset(&o->pending);
    }
    if (!o->pending.len) {
        rc = http_stream_write(o->stream, data, len);
        if (rc == HTTP_STREAM_OK)
            return;
        if (rc == HTTP_STREAM_GONE) {
            o->gone = true;
            return;
        }
    }
    buf_append(&o->pending, data, len);
    if (o->pending.len > OAI_PENDING_MAX) {
        LOG_WARN("request %s: client reads too slowly; cancelling", o->request_id);
        o->gone = true;
        batcher_job_cancel(o->job);
    }
}

/* Sends one SSE event holding json (consumed). mu held. */
static void oai_send(struct oai_request *o, json_t *json)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "data: ");
    jsonutil_dump_buf(&b, json);
    buf_append_str(&b, "\n\n");
    oai_write(o, b.data, b.len);
    buf_free(&b);
    json_decref(json);
}

/* A chunk envelope with one choice (consumed), or with "choices": [] when choice is NULL. */
static json_t *oai_chunk(struct oai_request *o, json_t *choice)
{
    json_t *choices = json_array();
    if (choice)
        json_array_append_new(choices, choice);
    return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", o->id, "object",
                     o->kind == OAI_KIND_CHAT ? "chat.completion.chunk" : "text_completion",
                     "created", (json_int_t)o->created, "model", o->model_name, "choices", choices);
}

static json_t *oai_chat_choice(json_t *delta, json_t *logprobs, const char *finish)
{
    return json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "delta", delta, "logprobs",
                     logprobs ? logprobs : json_null(), "finish_reason",
                     finish ? json_string(finish) : json_null());
}

static json_t *oai_text_choice(const char *text, size_t len, json_t *logprobs, const char *finish)
{
    return json_pack("{s:o, s:i, s:o, s:o}", "text", jsonutil_string_lossy(text, len), "index", 0,
                     "logprobs", logprobs ? logprobs : json_null(), "finish_reason",
                     finish ? json_string(finish) : json_null());
}

/* Starts the SSE answer and sends the first chunk. mu held. */
static void oai_start_stream(struct oai_request *o)
{
    if (o->started)
        return;
    o->started = true;
    o->stream = http_stream_start(o->req, 200, "text/event-stream", NULL, NULL);
    if (!o->stream) {
        o->gone = true;
        return;
    }
    oai_list_add(o);
    if (o->kind == OAI_KIND_CHAT)
        oai_send(o, oai_chunk(o, oai_chat_choice(json_pack("{s:s, s:s}", "role", "assistant",
                                                           "content", ""),
                                                 NULL, NULL)));
    else if (o->echo_text)
        oai_send(o, oai_chunk(o, oai_text_choice(o->echo_text, strlen(o->echo_text), NULL, NULL)));
}

static void oai_stream_output(struct oai_request *o, const struct gen_output *out)
{
    json_t *lp = NULL;
    if (out->n_logprobs && o->kind == OAI_KIND_CHAT) {
        lp = json_pack("{s:[]}", "content");
        oai_chat_logprobs(o, out, json_object_get(lp, "content"));
    } else if (out->n_logprobs) {
        lp = oai_legacy_logprobs_new();
        oai_legacy_logprobs(o, out, lp);
    }
    if (o->kind == OAI_KIND_COMPLETION) {
        if (out->text_len || lp)
            oai_send(o, oai_chunk(o, oai_text_choice(out->text, out->text_len, lp, NULL)));
        return;
    }
    if (out->text_len || lp) {
        json_t *delta =
                json_pack("{s:o}", "content", jsonutil_string_lossy(out->text, out->text_len));
        oai_send(o, oai_chunk(o, oai_chat_choice(delta, lp, NULL)));
    }
    for (size_t i = 0; i < out->n_calls; i++) {
        json_t *call = oai_tool_call_json(&out->calls[i]);
        json_t *fn = json_object_get(call, "function");
        json_t *args = json_incref(json_object_get(fn, "arguments"));
        json_object_set_new(fn, "arguments", json_string(""));
        json_object_set_new(call, "index", json_integer((json_int_t)o->n_calls));
        oai_send(o, oai_chunk(o, oai_chat_choice(json_pack("{s:[o]}", "tool_calls", call), NULL,
                                                 NULL)));
        json_t *frag = json_pack("{s:I, s:{s:o}}", "index", (json_int_t)o->n_calls, "function",
                                 "arguments", args);
        oai_send(o, oai_chunk(o, oai_chat_choice(json_pack("{s:[o]}", "tool_calls", frag), NULL,
                                                 NULL)));
        o->n_calls++;
    }
}

/* Gives a slow client up to about two seconds to take what is still pending. mu held. */
static void oai_flush(struct oai_request *o)
{
    for (int i = 0; i < 20 && o->pending.len && !o->gone && o->stream; i++) {
        if (http_stream_wait_writable(o->stream, 100) == HTTP_STREAM_GONE)
            break;
        if (http_stream_write(o->stream, o->pending.data, o->pending.len) == HTTP_STREAM_OK)
            buf_reset(&o->pending);
    }
}

/* ---- batcher callbacks ------------------------------------------------------------------- */

static void oai_on_output(void *ud, const struct gen_output *out)
{
    struct oai_request *o = ud;
    pthread_mutex_lock(&o->mu);
    if (o->streaming) {
        oai_start_stream(o);
        oai_stream_output(o, out);
    } else {
        buf_append(&o->text, out->text, out->text_len);
        for (size_t i = 0; i < out->n_calls; i++) {
            json_t *call = oai_tool_call_json(&out->calls[i]);
            json_array_append_new(o->calls, call);
        }
        if (out->n_logprobs && o->kind == OAI_KIND_CHAT)
            oai_chat_logprobs(o, out, o->lp_chat);
        else if (out->n_logprobs)
            oai_legacy_logprobs(o, out, o->lp_legacy);
    }
    pthread_mutex_unlock(&o->mu);
}

static const char *oai_finish_name(const struct oai_request *o, enum gen_finish f)
{
    if (f == GEN_FINISH_TOOL_CALLS && o->kind == OAI_KIND_CHAT)
        return "tool_calls";
    if (f == GEN_FINISH_LENGTH)
        return "length";
    return "stop";
}

static void oai_stream_done(struct oai_request *o, const struct batcher_result *r,
                            const struct error *e)
{
    oai_start_stream(o);
    if (e->code != ERR_NONE) {
        json_t *body = error_body(ERROR_DIALECT_OPENAI, e, NULL);
        oai_send(o, body);
    } else if (r->finish != GEN_FINISH_CANCELLED) {
        const char *finish = oai_finish_name(o, r->finish);
        json_t *choice = o->kind == OAI_KIND_CHAT ? oai_chat_choice(json_object(), NULL, finish)
                                                  : oai_text_choice("", 0, NULL, finish);
        json_object_set_new(choice, "stop_reason", oai_stop_reason(o, r));
        json_t *last = oai_chunk(o, choice);
        if (o->include_usage) {
            oai_send(o, last);
            last = oai_chunk(o, NULL);
            json_object_set_new(last, "usage", oai_usage(r));
        }
        json_object_set_new(last, "timings", oai_timings(r));
        oai_send(o, last);
        oai_write(o, "data: [DONE]\n\n", 14);
    }
    oai_flush(o);
    oai_list_remove(o);
    http_stream_close(o->stream);
    o->stream = NULL;
}

static void oai_reply_done(struct oai_request *o, const struct batcher_result *r,
                           const struct error *e)
{
    if (e->code != ERR_NONE) {
        oai_reply_error(o->req, e);
        return;
    }
    if (r->finish == GEN_FINISH_CANCELLED) {
        struct error gone = ERROR_INIT;
        error_set(&gone, ERR_UNAVAILABLE, NULL, "the request was cancelled");
        oai_reply_error(o->req, &gone);
        error_clear(&gone);
        return;
    }
    const char *finish = oai_finish_name(o, r->finish);
    json_t *choice;
    if (o->kind == OAI_KIND_CHAT) {
        json_t *msg = json_pack("{s:s}", "role", "assistant");
        bool calls = json_array_size(o->calls) > 0;
        json_object_set_new(msg, "content",
                            calls && o->text.len == 0
                                    ? json_null()
                                    : jsonutil_string_lossy(buf_cstr(&o->text), o->text.len));
        if (calls)
            json_object_set(msg, "tool_calls", o->calls);
        json_t *lp = o->logprobs ? json_pack("{s:O}", "content", o->lp_chat) : json_null();
        choice = json_pack("{s:i, s:o, s:o, s:s}", "index", 0, "message", msg, "logprobs", lp,
                           "finish_reason", finish);
    } else {
        struct buf t = BUF_INIT;
        if (o->echo_text)
            buf_append_str(&t, o->echo_text);
        buf_append(&t, o->text.data ? o->text.data : "", o->text.len);
        choice = json_pack("{s:o, s:i, s:O, s:s}", "text", jsonutil_string_lossy(t.data, t.len),
                           "index", 0, "logprobs", o->logprobs ? o->lp_legacy : json_null(),
                           "finish_reason", finish);
        buf_free(&t);
    }
    json_t *doc = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o, s:o}", "id", o->id, "object",
                            o->kind == OAI_KIND_CHAT ? "chat.completion" : "text_completion",
                            "created", (json_int_t)o->created, "model", o->model_name, "choices",
                            choice, "usage", oai_usage(r), "timings", oai_timings(r));
    json_object_set_new(json_array_get(json_object_get(doc, "choices"), 0), "stop_reason",
                        oai_stop_reason(o, r));
    http_request_reply_json(o->req, 200, doc);
    json_decref(doc);
}

static void oai_on_done(void *ud, const struct batcher_result *r)
{
    struct oai_request *o = ud;
    struct error e = ERROR_INIT;
    if (r->error != ERR_NONE)
        error_set(&e, r->error, NULL, "%s", r->error_text ? r->error_text : "generation failed");
    const char *finish = e.code != ERR_NONE                  ? "error"
                         : r->finish == GEN_FINISH_CANCELLED ? "cancelled"
                                                             : oai_finish_name(o, r->finish);
    int status = 200;
    pthread_mutex_lock(&o->mu);
    if (o->streaming) {
        oai_stream_done(o, r, &e);
    } else {
        if (e.code != ERR_NONE)
            status = error_http_status(e.code, ERROR_DIALECT_OPENAI);
        else if (r->finish == GEN_FINISH_CANCELLED)
            status = error_http_status(ERR_UNAVAILABLE, ERROR_DIALECT_OPENAI);
        oai_reply_done(o, r, &e);
    }
    o->finished = true;
    pthread_mutex_unlock(&o->mu);

    const struct gen_stats *s = &r->stats;
    metrics_count_request(o->api->metrics, oai_endpoint(o), status);
    metrics_count_generation(o->api->metrics, s->prompt_tokens, s->completion_tokens, finish,
                             r->queue_ms, s->first_token_ms);
    struct log_ctx ctx = {.request_id = o->request_id, .model = o->model_name};
    int64_t decode_tokens = s->completion_tokens > 1 ? s->completion_tokens - 1 : 0;
    LOGC_INFO(&ctx,
              "%s status=%d finish=%s stream=%d prompt_tokens=%lld completion_tokens=%lld "
              "queue_ms=%.1f prompt_ms=%.1f decode_tok_s=%.1f total_ms=%.1f%s%s",
              o->kind == OAI_KIND_CHAT ? "chat.completion" : "text_completion", status, finish,
              o->streaming, (long long)s->prompt_tokens, (long long)s->completion_tokens,
              r->queue_ms, s->prompt_ms,
              s->decode_ms > 0 ? (double)decode_tokens * 1000.0 / s->decode_ms : 0.0,
              (double)(timing_now_ns() - o->t_start_ns) / 1e6, e.code ? " error=" : "",
              e.code ? error_message(&e) : "");
    error_clear(&e);
    oai_unref(o);
}

static void oai_on_gone(void *ud)
{
    struct oai_request *o = ud;
    if (o->job)
        batcher_job_cancel(o->job);
}

/* ---- handlers ---------------------------------------------------------------------------- */

static void oai_handle(http_request_t *req, struct openai_api *api, enum oai_kind kind)
{
    struct oai_request *o = oai_request_create(req, api, kind);
    struct error err = ERROR_INIT;
    struct registry_model *m = NULL;
    struct tokenizer_ids ids = {0};
    bool deferred = false;
    size_t len;
    const char *body = http_request_body(req, &len);
    o->body = jsonutil_parse_object(body, len, &err);
    if (!o->body)
        goto fail;
    if ((kind == OAI_KIND_CHAT ? oai_parse_chat(o, &err) : oai_parse_completion(o, &err)) != 0)
        goto fail;
    m = registry_acquire(api->registry, o->model, &err);
    if (!m)
        goto fail;
    struct engine *e = registry_model_engine(m);
    o->tok = e->tok;
    o->model_name = xstrdup(o->model);
    if (oai_build_prompt(o, e, &ids, &err) != 0)
        goto fail;
    int64_t room = model_max_context(e->model) - (int64_t)ids.n;
    struct gen_params gp;
    gen_params_init(&gp);
    gp.sample = o->sample;
    gp.sample.logprobs = o->logprobs;
    gp.sample.n_logprobs = o->top_logprobs;
    gp.max_tokens = o->has_max_tokens && o->max_tokens < room ? o->max_tokens : room;
    gp.stops = o->stops;
    gp.n_stops = o->n_stops;
    gp.tools = o->tools;
    char msg[256];
    if (sample_params_validate(&gp.sample, msg, sizeof msg) != 0) {
        error_set(&err, ERR_INVALID_REQUEST, NULL, "%s", msg);
        goto fail;
    }
    if (!o->streaming) {
        o->calls = json_array();
        o->lp_chat = json_array();
        o->lp_legacy = oai_legacy_logprobs_new();
    }
    char n_prompt[32];
    snprintf(n_prompt, sizeof n_prompt, "%zu", ids.n);
    http_request_add_reply_header(req, "X-Prompt-Tokens", n_prompt);
    static const struct batcher_sink sink = {.output = oai_on_output, .done = oai_on_done};
    o->job = batcher_job_create(ids.v, ids.n, &gp, &sink, o);
    http_request_defer(req, oai_on_gone, o);
    deferred = true;
    atomic_store(&o->refs, 2);
    switch (batcher_submit(registry_model_batcher(m), o->job)) {
    case BATCHER_SUBMIT_OK:
        break;
    case BATCHER_SUBMIT_FULL:
        atomic_store(&o->refs, 1);
        error_set(&err, ERR_OVERLOADED, NULL,
                  "model '%s' has too many requests waiting; retry shortly", o->model);
        goto fail;
    case BATCHER_SUBMIT_STOPPED:
        atomic_store(&o->refs, 1);
        error_set(&err, ERR_MODEL_NOT_FOUND, "model", "model '%s' is being unloaded", o->model);
        goto fail;
    }
    if (o->streaming) {
        pthread_mutex_lock(&o->mu);
        if (!o->finished)
            oai_start_stream(o);
        pthread_mutex_unlock(&o->mu);
    }
    registry_release(api->registry, m);
    free(ids.v);
    oai_unref(o);
    return;
fail:
    metrics_count_request(api->metrics, oai_endpoint(o),
                          error_http_status(err.code, ERROR_DIALECT_OPENAI));
    {
        struct log_ctx ctx = {.request_id = o->request_id, .model = o->model};
        LOGC_INFO(&ctx, "%s refused: %s", kind == OAI_KIND_CHAT ? "chat.completion" : "completion",
                  error_message(&err));
    }
    oai_reply_error(req, &err);
    (void)deferred; /* replying after defer is allowed from the handler too */
    batcher_job_destroy(o->job);
    o->job = NULL;
    registry_release(api->registry, m);
    free(ids.v);
    error_clear(&err);
    oai_request_free(o);
}

/* Writes ": keep-alive" to every stream quiet for ping_ms (see openai_api.h). */
static void *oai_ticker(void *arg)
{
    struct openai_api *api = arg;
    int64_t step = api->ping_ms / 4 > 20 ? api->ping_ms / 4 : 20;
    pthread_mutex_lock(&api->mu);
    while (!api->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += step / 1000;
        until.tv_nsec += (step % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&api->wake, &api->mu, &until);
        uint64_t now = timing_now_ms();
        for (struct oai_request *o = api->streams; o && !api->stopping; o = o->next) {
            if (pthread_mutex_trylock(&o->mu) != 0)
                continue; /* being written to: not quiet */
            if (o->stream && !o->gone && !o->pending.len &&
                now - o->last_write_ms >= (uint64_t)api->ping_ms)
                oai_write(o, ": keep-alive\n\n", 14);
            pthread_mutex_unlock(&o->mu);
        }
    }
    pthread_mutex_unlock(&api->mu);
    return NULL;
}

void openai_api_init(struct openai_api *api, struct registry *registry, struct metrics *metrics,
                     int64_t ping_ms)
{
    *api = (struct openai_api){
            .registry = registry, .metrics = metrics, .ping_ms = ping_ms > 0 ? ping_ms : 5000};
    pthread_mutex_init(&api->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&api->wake, &ca);
    pthread_condattr_destroy(&ca);
    api->ticker_started = pthread_create(&api->ticker, NULL, oai_ticker, api) == 0;
    if (!api->ticker_started)
        LOG_ERROR("cannot start the keep-alive thread: quiet streams get no keep-alives");
}

void openai_api_shutdown(struct openai_api *api)
{
    if (!api->registry)
        return; /* never initialised */
    pthread_mutex_lock(&api->mu);
    api->stopping = true;
    pthread_cond_broadcast(&api->wake);
    pthread_mutex_unlock(&api->mu);
    if (api->ticker_started)
        pthread_join(api->ticker, NULL);
    pthread_cond_destroy(&api->wake);
    pthread_mutex_destroy(&api->mu);
    api->registry = NULL;
}

void openai_api_chat_completions(http_request_t *req, struct openai_api *api)
{
    oai_handle(req, api, OAI_KIND_CHAT);
}

void openai_api_completions(http_request_t *req, struct openai_api *api)
{
    oai_handle(req, api, OAI_KIND_COMPLETION);
}

void openai_api_tokenize(http_request_t *req, struct openai_api *api)
{
    struct error err = ERROR_INIT;
    struct registry_model *m = NULL;
    struct tokenizer_ids ids = {0};
    bool chat;
    struct oai_request *o = oai_request_create(req, api, OAI_KIND_CHAT);
    size_t len;
    const char *body = http_request_body(req, &len);
    o->body = jsonutil_parse_object(body, len, &err);
    if (!o->body)
        goto fail;
    chat = json_object_get(o->body, "prompt") == NULL;
    o->kind = chat ? OAI_KIND_CHAT : OAI_KIND_COMPLETION;
    if (jsonutil_get_string(o->body, NULL, "model", JSONUTIL_REQUIRED, &o->model, &err) < 0)
        goto fail;
    if (chat && (oai_parse_messages(o, &err) != 0 || oai_parse_tools(o, &err) != 0))
        goto fail;
    if (!chat) {
        const json_t *p = json_object_get(o->body, "prompt");
        if (!json_is_string(p)) {
            error_set(&err, ERR_INVALID_REQUEST, "prompt", "'prompt' must be a string");
            goto fail;
        }
        o->prompt = p;
    }
    m = registry_acquire(api->registry, o->model, &err);
    if (!m)
        goto fail;
    struct engine *e = registry_model_engine(m);
    if (oai_build_prompt(o, e, &ids, &err) != 0 && err.code != ERR_PROMPT_TOO_LONG)
        goto fail;
    error_clear(&err);
    json_t *list = json_array();
    for (size_t i = 0; i < ids.n; i++)
        json_array_append_new(list, json_integer(ids.v[i]));
    json_t *doc = json_pack("{s:s, s:I, s:o, s:I}", "model", o->model, "count", (json_int_t)ids.n,
                            "ids", list, "max_context", (json_int_t)model_max_context(e->model));
    http_request_reply_json(req, 200, doc);
    json_decref(doc);
    metrics_count_request(api->metrics, METRICS_ENDPOINT_TOKENIZE, 200);
    goto out;
fail:
    metrics_count_request(api->metrics, METRICS_ENDPOINT_TOKENIZE,
                          error_http_status(err.code, ERROR_DIALECT_OPENAI));
    oai_reply_error(req, &err);
out:
    registry_release(api->registry, m);
    free(ids.v);
    error_clear(&err);
    oai_request_free(o);
}
