/*
 * tests/unit/neuron/test_chat_template.c — chat templates rendered by Cortex vs Python jinja2.
 *
 * The expected texts come from tests/chat_templates/render_reference.py, run here at test time:
 * it renders every real template in tests/chat_templates/templates/ with every conversation of
 * conversations.json through jinja2 configured as transformers does. Cortex must produce the
 * same bytes, or fail where jinja2 fails (with the same message when the template itself raised).
 * Skips (77) when python3 or jinja2 is missing; ops/test installs jinja2 from requirements.txt.
 */
#include "chat_template.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOW 1700000000

static char src_dir[4096];
static json_t *reference;     /* "<template>/<conversation>" -> {text} | {error, raised} */
static json_t *conversations; /* array: the corpus plus the script's random conversations */
static json_t *special_tokens;

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static json_t *load_json(const char *rel)
{
    char path[8192];
    json_error_t je;
    snprintf(path, sizeof path, "%s/%s", src_dir, rel);
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fprintf(stderr, "cannot load %s: %s\n", path, je.text);
    return j;
}

/* Renders one (template, conversation) pair with Cortex and checks it against the reference. */
static void check_pair(const char *model, const json_t *conv)
{
    char key[512], path[8192];
    const char *name = json_string_value(json_object_get(conv, "name"));
    snprintf(key, sizeof key, "%s/%s", model, name);
    json_t *expect = json_object_get(reference, key);
    ck_assert_msg(expect != NULL, "reference has no entry %s", key);
    snprintf(path, sizeof path, "%s/tests/chat_templates/templates/%s.jinja", src_dir, model);
    size_t tlen;
    char *text = read_file(path, &tlen);
    ck_assert_msg(text != NULL, "cannot read %s", path);

    struct jinja_options opt;
    jinja_options_init_hf(&opt);
    opt.now = NOW;
    struct chat_template *ct;
    struct jinja_error err;
    ck_assert_msg(chat_template_create(text, tlen, &opt, &ct, &err) == 0,
                  "%s: parse error %d:%d %s", key, err.line, err.column, err.message);
    json_t *tokens = json_object_get(special_tokens, model);
    struct chat_template_request req = {
            .messages = json_object_get(conv, "messages"),
            .tools = json_object_get(conv, "tools"),
            .add_generation_prompt = json_is_true(json_object_get(conv, "add_generation_prompt")),
            .bos_token = json_string_value(json_object_get(tokens, "bos_token")),
            .eos_token = json_string_value(json_object_get(tokens, "eos_token")),
            .extra = json_object_get(conv, "kwargs"),
    };
    char *out = NULL;
    size_t out_len = 0;
    int rc = chat_template_render(ct, &req, &out, &out_len, &err);
    json_t *want = json_object_get(expect, "text");
    if (want) {
        ck_assert_msg(rc == 0, "%s: Cortex failed (%d:%d %s) where jinja2 rendered", key, err.line,
                      err.column, err.message);
        if (out_len != json_string_length(want) ||
            memcmp(out, json_string_value(want), out_len) != 0) {
            size_t i = 0;
            const char *w = json_string_value(want);
            while (i < out_len && i < json_string_length(want) && out[i] == w[i])
                i++;
            ck_abort_msg("%s: output differs at byte %zu\n--- jinja2 ---\n%.200s\n--- cortex ---\n"
                         "%.200s",
                         key, i, w + (i > 40 ? i - 40 : 0), out + (i > 40 ? i - 40 : 0));
        }
    } else {
        ck_assert_msg(rc != 0, "%s: jinja2 failed (%s) but Cortex rendered", key,
                      json_string_value(json_object_get(expect, "error")));
        if (json_is_true(json_object_get(expect, "raised"))) {
            ck_assert_int_eq(err.kind, JINJA_ERROR_RAISED);
            ck_assert_str_eq(err.message, json_string_value(json_object_get(expect, "error")));
        } else {
            ck_assert_int_ne(err.kind, JINJA_ERROR_RAISED);
        }
    }
    free(out);
    free(text);
    chat_template_destroy(ct);
}

static const char *const models[] = {"smollm2",  "qwen2.5",  "qwen3",        "qwen3.5",
                                     "llama3.1", "llama3.2", "mistral-nemo", "hermes3"};

START_TEST(test_template_matches_jinja2)
{
    const char *model = models[_i];
    size_t i;
    json_t *conv;
    json_array_foreach(conversations, i, conv) check_pair(model, conv);
}
END_TEST

START_TEST(test_reference_covers_corpus)
{
    /* every template file is one of the models above, so none escapes the comparison */
    ck_assert_int_eq(json_object_size(reference),
                     sizeof models / sizeof *models * json_array_size(conversations));
}
END_TEST

START_TEST(test_normalize_messages)
{
    json_t *in = json_loads(
            "[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
            "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\": [1, 2]}\"}},"
            "{\"function\":{\"name\":\"g\",\"arguments\":\"not json\"}}]},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
            "{\"type\":\"text\",\"text\":\"b\"}]},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]",
            0, NULL);
    json_t *out = chat_template_normalize_messages(in);
    json_t *m0 = json_array_get(out, 0);
    ck_assert_str_eq(json_string_value(json_object_get(m0, "content")), "");
    json_t *args = json_object_get(
            json_object_get(json_array_get(json_object_get(m0, "tool_calls"), 0), "function"),
            "arguments");
    ck_assert(json_is_object(args));
    ck_assert_int_eq(json_array_size(json_object_get(args, "a")), 2);
    json_t *bad = json_object_get(
            json_object_get(json_array_get(json_object_get(m0, "tool_calls"), 1), "function"),
            "arguments");
    ck_assert_str_eq(json_string_value(bad), "not json");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(out, 1), "content")), "ab");
    ck_assert(json_is_array(json_object_get(json_array_get(out, 2), "content")));
    /* the input is untouched */
    ck_assert(json_is_null(json_object_get(json_array_get(in, 0), "content")));
    json_decref(in);
    json_decref(out);
}
END_TEST

START_TEST(test_raise_exception_reaches_caller)
{
    struct chat_template_request req = {.messages = json_array()};
    struct jinja_error err;
    char *out = (char *)"sentinel";
    int rc = chat_template_render_text(
            "{% if not messages %}{{ raise_exception('No messages provided.') }}{% endif %}", &req,
            &out, NULL, &err);
    ck_assert_int_eq(rc, -1);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(err.kind, JINJA_ERROR_RAISED);
    ck_assert_str_eq(err.message, "No messages provided.");
    json_decref((json_t *)req.messages);
}
END_TEST

START_TEST(test_context_variables)
{
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    json_t *extra = json_loads("{\"enable_thinking\": false}", 0, NULL);
    struct chat_template_request req = {
            .messages = msgs, .add_generation_prompt = true, .bos_token = "<s>", .extra = extra};
    struct jinja_error err;
    char *out;
    ck_assert_int_eq(
            chat_template_render_text("{{ bos_token }}|{{ eos_token is defined }}|{{ tools "
                                      "is none }}|{{ add_generation_prompt }}|{{ "
                                      "enable_thinking }}|{{ messages[0].content }}",
                                      &req, &out, NULL, &err),
            0);
    ck_assert_str_eq(out, "<s>|False|True|True|False|hi");
    free(out);
    json_decref(msgs);
    json_decref(extra);
}
END_TEST

START_TEST(test_find_template_in_metadata)
{
    json_t *gguf = json_loads("{\"tokenizer.chat_template\": \"G\"}", 0, NULL);
    json_t *hf = json_loads("{\"chat_template\": \"H\"}", 0, NULL);
    json_t *named = json_loads("{\"chat_template\": [{\"name\": \"rag\", \"template\": \"R\"}, "
                               "{\"name\": \"tool_use\", \"template\": \"T\"}, "
                               "{\"name\": \"default\", \"template\": \"D\"}]}",
                               0, NULL);
    json_t *none = json_loads("{\"general.architecture\": \"llama\"}", 0, NULL);
    ck_assert_str_eq(chat_template_find(gguf, false), "G");
    ck_assert_str_eq(chat_template_find(hf, true), "H");
    ck_assert_str_eq(chat_template_find(named, false), "D");
    ck_assert_str_eq(chat_template_find(named, true), "T");
    ck_assert_ptr_null(chat_template_find(none, false));
    ck_assert_ptr_null(chat_template_find(NULL, false));
    json_decref(gguf);
    json_decref(hf);
    json_decref(named);
    json_decref(none);
}
END_TEST

int main(void)
{
    const char *src = getenv("CORTEX_SOURCE_DIR");
    snprintf(src_dir, sizeof src_dir, "%s", src ? src : ".");
    char out_path[] = "/tmp/cortex-chat-ref-XXXXXX";
    int fd = mkstemp(out_path);
    if (fd < 0)
        return 1;
    close(fd);
    char cmd[16384];
    snprintf(cmd, sizeof cmd,
             "python3 '%s/tests/chat_templates/render_reference.py' --now %d --out '%s'", src_dir,
             NOW, out_path);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) == 127 || WEXITSTATUS(st) == 77) {
        fprintf(stderr, "python3 with jinja2 is not available: skipping\n");
        unlink(out_path);
        return 77;
    }
    if (WEXITSTATUS(st) != 0) {
        fprintf(stderr, "render_reference.py failed\n");
        unlink(out_path);
        return 1;
    }
    json_error_t je;
    json_t *ref_file = json_load_file(out_path, 0, &je);
    unlink(out_path);
    json_t *corpus = load_json("tests/chat_templates/conversations.json");
    special_tokens = load_json("tests/chat_templates/special_tokens.json");
    if (!ref_file || !corpus || !special_tokens)
        return 1;
    reference = json_incref(json_object_get(ref_file, "results"));
    conversations = json_copy(json_object_get(corpus, "conversations"));
    json_array_extend(conversations, json_object_get(ref_file, "random_conversations"));
    json_decref(ref_file);
    if (!reference || json_array_size(conversations) < 2)
        return 1;

    Suite *s = suite_create("chat_template");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_template_matches_jinja2, 0, sizeof models / sizeof *models);
    tcase_add_test(tc, test_reference_covers_corpus);
    tcase_add_test(tc, test_normalize_messages);
    tcase_add_test(tc, test_raise_exception_reaches_caller);
    tcase_add_test(tc, test_context_variables);
    tcase_add_test(tc, test_find_template_in_metadata);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    json_decref(reference);
    json_decref(conversations);
    json_decref(corpus);
    json_decref(special_tokens);
    return failed ? 1 : 0;
}
