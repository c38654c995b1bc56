/*
 * tests/unit/neuron/test_tokenizer.c — the tokenizer (neuron/tokenizer.h) and UTF-8 helpers
 * (neuron/utf8.h).
 *
 * Three parts:
 *   - UTF-8 and NFC against facts of the Unicode standard;
 *   - small hand-made tokenizer.json files whose right answers follow from the BPE rules;
 *   - the real tokenizers (SmolLM2 from its GGUF, Qwen3.5 from its tiktoken files, and a
 *     sentencepiece-style BPE with byte fallback in two layouts) against the token ids that Hugging Face
 *     `tokenizers` produces for tests/tokenizer/corpus.txt. Those expectations are written by
 *     tests/tokenizer/reference.py, run from here; when it cannot run (no Python packages, no
 *     network for the wheels) this part is skipped and the program exits 77 after the others.
 * Encoding speed on the corpus is printed (not asserted).
 */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "tokenizer.h"
#include "utf8.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

/* GPT-2's byte-to-unicode spelling of one byte, as UTF-8 (written from the published table:
 * printable Latin-1 bytes are themselves, the 68 others count up from U+0100). */
static void gpt2_spell_byte(unsigned b, char out[4])
{
    unsigned cp = b, extra = 0;
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;

    if (!printable) {
        for (unsigned i = 0; i < b; i++)
            if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174))
                extra++;
        cp = 256 + extra;
    }
    memset(out, 0, 4);
    utf8_encode(cp, out);
}

/* A byte-level tokenizer.json with the 256 byte tokens (ids 0..255), the given extra tokens
 * (ids 256...), merges and added tokens. */
static struct tokenizer *tiny_tokenizer(const char *const *extra, const char *const *merges,
                                        const char *added_json, const char *pre_json)
{
    json_t *vocab = json_object(), *m = json_array();
    char *text, err[256] = "";
    struct tokenizer *tok = NULL;
    int id = 0;

    for (unsigned b = 0; b < 256; b++) {
        char s[5] = {0};
        gpt2_spell_byte(b, s);
        json_object_set_new(vocab, s, json_integer(id++));
    }
    for (; extra && *extra; extra++)
        json_object_set_new(vocab, *extra, json_integer(id++));
    for (; merges && *merges; merges++)
        json_array_append_new(m, json_string(*merges));
    json_t *model = json_pack("{s:s, s:o, s:o}", "type", "BPE", "vocab", vocab, "merges", m);
    json_error_t jerr;
    json_t *added = json_loads(added_json ? added_json : "[]", 0, &jerr);
    json_t *pre = json_loads(pre_json ? pre_json : "{\"type\":\"ByteLevel\",\"use_regex\":true}", 0,
                             &jerr);
    ck_assert_ptr_nonnull(added);
    ck_assert_ptr_nonnull(pre);
    json_t *root = json_pack("{s:o, s:o, s:o, s:{s:s}}", "model", model, "added_tokens", added,
                             "pre_tokenizer", pre, "decoder", "type", "ByteLevel");
    text = json_dumps(root, 0);
    json_decref(root);
    if (tokenizer_create_from_hf_json(text, strlen(text), NULL, &tok, err, sizeof err) < 0)
        ck_abort_msg("tiny tokenizer: %s", err);
    free(text);
    return tok;
}

/* Encodes and returns the ids as a string like "1 2 3" for readable assertions. */
static char *encode_str(const struct tokenizer *tok, const char *text, unsigned flags)
{
    struct tokenizer_ids ids = {0};
    char err[256] = "", *out = malloc(16 * 1024);
    size_t o = 0;

    if (tokenizer_encode(tok, text, strlen(text), flags, &ids, err, sizeof err) < 0)
        ck_abort_msg("encode failed: %s", err);
    out[0] = '\0';
    for (size_t i = 0; i < ids.n; i++)
        o += (size_t)snprintf(out + o, 16 * 1024 - o, i ? " %d" : "%d", ids.v[i]);
    free(ids.v);
    return out;
}

#define ck_assert_encodes(tok, text, flags, want)                                                  \
    do {                                                                                           \
        char *got_ = encode_str(tok, text, flags);                                                 \
        ck_assert_msg(strcmp(got_, want) == 0, "encode(\"%s\") = [%s], want [%s]", text, got_,     \
                      want);                                                                       \
        free(got_);                                                                                \
    } while (0)

/* ---- UTF-8 and NFC -------------------------------------------------------------------------- */

START_TEST(test_utf8_sequence)
{
    uint32_t cp = 0;
#define SEQ(s) utf8_sequence((const unsigned char *)(s), sizeof(s) - 1, &cp)
    ck_assert_int_eq(SEQ("A"), 1);
    ck_assert_uint_eq(cp, 'A');
    ck_assert_int_eq(SEQ("\xC3\xA9"), 2);
    ck_assert_uint_eq(cp, 0xE9);
    ck_assert_int_eq(SEQ("\xE2\x82\xAC"), 3);
    ck_assert_uint_eq(cp, 0x20AC);
    ck_assert_int_eq(SEQ("\xF0\x9F\x98\x80"), 4);
    ck_assert_uint_eq(cp, 0x1F600);
    /* unfinished but valid so far */
    ck_assert_int_eq(SEQ("\xF0\x9F\x98"), 0);
    ck_assert_int_eq(SEQ("\xE2"), 0);
    /* maximal invalid subparts */
    ck_assert_int_eq(SEQ("\x80"), -1);
    ck_assert_int_eq(SEQ("\xC0\x80"), -1);         /* C0 is never a lead byte */
    ck_assert_int_eq(SEQ("\xE0\x80\x80"), -1);     /* overlong */
    ck_assert_int_eq(SEQ("\xED\xA0\x80"), -1);     /* surrogate */
    ck_assert_int_eq(SEQ("\xF4\x90\x80\x80"), -1); /* above U+10FFFF */
    ck_assert_int_eq(SEQ("\xF0\x9F\x98\x41"), -3); /* three bytes, then not a continuation */
    ck_assert_int_eq(SEQ("\xFF"), -1);
#undef SEQ
    ck_assert(utf8_valid("h\xC3\xA9llo \xF0\x9F\x98\x80", 11));
    ck_assert(!utf8_valid("h\xC3llo", 5));
    ck_assert(!utf8_valid("\xF0\x9F\x98", 3));
    ck_assert_uint_eq(utf8_complete_prefix("ab\xF0\x9F\x98", 5), 2);
    ck_assert_uint_eq(utf8_complete_prefix("ab\xF0\x9F\x98\x80", 6), 6);
    ck_assert_uint_eq(utf8_complete_prefix("ab\x80", 3), 3); /* never becomes valid */
}
END_TEST

START_TEST(test_utf8_lossy)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;

    utf8_append_lossy(&buf, &len, &cap,
                      "a\xF0\x9F\x98"
                      "b",
                      5);
    ck_assert_str_eq(buf, "a\xEF\xBF\xBD"
                          "b");
    len = 0;
    utf8_append_lossy(&buf, &len, &cap, "\xC3\x28\xE2\x82", 4);
    ck_assert_str_eq(buf, "\xEF\xBF\xBD(\xEF\xBF\xBD");
    free(buf);
}
END_TEST

static void check_nfc(const char *in, const char *want)
{
    size_t n;
    char *got = utf8_nfc(in, strlen(in), &n);
    ck_assert_msg(strcmp(got, want) == 0 && n == strlen(want), "NFC(%s) = %s, want %s", in, got,
                  want);
    free(got);
}

START_TEST(test_nfc)
{
    check_nfc("plain ascii", "plain ascii");
    check_nfc("cafe\xCC\x81", "caf\xC3\xA9");       /* e + acute -> é */
    check_nfc("A\xCC\x8A", "\xC3\x85");             /* A + ring -> Å */
    check_nfc("\xE2\x84\xAB", "\xC3\x85");          /* ANGSTROM SIGN -> Å (singleton) */
    check_nfc("\xE2\x84\xA6", "\xCE\xA9");          /* OHM SIGN -> Ω */
    check_nfc("a\xCC\xA3\xCC\x82", "\xE1\xBA\xAD"); /* a + dot below + circumflex -> ậ */
    check_nfc("a\xCC\x82\xCC\xA3", "\xE1\xBA\xAD"); /* same after canonical reordering */
    check_nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81"); /* jamo -> 각 */
    check_nfc("\xEA\xB0\x80\xE1\x86\xA8", "\xEA\xB0\x81");             /* 가 + ᆨ -> 각 */
    check_nfc("\xEF\xAC\x81", "\xEF\xAC\x81");         /* ﬁ: compatibility only, unchanged */
    check_nfc("\xCD\x84", "\xCC\x88\xCC\x81");         /* U+0344 -> U+0308 U+0301 */
    check_nfc("\xC3\xA9\xCC\x81", "\xC3\xA9\xCC\x81"); /* é + acute: nothing left to compose */
    /* only the stretches around the marks change; the rest is copied */
    check_nfc("ab e\xCC\x81 cd A\xCC\x8A\xCC\x81!", "ab \xC3\xA9 cd \xC7\xBA!");
    check_nfc("x \xEA\xB0\x80\xE1\x86\xA8 y", "x \xEA\xB0\x81 y");
    ck_assert(utf8_is_nfc_quick("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC", 12));
    ck_assert(!utf8_is_nfc_quick("cafe\xCC\x81", 6));
}
END_TEST

/* ---- hand-made tokenizers ------------------------------------------------------------------- */

START_TEST(test_merge_order)
{
    /* bytes: a=97 b=98 c=99; tokens 256 "ab", 257 "bc", 258 "abc", 259 "aa" */
    static const char *const extra[] = {"ab", "bc", "abc", "aa", NULL};
    static const char *const merges[] = {"b c", "a b", "ab c", "a a", NULL};
    struct tokenizer *tok = tiny_tokenizer(extra, merges, NULL, NULL);

    ck_assert_int_eq(tokenizer_vocab_size(tok), 260);
    /* "b c" ranks before "a b": abc -> a bc; then nothing merges a+bc */
    ck_assert_encodes(tok, "abc", 0, "97 257");
    ck_assert_encodes(tok, "ab", 0, "256");
    /* ties go to the leftmost pair: aaa -> aa a */
    ck_assert_encodes(tok, "aaa", 0, "259 97");
    ck_assert_encodes(tok, "aaaa", 0, "259 259");
    /* the split pattern keeps words apart: " ab" is one word, ' ' = byte 32 spelled Ġ */
    ck_assert_encodes(tok, "ab ab", 0, "256 32 256");
    ck_assert_encodes(tok, "", 0, "");
    tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_added_tokens)
{
    static const char *const extra[] = {"ab", NULL};
    static const char *const merges[] = {"a b", NULL};
    const char *added = "[{\"id\":300,\"content\":\"<|x|>\",\"special\":true},"
                        "{\"id\":301,\"content\":\"<|x|>y\",\"special\":true},"
                        "{\"id\":302,\"content\":\"[U]\",\"special\":false,\"lstrip\":true,"
                        "\"rstrip\":true}]";
    struct tokenizer *tok = tiny_tokenizer(extra, merges, added, NULL);

    ck_assert_int_eq(tokenizer_vocab_size(tok), 303);
    /* leftmost-longest: "<|x|>y" wins over "<|x|>" */
    ck_assert_encodes(tok, "ab<|x|>y", TOKENIZER_ENCODE_SPECIAL, "256 301");
    ck_assert_encodes(tok, "<|x|><|x|>", TOKENIZER_ENCODE_SPECIAL, "300 300");
    /* without the flag special tokens are text: < | x | > are bytes 60 124 120 124 62 */
    ck_assert_encodes(tok, "<|x|>", 0, "60 124 120 124 62");
    /* non-special added tokens always match; lstrip/rstrip swallow the spaces around them */
    ck_assert_encodes(tok, "ab  [U]  ab", 0, "256 302 256");
    ck_assert(tokenizer_is_special(tok, 300));
    ck_assert(!tokenizer_is_special(tok, 302));
    ck_assert(!tokenizer_is_special(tok, 256));
    ck_assert_int_eq(tokenizer_token_id(tok, "<|x|>", 5), 300);
    ck_assert_int_eq(tokenizer_token_id(tok, "ab", 2), 256);
    ck_assert_int_eq(tokenizer_token_id(tok, "zz", 2), -1);

    char *text, err[128];
    size_t len;
    int32_t ids[] = {256, 300, 97};
    ck_assert_int_eq(tokenizer_decode(tok, ids, 3, 0, &text, &len, err, sizeof err), 0);
    ck_assert_str_eq(text, "ab<|x|>a");
    free(text);
    ck_assert_int_eq(tokenizer_decode(tok, ids, 3, TOKENIZER_DECODE_SKIP_SPECIAL, &text, &len, err,
                                      sizeof err),
                     0);
    ck_assert_str_eq(text, "aba");
    free(text);
    int32_t bad[] = {97, 303};
    ck_assert_int_eq(tokenizer_decode(tok, bad, 2, 0, &text, &len, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "303"));
    tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_config_special_ids)
{
    /* bos/eos named by text, by {"content": ...} and by number; extra eos ids end generation */
    const char *json = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]},"
                       "\"added_tokens\":[{\"id\":2,\"content\":\"<s>\",\"special\":true},"
                       "{\"id\":3,\"content\":\"</s>\",\"special\":true},"
                       "{\"id\":4,\"content\":\"<eot>\",\"special\":true}]}";
    json_error_t jerr;
    json_t *config = json_loads("{\"bos_token\":{\"content\":\"<s>\"},\"eos_token\":\"</s>\","
                                "\"eos_token_id\":[3,4],\"add_bos_token\":true}",
                                0, &jerr);
    struct tokenizer *tok;
    char err[256];

    ck_assert_ptr_nonnull(config);
    ck_assert_int_eq(
            tokenizer_create_from_hf_json(json, strlen(json), config, &tok, err, sizeof err), 0);
    ck_assert_int_eq(tokenizer_bos_id(tok), 2);
    ck_assert_int_eq(tokenizer_eos_id(tok), 3);
    ck_assert(tokenizer_adds_bos(tok));
    ck_assert(tokenizer_is_eog(tok, 3));
    ck_assert(tokenizer_is_eog(tok, 4));
    ck_assert(!tokenizer_is_eog(tok, 2));
    /* no pre-tokenizer and no byte level: characters are the symbols */
    ck_assert_encodes(tok, "ab", TOKENIZER_ENCODE_ADD_BOS, "2 0 1");
    ck_assert_encodes(tok, "ab", 0, "0 1");
    tokenizer_destroy(tok);
    json_decref(config);
}
END_TEST

START_TEST(test_split_behaviours)
{
    /* Split on "-" with each behaviour; no merges, so the ids are the bytes and the words show
     * up only through ignore-free BPE: use merges of "-" with letters to see the boundaries. */
    static const char *const extra[] = {"a-", "-b", NULL};
    static const char *const merges[] = {"a -", "- b", NULL};
    struct {
        const char *behavior, *want;
    } cases[] = {
            {"Isolated", "97 45 98"},         /* a | - | b */
            {"Removed", "97 98"},             /* a | b */
            {"MergedWithPrevious", "256 98"}, /* a- | b */
            {"MergedWithNext", "97 257"},     /* a | -b */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char pre[256];
        snprintf(pre, sizeof pre,
                 "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                 "{\"String\":\"-\"},\"behavior\":\"%s\",\"invert\":false},"
                 "{\"type\":\"ByteLevel\",\"use_regex\":false}]}",
                 cases[i].behavior);
        struct tokenizer *tok = tiny_tokenizer(extra, merges, NULL, pre);
        ck_assert_encodes(tok, "a-b", 0, cases[i].want);
        tokenizer_destroy(tok);
    }
}
END_TEST

START_TEST(test_stream_holds_partial_characters)
{
    /* No merges: "é😀" is six byte tokens, split inside both characters. */
    struct tokenizer *tok = tiny_tokenizer(NULL, NULL, NULL, NULL);
    struct tokenizer_stream *st = tokenizer_stream_create(tok, 0);
    struct tokenizer_ids ids = {0};
    const char *text = "\xC3\xA9\xF0\x9F\x98\x80!", *piece;
    const char *want[] = {"", "\xC3\xA9", "", "", "", "\xF0\x9F\x98\x80", "!"};
    char err[128];
    size_t len;

    ck_assert_int_eq(tokenizer_encode(tok, text, strlen(text), 0, &ids, err, sizeof err), 0);
    ck_assert_uint_eq(ids.n, 7);
    for (size_t i = 0; i < ids.n; i++) {
        ck_assert_int_eq(tokenizer_stream_push(st, ids.v[i], &piece, &len), 0);
        ck_assert_uint_eq(len, strlen(want[i]));
        ck_assert(memcmp(piece, want[i], len) == 0);
    }
    tokenizer_stream_flush(st, &piece, &len);
    ck_assert_uint_eq(len, 0);
    /* an unfinished character at the end comes out as U+FFFD on flush */
    ck_assert_int_eq(tokenizer_stream_push(st, ids.v[2], &piece, &len), 0);
    ck_assert_int_eq(tokenizer_stream_push(st, ids.v[3], &piece, &len), 0);
    ck_assert_uint_eq(len, 0);
    tokenizer_stream_flush(st, &piece, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert(memcmp(piece, UTF8_REPLACEMENT, 3) == 0);
    /* a held lead byte followed by a new character: replaced, the new one emitted */
    ck_assert_int_eq(tokenizer_stream_push(st, ids.v[2], &piece, &len), 0);
    ck_assert_int_eq(tokenizer_stream_push(st, ids.v[6], &piece, &len), 0);
    ck_assert_uint_eq(len, 4);
    ck_assert(memcmp(piece, UTF8_REPLACEMENT "!", 4) == 0);
    ck_assert_int_eq(tokenizer_stream_push(st, 999, &piece, &len), -1);
    tokenizer_stream_destroy(st);
    free(ids.v);
    tokenizer_destroy(tok);
}
END_TEST

START_TEST(test_bad_input)
{
    struct tokenizer *tok = NULL;
    char err[256];
    static const struct {
        const char *json, *needle;
    } cases[] = {
            {"{not json", "not valid JSON"},
            {"{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "WordPiece"},
            {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
             "\"normalizer\":{\"type\":\"NFKC\"}}",
             "NFKC"},
            {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
             "\"pre_tokenizer\":{\"type\":\"Whitespace\"}}",
             "Whitespace"},
            {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
             "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
             "\"behavior\":\"Isolated\"}}",
             "does not compile"},
            {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-4},\"merges\":[]}}", "no valid id"},
            {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"ab\"]}}",
             "left right"},
            {"{\"model\":{\"type\":\"BPE\",\"vocab\":{}}}", "no merges"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        int rc = tokenizer_create_from_hf_json(cases[i].json, strlen(cases[i].json), NULL, &tok,
                                               err, sizeof err);
        ck_assert_int_eq(rc, -1);
        ck_assert_ptr_null(tok);
        ck_assert_msg(strstr(err, cases[i].needle) && strstr(err, "tokenizer.json"),
                      "case %zu: message \"%s\" lacks \"%s\"", i, err, cases[i].needle);
    }

    json_t *meta = json_pack("{s:s}", "tokenizer.ggml.model", "llama");
    ck_assert_int_eq(tokenizer_create_from_gguf(meta, &tok, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "'llama'"));
    json_decref(meta);
    meta = json_pack("{s:s, s:s, s:[s], s:[]}", "tokenizer.ggml.model", "gpt2",
                     "tokenizer.ggml.pre", "no-such-pre", "tokenizer.ggml.tokens", "a",
                     "tokenizer.ggml.merges");
    ck_assert_int_eq(tokenizer_create_from_gguf(meta, &tok, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no-such-pre"));
    json_decref(meta);

    tok = tiny_tokenizer(NULL, NULL, NULL, NULL);
    struct tokenizer_ids ids = {0};
    ck_assert_int_eq(tokenizer_encode(tok, "ok\xC3", 3, 0, &ids, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "UTF-8"));
    ck_assert_uint_eq(ids.n, 0);
    free(ids.v);
    tokenizer_destroy(tok);
    tokenizer_destroy(NULL);
    tokenizer_stream_destroy(NULL);
}
END_TEST

/* ---- real tokenizers against Hugging Face tokenizers ---------------------------------------- */

static json_t *manifest;    /* from reference.py; NULL when skipped */
static const json_t *cases; /* array of strings */
struct loaded {
    const char *label;    /* "smollm2 (GGUF)" */
    const json_t *expect; /* the manifest entry */
    struct tokenizer *tok;
};
static struct loaded loaded[8];
static int n_loaded;

static void load_reference(void)
{
    const char *src = getenv("CORTEX_SOURCE_DIR");
    char cmd[4096], line[4096];
    FILE *p;
    int status;

    if (src == NULL)
        src = ".";
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/tokenizer/reference.py'", src);
    p = popen(cmd, "r");
    if (p == NULL || fgets(line, sizeof line, p) == NULL) {
        if (p)
            pclose(p);
        fprintf(stderr,
                "test_tokenizer: reference.py gave no manifest; skipping reference tests\n");
        return;
    }
    status = pclose(p);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "test_tokenizer: reference.py exited %d; skipping reference tests\n",
                WEXITSTATUS(status));
        return;
    }
    line[strcspn(line, "\n")] = '\0';
    json_error_t jerr;
    manifest = json_load_file(line, 0, &jerr);
    if (manifest == NULL) {
        fprintf(stderr, "test_tokenizer: %s: %s\n", line, jerr.text);
        exit(1);
    }
    cases = json_object_get(manifest, "cases");

    size_t i;
    const json_t *e;
    json_array_foreach(json_object_get(manifest, "tokenizers"), i, e)
    {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *hf = json_string_value(json_object_get(e, "hf_json"));
        const char *gguf = json_string_value(json_object_get(e, "gguf_meta"));
        char err[512];
        size_t len;
        char *text = read_file(hf, &len);
        struct loaded *l = &loaded[n_loaded++];
        l->label = strcat(strcpy(malloc(strlen(name) + 20), name), " (tokenizer.json)");
        l->expect = e;
        if (text == NULL ||
            tokenizer_create_from_hf_json(text, len, NULL, &l->tok, err, sizeof err) < 0) {
            fprintf(stderr, "test_tokenizer: %s: %s\n", hf, text ? err : "unreadable");
            exit(1);
        }
        free(text);
        if (gguf) {
            json_t *meta = json_load_file(gguf, 0, &jerr);
            l = &loaded[n_loaded++];
            l->label = strcat(strcpy(malloc(strlen(name) + 20), name), " (GGUF)");
            l->expect = e;
            if (meta == NULL || tokenizer_create_from_gguf(meta, &l->tok, err, sizeof err) < 0) {
                fprintf(stderr, "test_tokenizer: %s: %s\n", gguf, meta ? err : jerr.text);
                exit(1);
            }
            json_decref(meta);
        }
    }
}

static void ids_to_text(const int32_t *v, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && o + 16 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, i ? " %d" : "%d", v[i]);
}

/* Compares the ids of every case with the expectation in field key; returns the mismatches,
 * describing the first few on stderr. */
static int compare_all(const struct loaded *l, const char *key, unsigned flags, size_t limit)
{
    const json_t *want_all = json_object_get(l->expect, key);
    int mismatches = 0;

    for (size_t c = 0; c < json_array_size(want_all) && c < limit; c++) {
        const json_t *jt = json_array_get(cases, c), *want = json_array_get(want_all, c);
        struct tokenizer_ids ids = {0};
        char err[256];
        ck_assert_int_eq(tokenizer_encode(l->tok, json_string_value(jt), json_string_length(jt),
                                          flags, &ids, err, sizeof err),
                         0);
        bool same = ids.n == json_array_size(want);
        for (size_t k = 0; same && k < ids.n; k++)
            same = ids.v[k] == json_integer_value(json_array_get(want, k));
        if (!same && ++mismatches <= 3) {
            char got_s[2048], want_s[2048];
            int32_t w[512];
            size_t nw = json_array_size(want) < 512 ? json_array_size(want) : 512;
            for (size_t k = 0; k < nw; k++)
                w[k] = (int32_t)json_integer_value(json_array_get(want, k));
            ids_to_text(ids.v, ids.n, got_s, sizeof got_s);
            ids_to_text(w, nw, want_s, sizeof want_s);
            fprintf(stderr, "%s, %s, case %zu \"%.80s\":\n  cortex [%s]\n  hf     [%s]\n", l->label,
                    key, c, json_string_value(jt), got_s, want_s);
        }
        free(ids.v);
    }
    return mismatches;
}

START_TEST(test_reference_ids)
{
    const struct loaded *l = &loaded[_i];
    int bad = compare_all(l, "special", TOKENIZER_ENCODE_SPECIAL, SIZE_MAX);
    ck_assert_msg(bad == 0, "%s: %d cases differ from HF tokenizers (special tokens on)", l->label,
                  bad);
    bad = compare_all(l, "plain", 0, SIZE_MAX);
    ck_assert_msg(bad == 0, "%s: %d cases differ from HF tokenizers (special tokens as text)",
                  l->label, bad);
    bad = compare_all(l, "with_bos", TOKENIZER_ENCODE_SPECIAL | TOKENIZER_ENCODE_ADD_BOS, SIZE_MAX);
    ck_assert_msg(bad == 0, "%s: %d cases differ from HF tokenizers with BOS", l->label, bad);
}
END_TEST

START_TEST(test_reference_decode)
{
    const struct loaded *l = &loaded[_i];
    const json_t *decoded = json_object_get(l->expect, "decoded");
    size_t split_chars = 0;

    for (size_t c = 0; c < json_array_size(cases); c++) {
        const json_t *jt = json_array_get(cases, c);
        const char *want = json_string_value(json_array_get(decoded, c));
        struct tokenizer_ids ids = {0};
        char err[256], *text;
        size_t len;
        ck_assert_int_eq(tokenizer_encode(l->tok, json_string_value(jt), json_string_length(jt),
                                          TOKENIZER_ENCODE_SPECIAL, &ids, err, sizeof err),
                         0);
        ck_assert_int_eq(tokenizer_decode(l->tok, ids.v, ids.n, 0, &text, &len, err, sizeof err),
                         0);
        /* HF's decoding of its own ids is the input itself, or its NFC form for Qwen. */
        ck_assert_msg(strcmp(text, want) == 0, "%s: decode(encode(case %zu)) = \"%.80s\"", l->label,
                      c, text);
        ck_assert_uint_eq(len, strlen(want));

        /* Streaming gives the same text, in pieces that are each valid UTF-8. */
        struct tokenizer_stream *st = tokenizer_stream_create(l->tok, 0);
        char *joined = malloc(len + 1);
        size_t jl = 0;
        for (size_t k = 0; k < ids.n; k++) {
            const char *piece;
            size_t pl, tl;
            const char *tb = tokenizer_token_bytes(l->tok, ids.v[k], &tl);
            if (!utf8_valid(tb, tl))
                split_chars++;
            ck_assert_int_eq(tokenizer_stream_push(st, ids.v[k], &piece, &pl), 0);
            ck_assert_msg(utf8_valid(piece, pl), "%s: stream emitted invalid UTF-8", l->label);
            ck_assert(jl + pl <= len);
            memcpy(joined + jl, piece, pl);
            jl += pl;
        }
        const char *piece;
        size_t pl;
        tokenizer_stream_flush(st, &piece, &pl);
        ck_assert_uint_eq(pl, 0);
        ck_assert(jl == len && memcmp(joined, text, len) == 0);
        tokenizer_stream_destroy(st);
        free(joined);
        free(text);
        free(ids.v);
    }
    /* The corpus must really split characters across tokens, or the stream test proves little. */
    ck_assert_msg(split_chars > 0, "%s: no token ends inside a character", l->label);
}
END_TEST

START_TEST(test_reference_specials)
{
    const struct loaded *l = &loaded[_i];
    const char *name = json_string_value(json_object_get(l->expect, "name"));
    int32_t im_end = tokenizer_token_id(l->tok, "<|im_end|>", 10);
    int32_t eot = tokenizer_token_id(l->tok, "<|endoftext|>", 13);
    size_t n_eog;
    const int32_t *eog = tokenizer_eog_ids(l->tok, &n_eog);

    if (strcmp(name, "bytefb") == 0 || strcmp(name, "metaspace") == 0) {
        ck_assert_int_eq(tokenizer_bos_id(l->tok), 1);
        ck_assert(tokenizer_adds_bos(l->tok));
        ck_assert(tokenizer_is_special(l->tok, 2));
        return;
    }
    ck_assert_int_ge(im_end, 0);
    ck_assert_int_ge(eot, 0);
    ck_assert(tokenizer_is_special(l->tok, im_end));
    ck_assert(tokenizer_is_eog(l->tok, im_end));
    ck_assert(tokenizer_is_eog(l->tok, eot));
    ck_assert(!tokenizer_is_eog(l->tok, tokenizer_token_id(l->tok, "<|im_start|>", 12)));
    ck_assert_uint_ge(n_eog, 2);
    for (size_t i = 1; i < n_eog; i++)
        ck_assert_int_lt(eog[i - 1], eog[i]);
    ck_assert(!tokenizer_adds_bos(l->tok));
    if (strstr(l->label, "GGUF")) {
        ck_assert_int_eq(tokenizer_eos_id(l->tok), im_end);
        if (strcmp(name, "smollm2") == 0)
            ck_assert_int_eq(tokenizer_bos_id(l->tok), 1);
    }
    size_t tl;
    const char *t = tokenizer_token_text(l->tok, im_end, &tl);
    ck_assert(tl == 10 && memcmp(t, "<|im_end|>", 10) == 0);
    ck_assert_ptr_null(tokenizer_token_text(l->tok, tokenizer_vocab_size(l->tok), &tl));
}
END_TEST

struct thread_arg {
    const struct loaded *l;
    int mismatches;
};

static void *encode_thread(void *p)
{
    struct thread_arg *a = p;
    for (int r = 0; r < 3; r++)
        a->mismatches += compare_all(a->l, "special", TOKENIZER_ENCODE_SPECIAL, SIZE_MAX);
    return NULL;
}

/* One tokenizer shared by several threads (the word cache is the shared, locked part). */
START_TEST(test_reference_threads)
{
    pthread_t th[4];
    struct thread_arg args[4];

    for (int t = 0; t < 4; t++) {
        args[t] = (struct thread_arg){.l = &loaded[_i]};
        ck_assert_int_eq(pthread_create(&th[t], NULL, encode_thread, &args[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        ck_assert_int_eq(args[t].mismatches, 0);
    }
}
END_TEST

/* Encodes every case once; returns seconds and adds the token count to *tokens. */
static double encode_corpus(const struct tokenizer *tok, size_t *tokens, size_t *bytes)
{
    struct timespec t0, t1;
    struct tokenizer_ids ids = {0};
    char err[128];

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t c = 0; c < json_array_size(cases); c++) {
        const json_t *jt = json_array_get(cases, c);
        ids.n = 0;
        if (tokenizer_encode(tok, json_string_value(jt), json_string_length(jt),
                             TOKENIZER_ENCODE_SPECIAL, &ids, err, sizeof err) == 0)
            *tokens += ids.n;
        *bytes += json_string_length(jt);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(ids.v);
    return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}

/* Encoding speed over the corpus, for the record: the first pass starts with an empty word cache
 * (the tests ran in forked children), the later ones show the steady state. */
static void report_speed(void)
{
    for (int i = 0; i < n_loaded; i++) {
        const struct loaded *l = &loaded[i];
        size_t cold_tokens = 0, tokens = 0, bytes = 0;
        double cold = encode_corpus(l->tok, &cold_tokens, &bytes), warm = 0;
        for (int r = 0; r < 20; r++)
            warm += encode_corpus(l->tok, &tokens, &bytes);
        printf("encode %-26s cold %8.0f tokens/s, warm %8.0f tokens/s (%zu tokens a pass)\n",
               l->label, (double)cold_tokens / cold, (double)tokens / warm, cold_tokens);
    }
}

int main(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("utf8");
    tcase_add_test(tc, test_utf8_sequence);
    tcase_add_test(tc, test_utf8_lossy);
    tcase_add_test(tc, test_nfc);
    suite_add_tcase(s, tc);

    tc = tcase_create("small");
    tcase_add_test(tc, test_merge_order);
    tcase_add_test(tc, test_added_tokens);
    tcase_add_test(tc, test_config_special_ids);
    tcase_add_test(tc, test_split_behaviours);
    tcase_add_test(tc, test_stream_holds_partial_characters);
    tcase_add_test(tc, test_bad_input);
    suite_add_tcase(s, tc);

    load_reference();
    if (n_loaded) {
        tc = tcase_create("reference");
        tcase_set_timeout(tc, 300);
        tcase_add_loop_test(tc, test_reference_ids, 0, n_loaded);
        tcase_add_loop_test(tc, test_reference_decode, 0, n_loaded);
        tcase_add_loop_test(tc, test_reference_specials, 0, n_loaded);
        tcase_add_loop_test(tc, test_reference_threads, 0, n_loaded);
        suite_add_tcase(s, tc);
    }

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (failed == 0 && n_loaded)
        report_speed();
    for (int i = 0; i < n_loaded; i++) {
        tokenizer_destroy(loaded[i].tok);
        free((char *)loaded[i].label);
    }
    json_decref(manifest);
    if (failed)
        return 1;
    return n_loaded ? 0 : 77;
}
