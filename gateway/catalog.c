/*
 * gateway/catalog.c — model aliases and model-list answers (see catalog.h).
 */
#include "catalog.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timing.h"
#include "xalloc.h"

struct catalog_alias {
    char *pattern;
    char *target;
};

struct catalog_aliases {
    struct catalog_alias *items;
    size_t n;
};

void catalog_aliases_destroy(struct catalog_aliases *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++) {
        free(a->items[i].pattern);
        free(a->items[i].target);
    }
    free(a->items);
    free(a);
}

/* Copies s[0..n) without surrounding blanks. */
static char *catalog_trimmed(const char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return xstrndup(s, n);
}

int catalog_aliases_parse(const char *text, struct catalog_aliases **out, char *err,
                          size_t err_size)
{
    struct catalog_aliases *a = xcalloc(1, sizeof *a);
    size_t cap = 0;
    const char *p = text ? text : "";
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char *pattern = eq ? catalog_trimmed(p, (size_t)(eq - p)) : NULL;
        char *target = eq ? catalog_trimmed(eq + 1, len - (size_t)(eq - p) - 1) : NULL;
        if (!eq || !pattern[0] || !target[0]) {
            snprintf(err, err_size, "bad model alias '%.*s': expected pattern=model", (int)len, p);
            free(pattern);
            free(target);
            catalog_aliases_destroy(a);
            *out = NULL;
            return -1;
        }
        a->items = xgrow(a->items, &cap, a->n + 1, sizeof *a->items);
        a->items[a->n].pattern = pattern;
        a->items[a->n].target = target;
        a->n++;
        p += len;
        if (*p == ',')
            p++;
    }
    *out = a;
    return 0;
}

const char *catalog_resolve(const struct catalog_aliases *a, const char *name,
                            bool (*exists)(const char *name, void *ud), void *ud)
{
    if (exists && exists(name, ud))
        return name;
    for (size_t i = 0; a && i < a->n; i++) {
        if (fnmatch(a->items[i].pattern, name, 0) == 0)
            return a->items[i].target;
    }
    return name;
}

json_t *catalog_model_json(const char *id, int64_t created)
{
    char stamp[TIMING_RFC3339_SIZE];
    timing_format_rfc3339(created * 1000, false, stamp);
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:s}", "id", id, "object", "model", "created",
                     (json_int_t)created, "owned_by", "cortex", "type", "model", "display_name", id,
                     "created_at", stamp);
}

json_t *catalog_list_json(const json_t *ids, int64_t created)
{
    json_t *data = json_array();
    size_t i;
    const json_t *id;
    json_array_foreach(ids, i, id)
    {
        if (json_is_string(id))
            json_array_append_new(data, catalog_model_json(json_string_value(id), created));
    }
    size_t n = json_array_size(data);
    json_t *list = json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", 0);
    json_object_set_new(list, "first_id",
                        n ? json_deep_copy(json_object_get(json_array_get(data, 0), "id"))
                          : json_null());
    json_object_set_new(list, "last_id",
                        n ? json_deep_copy(json_object_get(json_array_get(data, n - 1), "id"))
                          : json_null());
    return list;
}
