/*
 * gateway/catalog.h — model names as clients see them: aliases ("claude-sonnet-*" -> a local
 * model) and the model-list answers in a form both SDKs accept.
 *
 * Contract: an alias table is parsed once from text ("pattern=model,pattern=model", patterns
 * in fnmatch(3) syntax, e.g. "claude-*=qwen3.6-27b,gpt-4o=smollm2") and is read-only after,
 * so any thread may use it. Resolution tries the exact name first (a real model always wins),
 * then the patterns in order. The list answers combine the OpenAI fields (object, id, created,
 * owned_by) and the Anthropic ones (type, display_name, created_at; has_more, first_id,
 * last_id), so one response serves both SDKs. This is the static stand-in for the aliases the
 * database will hold.
 */
#ifndef CORTEX_GATEWAY_CATALOG_H
#define CORTEX_GATEWAY_CATALOG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct catalog_aliases;

/* Parses text (NULL or "" for none). Returns 0 with *out set (free with
 * catalog_aliases_destroy), or -1 with a message in err[0..err_size) for an entry that is not
 * "pattern=model" with both sides non-empty. */
int catalog_aliases_parse(const char *text, struct catalog_aliases **out, char *err,
                          size_t err_size) __attribute__((warn_unused_result));
void catalog_aliases_destroy(struct catalog_aliases *a); /* accepts NULL */

/* What a client's model name means: the name itself when exists(name) says it is served (or
 * when no alias matches), else the target of the first matching pattern. Borrowed result
 * (name, or a string of the table). exists may be NULL (no exact check). */
const char *catalog_resolve(const struct catalog_aliases *a, const char *name,
                            bool (*exists)(const char *name, void *ud), void *ud);

/* One model entry of both forms; created is Unix seconds. New reference. */
json_t *catalog_model_json(const char *id, int64_t created);
/* The list answer for ids (an array of strings). New reference. */
json_t *catalog_list_json(const json_t *ids, int64_t created);

#endif
