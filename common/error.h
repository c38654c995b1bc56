/*
 * common/error.h — the one table of client-visible error codes, and error bodies per dialect.
 *
 * Contract: every error that can reach an API client is an enum err_code. One table row per
 * code fixes everything a response needs: the HTTP status in each dialect (OpenAI and Anthropic
 * differ for overload: 503 vs 529), the OpenAI "type" and "code", the Anthropic error "type",
 * whether a Retry-After header belongs on it, and a default message. Nothing else in Cortex maps
 * errors to statuses or type strings.
 *
 * A struct error carries one failure up the call stack: a code, a message for the client (never
 * internal function names) and, for bad input, the offending parameter. It owns its strings;
 * error_clear() releases them. Its zero value ({0} or ERROR_INIT) means "no error".
 */
#ifndef CORTEX_ERROR_H
#define CORTEX_ERROR_H

#include <jansson.h>
#include <stdbool.h>

enum err_code {
    ERR_NONE,               /* not an error: the zero value of struct error */
    ERR_INVALID_REQUEST,    /* 400: a parameter is missing, of the wrong type or out of range */
    ERR_INVALID_JSON,       /* 400: the body does not parse */
    ERR_UNSUPPORTED,        /* 400: valid but not supported here (e.g. n > 1) */
    ERR_PROMPT_TOO_LONG,    /* 400: prompt exceeds the context; wording matters to Claude Code */
    ERR_UNAUTHORIZED,       /* 401: missing or unknown API key */
    ERR_PERMISSION,         /* 403: the key may not do this */
    ERR_NOT_FOUND,          /* 404: no such route or object */
    ERR_MODEL_NOT_FOUND,    /* 404: no such model in the catalogue */
    ERR_METHOD_NOT_ALLOWED, /* 405 */
    ERR_CONFLICT,           /* 409: the change conflicts with current state */
    ERR_BODY_TOO_LARGE,     /* 413 */
    ERR_RATE_LIMITED,       /* 429: per-key limit hit; Retry-After */
    ERR_INTERNAL,           /* 500: a bug or an unexpected failure on our side */
    ERR_UPSTREAM,           /* 502: a neuron answered badly or dropped the connection */
    ERR_UNAVAILABLE,        /* 503: no node can serve the model now; Retry-After */
    ERR_MODEL_LOADING,      /* 503 / 529: the model is cold-loading; Retry-After */
    ERR_OVERLOADED,         /* 503 / 529: queues are full; Retry-After */
    ERR_TIMEOUT,            /* 504: no answer in time */
    ERR_CODE_COUNT,
};

enum error_dialect {
    ERROR_DIALECT_OPENAI,
    ERROR_DIALECT_ANTHROPIC,
};

/* One row of the table. Strings are static. */
struct error_info {
    enum err_code code;
    const char *name;           /* stable snake_case name: logs, metrics, the requests table */
    int http_status;            /* status in the OpenAI dialect (and for internal APIs) */
    const char *openai_type;    /* error.type */
    const char *openai_code;    /* error.code; NULL is sent as JSON null */
    int anthropic_status;       /* status in the Anthropic dialect */
    const char *anthropic_type; /* error.type */
    bool retry_after;           /* the response should carry Retry-After */
    const char *message;        /* default client message */
};

struct error {
    enum err_code code;
    char *message; /* owned; NULL means the table's default message */
    char *param;   /* owned; the offending parameter ("max_tokens", "messages[2].role") or NULL */
};

#define ERROR_INIT                                                                                 \
    {                                                                                              \
        ERR_NONE, NULL, NULL                                                                       \
    }

/* The row for code; a code outside the enum yields the ERR_INTERNAL row. Never NULL. */
const struct error_info *error_info(enum err_code code);

/* Stable name of code ("model_not_found"); "internal" for a value outside the enum. */
const char *error_code_name(enum err_code code);
/* Inverse of error_code_name(). Returns 0 and sets *out, or -1 for an unknown name. */
int error_code_parse(const char *name, enum err_code *out) __attribute__((warn_unused_result));

/* HTTP status for code in dialect. */
int error_http_status(enum err_code code, enum error_dialect dialect);

/*
 * Records a failure in e (which may be NULL: then nothing happens), replacing what e held.
 * param may be NULL; fmt NULL keeps the table's default message. The strings are copied.
 */
void error_set(struct error *e, enum err_code code, const char *param, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Frees e's strings and makes it ERR_NONE again; accepts NULL. */
void error_clear(struct error *e);
/* e's message, or the default message of e's code. */
const char *error_message(const struct error *e);

/*
 * Error bodies as new jansson references (the caller json_decref()s them). message NULL means
 * the default; invalid UTF-8 in message or param is replaced, never rejected.
 *   OpenAI:    {"error":{"message":…,"type":…,"param":…|null,"code":…|null}}
 *   Anthropic: {"type":"error","error":{"type":…,"message":…},"request_id":…}
 *              (request_id left out when NULL)
 */
json_t *error_body_openai(enum err_code code, const char *message, const char *param);
json_t *error_body_anthropic(enum err_code code, const char *message, const char *request_id);
/* The body for e in dialect; request_id is used by the Anthropic form only. */
json_t *error_body(enum error_dialect dialect, const struct error *e, const char *request_id);

#endif
