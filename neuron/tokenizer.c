/*
 * neuron/tokenizer.c — BPE tokenizers built from tokenizer.json or GGUF metadata (see tokenizer.h).
 *
 * Encoding runs in four stages, the same as Hugging Face tokenizers:
 *   1. added tokens are cut out of the text first (leftmost-longest match);
 *   2. each stretch of text between them is normalised (NFC, Prepend, Replace);
 *   3. the pre-tokenizer steps split it into words with PCRE2 patterns, each step splitting the
 *      pieces of the one before;
 *   4. every word becomes byte (or character) symbols that are merged pair by pair, always the
 *      pair of lowest merge rank first (leftmost on ties), using a heap over a linked list of
 *      symbols so that long words stay O(n log n). Results for short words are kept in a
 *      direct-mapped cache, since natural text repeats its words.
 * Byte-level vocabularies spell each byte as one printable character (GPT-2's bytes_to_unicode:
 * printable Latin-1 bytes stand for themselves, the other 68 bytes become U+0100..U+0143), so a
 * word's initial symbols are simply the 256 byte tokens and no text mapping is needed on the hot
 * path. Every token's decoded bytes are computed once at load time.
 */
#include "tokenizer.h"

#include "utf8.h"
#include "xalloc.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_STEPS       8     /* pre-tokenizer steps */
#define TOK_MAX_NORM        8     /* normalizer steps */
#define TOK_CACHE_SLOTS     16384 /* direct-mapped word cache (power of two) */
#define TOK_CACHE_MAX_BYTES 64    /* longer words are not cached */

/* GPT-2's pre-tokenizer pattern (HF ByteLevel with use_regex). */
#define PAT_GPT2                                                                                   \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
/* Llama 3's pattern: numbers in groups of up to three digits. */
#define PAT_LLAMA3                                                                                 \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* Qwen 2 / 2.5 / 3: single digits. */
#define PAT_QWEN2                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* Qwen 3.5: combining marks stay with their letters. */
#define PAT_QWEN35                                                                                 \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| "                  \
    "?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* GPT-4o / Llama 4: case-aware words. */
#define PAT_GPT4O                                                                                  \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?"  \
    "i:'"                                                                                          \
    "s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}" \
    "\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| "                            \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* Mistral's tekken. */
#define PAT_TEKKEN                                                                                 \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^" \
    "\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{" \
    "N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* What each GGUF "tokenizer.ggml.pre" name stands for: up to three split patterns applied in
 * turn (each Isolated), whether whole words found in the vocabulary skip the merges, and whether
 * the model's tokenizer.json normalises to NFC first (Qwen's do; llama.cpp leaves that out, which
 * makes it disagree with the model's own tokenizer on decomposed accents). */
struct gguf_pre {
    const char *names; /* '|'-separated */
    const char *patterns[3];
    bool ignore_merges;
    bool nfc;
};

static const struct gguf_pre gguf_pres[] = {
        {"gpt-2|gpt2|phi-2|mpt|olmo|jais|jina-es|jina-de|jina-v2-es|jina-v2-de|jina-v1-en|"
         "jina-v2-code|roberta-bpe|exaone4|default|trillion|granite-docling|mellum|modern-bert",
         {PAT_GPT2},
         false,
         false},
        {"starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b|mellum2",
         {"\\p{N}", PAT_GPT2},
         false,
         false},
        {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2",
         {PAT_LLAMA3},
         true,
         false},
        {"dbrx|smaug-bpe|chatglm-bpe|glm4", {PAT_LLAMA3}, false, false},
        {"qwen2|deepseek-r1-qwen|megrez", {PAT_QWEN2}, false, true},
        {"stablelm2|hunyuan|kormo", {PAT_QWEN2}, false, false},
        {"qwen35", {PAT_QWEN35}, false, true},
        {"gpt-4o|llama4|kanana2", {PAT_GPT4O}, false, false},
        {"tekken", {PAT_TEKKEN}, true, false},
};

/* Token flags. */
enum {
    TOKF_PRESENT = 1u << 0, /* the files assign this id */
    TOKF_ADDED = 1u << 1,   /* matched in raw text before pre-tokenization */
    TOKF_SPECIAL = 1u << 2, /* control token: matched only with TOKENIZER_ENCODE_SPECIAL */
    TOKF_LSTRIP = 1u << 3,  /* added token swallows whitespace on its left */
    TOKF_RSTRIP = 1u << 4,  /* ... and on its right */
    TOKF_EOG = 1u << 5,     /* ends generation */
    TOKF_UNUSED = 1u << 6,  /* GGUF "unused": not looked up, so never produced by encoding */
};

enum split_behavior {
    SPLIT_ISOLATED,
    SPLIT_REMOVED,
    SPLIT_MERGED_WITH_PREVIOUS,
    SPLIT_MERGED_WITH_NEXT,
};

enum prefix_when { PREFIX_NEVER, PREFIX_FIRST, PREFIX_ALWAYS };

struct pretok_step {
    pcre2_code *re; /* NULL: this step does not split (ByteLevel without its pattern) */
    enum split_behavior behavior;
    bool invert; /* the pieces between matches are the delimiters */
    /* Rewriting a piece before it is split: spaces replaced by the prefix (Metaspace), and the
     * prefix put in front of a piece that does not start with it (ByteLevel's add_prefix_space,
     * Metaspace's prepend_scheme; PREFIX_FIRST only for the piece that starts the text). */
    bool replace_spaces;
    enum prefix_when prefix_when;
    char prefix[8];
    size_t prefix_len;
};

enum norm_kind { NORM_NFC, NORM_PREPEND, NORM_REPLACE };

struct norm_step {
    enum norm_kind kind;
    char *a, *b; /* PREPEND: a is the prefix; REPLACE: a is replaced by b */
    size_t a_len, b_len;
};

struct pair_slot {
    uint64_t key; /* left << 32 | right; PAIR_EMPTY when free */
    int32_t rank;
    int32_t merged;
};
#define PAIR_EMPTY UINT64_MAX

struct cache_entry {
    uint32_t key_len, n_ids;
    int32_t *ids; /* n_ids ids, then key_len key bytes, in one allocation */
};

struct tokenizer {
    const char *source; /* "tokenizer.json" or "GGUF tokenizer", for messages */
    int32_t n_vocab;
    size_t cap_vocab;
    /* id -> text as the vocabulary spells it, and id -> decoded bytes; both index into arenas */
    char *text_arena, *bytes_arena;
    size_t text_used, text_cap, bytes_used, bytes_cap;
    uint32_t *text_off, *text_len, *bytes_off, *bytes_len;
    uint8_t *flags;

    /* text -> id (open addressing; slots hold ids, -1 when free) */
    int32_t *map;
    size_t map_mask;

    /* (left, right) -> (rank, merged) */
    struct pair_slot *pairs;
    size_t pairs_mask;

    /* model */
    bool byte_level;    /* GPT-2 byte mapping; otherwise symbols are characters */
    bool byte_fallback; /* unknown characters become <0xNN> tokens */
    bool fuse_unk;
    bool ignore_merges;
    int32_t unk_id;
    int32_t byte_token[256]; /* initial symbol for each byte (-1: none) */

    /* pipeline */
    struct norm_step norm[TOK_MAX_NORM];
    int n_norm;
    struct pretok_step steps[TOK_MAX_STEPS];
    int n_steps;
    bool decode_metaspace;   /* decoder turns U+2581 into ' ' */
    bool decode_bytes;       /* decoder turns <0xNN> tokens into their byte (ByteFallback) */
    bool decode_strip_space; /* decoder drops one leading space of the whole text */

    /* added tokens, sorted by first byte then longest first; added_start[b] .. [b+1] */
    int32_t *added;
    size_t n_added;
    uint32_t added_start[257];

    int32_t bos_id, eos_id;
    bool add_bos;
    int32_t *eog;
    size_t n_eog;

    pthread_mutex_t cache_lock;
    struct cache_entry *cache[TOK_CACHE_SLOTS];
};

struct tokenizer_stream {
    const struct tokenizer *tok;
    unsigned flags;
    bool started; /* something was emitted (for the leading-space strip) */
    char hold[4]; /* an unfinished character carried to the next token */
    size_t n_hold;
    char *join; /* held bytes + the new token's bytes */
    size_t join_cap;
    char *out;
    size_t out_len, out_cap;
};

/* ---- errors --------------------------------------------------------------------------------- */

static void tok_error(char *err, size_t errlen, const char *source, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void tok_error(char *err, size_t errlen, const char *source, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (err == NULL || errlen == 0)
        return;
    n = snprintf(err, errlen, "%s: ", source);
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* ---- hashing -------------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 31);
}

static size_t table_size_for(size_t n)
{
    size_t size = 64;
    while (size < n * 2)
        size <<= 1;
    return size;
}

/* ---- the vocabulary ------------------------------------------------------------------------- */

static void vocab_reserve(struct tokenizer *tok, int32_t id)
{
    size_t old = tok->cap_vocab, cap = old ? old : 1024;

    if ((size_t)id < old)
        return;
    while (cap <= (size_t)id)
        cap *= 2;
    tok->text_off = xrealloc(tok->text_off, cap * sizeof(uint32_t));
    tok->text_len = xrealloc(tok->text_len, cap * sizeof(uint32_t));
    tok->flags = xrealloc(tok->flags, cap);
    memset(tok->text_off + old, 0, (cap - old) * sizeof(uint32_t));
    memset(tok->text_len + old, 0, (cap - old) * sizeof(uint32_t));
    memset(tok->flags + old, 0, cap - old);
    tok->cap_vocab = cap;
}

/* Sets the text of id (a later call for the same id replaces it). */
static void vocab_set(struct tokenizer *tok, int32_t id, const char *s, size_t n, uint8_t flags)
{
    vocab_reserve(tok, id);
    tok->text_arena = xgrow(tok->text_arena, &tok->text_cap, tok->text_used + n + 1, 1);
    memcpy(tok->text_arena + tok->text_used, s, n);
    tok->text_arena[tok->text_used + n] = '\0';
    tok->text_off[id] = (uint32_t)tok->text_used;
    tok->text_len[id] = (uint32_t)n;
    tok->text_used += n + 1;
    tok->flags[id] = (uint8_t)(flags | TOKF_PRESENT);
    if (id >= tok->n_vocab)
        tok->n_vocab = id + 1;
}

static const char *vocab_text(const struct tokenizer *tok, int32_t id)
{
    return tok->text_arena + tok->text_off[id];
}

static int32_t map_lookup(const struct tokenizer *tok, const char *s, size_t n)
{
    size_t i = hash_bytes(s, n) & tok->map_mask;

    for (;;) {
        int32_t id = tok->map[i];
        if (id < 0)
            return -1;
        if (tok->text_len[id] == n && memcmp(vocab_text(tok, id), s, n) == 0)
            return id;
        i = (i + 1) & tok->map_mask;
    }
}

/* Indexes every present id by its text; for equal texts the later id inserted wins, and added
 * tokens are inserted last so that their content finds them (as in HF). */
static void map_build(struct tokenizer *tok)
{
    size_t size = table_size_for((size_t)tok->n_vocab);

    tok->map = xmalloc(size * sizeof(int32_t));
    memset(tok->map, 0xff, size * sizeof(int32_t));
    tok->map_mask = size - 1;
    for (int pass = 0; pass < 2; pass++) {
        for (int32_t id = 0; id < tok->n_vocab; id++) {
            uint8_t f = tok->flags[id];
            if (!(f & TOKF_PRESENT) || (f & TOKF_UNUSED) || ((f & TOKF_ADDED) != 0) != (pass == 1))
                continue;
            const char *s = vocab_text(tok, id);
            size_t n = tok->text_len[id];
            size_t i = hash_bytes(s, n) & tok->map_mask;
            while (tok->map[i] >= 0) {
                int32_t other = tok->map[i];
                if (tok->text_len[other] == n && memcmp(vocab_text(tok, other), s, n) == 0)
                    break;
                i = (i + 1) & tok->map_mask;
            }
            tok->map[i] = id;
        }
    }
}

/* ---- merges --------------------------------------------------------------------------------- */

static void pairs_init(struct tokenizer *tok, size_t n)
{
    size_t size = table_size_for(n);

    tok->pairs = xmalloc(size * sizeof(*tok->pairs));
    for (size_t i = 0; i < size; i++)
        tok->pairs[i].key = PAIR_EMPTY;
    tok->pairs_mask = size - 1;
}

static const struct pair_slot *pairs_find(const struct tokenizer *tok, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = hash_pair(key) & tok->pairs_mask;

    for (;;) {
        const struct pair_slot *p = &tok->pairs[i];
        if (p->key == key)
            return p;
        if (p->key == PAIR_EMPTY)
            return NULL;
        i = (i + 1) & tok->pairs_mask;
    }
}

/* Adds merge number rank of left + right; the first occurrence of a pair wins. Merges whose
 * parts or result are not tokens can never apply and are dropped. */
static void pairs_add(struct tokenizer *tok, const char *left, size_t left_len, const char *right,
                      size_t right_len, int32_t rank)
{
    int32_t a = map_lookup(tok, left, left_len), b = map_lookup(tok, right, right_len);
    char stack[256], *joined = stack;

    if (a < 0 || b < 0)
        return;
    if (left_len + right_len > sizeof(stack))
        joined = xmalloc(left_len + right_len);
    memcpy(joined, left, left_len);
    memcpy(joined + left_len, right, right_len);
    int32_t merged = map_lookup(tok, joined, left_len + right_len);
    if (joined != stack)
        free(joined);
    if (merged < 0)
        return;

    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = hash_pair(key) & tok->pairs_mask;
    while (tok->pairs[i].key != PAIR_EMPTY) {
        if (tok->pairs[i].key == key)
            return;
        i = (i + 1) & tok->pairs_mask;
    }
    tok->pairs[i].key = key;
    tok->pairs[i].rank = rank;
    tok->pairs[i].merged = merged;
}

/* Adds a merge written "left right" (GGUF and the older tokenizer.json form). The separator is
 * the first space after the first character, so a token may itself start with a space. */
static int pairs_add_line(struct tokenizer *tok, const char *line, size_t n, int32_t rank,
                          char *err, size_t errlen)
{
    const char *sp = n > 1 ? memchr(line + 1, ' ', n - 1) : NULL;

    if (sp == NULL) {
        tok_error(err, errlen, tok->source, "merge %d \"%.*s\" is not \"left right\"", rank,
                  (int)(n > 80 ? 80 : n), line);
        return -1;
    }
    pairs_add(tok, line, (size_t)(sp - line), sp + 1, n - (size_t)(sp - line) - 1, rank);
    return 0;
}

/* ---- byte-level mapping (GPT-2's bytes_to_unicode) ------------------------------------------ */

/* Printable bytes stand for themselves; the 68 others (0..32, 127..160, 173) are numbered in order
 * from U+0100. */
static uint32_t byte_to_cp(unsigned b)
{
    if (b <= 32)
        return 256 + b;
    if (b >= 127 && b <= 160)
        return 256 + 33 + (b - 127);
    if (b == 173)
        return 256 + 33 + 34;
    return b;
}

/* The byte that code point cp stands for, or -1. */
static int cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return (cp <= 32 || (cp >= 127 && cp <= 160) || cp == 173) ? -1 : (int)cp;
    if (cp < 256 + 33)
        return (int)(cp - 256);
    if (cp < 256 + 33 + 34)
        return (int)(cp - 256 - 33 + 127);
    if (cp == 256 + 33 + 34)
        return 173;
    return -1;
}

/* ---- finishing a loaded vocabulary ---------------------------------------------------------- */

/* Texts of special tokens that end a turn or a document in the families Cortex runs. */
static const char *const eog_texts[] = {
        "<|endoftext|>", "<|im_end|>", "<|eot_id|>",    "<|eom_id|>", "<|end_of_text|>",
        "<end_of_turn>", "<|end|>",    "<|return|>",    "</s>",       "<|end▁of▁sentence|>",
        "<EOT>",         "<|eot|>",    "<|endofturn|>",
};

static void bytes_append(struct tokenizer *tok, const void *s, size_t n)
{
    tok->bytes_arena = xgrow(tok->bytes_arena, &tok->bytes_cap, tok->bytes_used + n, 1);
    memcpy(tok->bytes_arena + tok->bytes_used, s, n);
    tok->bytes_used += n;
}

/* "<0xHH>" -> the byte, or -1. */
static int parse_byte_token(const char *s, size_t n)
{
    unsigned v = 0;

    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else
            return -1;
    }
    return (int)v;
}

/* What one token decodes to, appended to the bytes arena. */
static void finish_token_bytes(struct tokenizer *tok, int32_t id)
{
    const char *s = vocab_text(tok, id);
    size_t n = tok->text_len[id], start = tok->bytes_used;
    uint8_t f = tok->flags[id];

    tok->bytes_off[id] = (uint32_t)start;
    if (!(f & TOKF_PRESENT) || (f & TOKF_ADDED)) {
        bytes_append(tok, s, f & TOKF_PRESENT ? n : 0);
    } else if (tok->byte_level) {
        /* Each character stands for one byte; a token with any other character (which only
         * hand-made vocabularies have) decodes to its own text, as HF does. */
        const unsigned char *u = (const unsigned char *)s;
        size_t i = 0;
        while (i < n) {
            uint32_t cp;
            int k = utf8_sequence(u + i, n - i, &cp);
            int b = k > 0 ? cp_to_byte(cp) : -1;
            if (b < 0) {
                tok->bytes_used = start;
                bytes_append(tok, s, n);
                break;
            }
            unsigned char c = (unsigned char)b;
            bytes_append(tok, &c, 1);
            i += (size_t)k;
        }
    } else {
        int b = tok->decode_bytes ? parse_byte_token(s, n) : -1;
        if (b >= 0) {
            unsigned char c = (unsigned char)b;
            bytes_append(tok, &c, 1);
        } else if (tok->decode_metaspace) {
            for (size_t i = 0; i < n; i++) {
                if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
                    bytes_append(tok, " ", 1);
                    i += 2;
                } else {
                    bytes_append(tok, s + i, 1);
                }
            }
        } else {
            bytes_append(tok, s, n);
        }
    }
    tok->bytes_len[id] = (uint32_t)(tok->bytes_used - start);
}

static int compare_added(const void *pa, const void *pb, void *arg)
{
    const struct tokenizer *tok = arg;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    unsigned char fa = (unsigned char)vocab_text(tok, a)[0];
    unsigned char fb = (unsigned char)vocab_text(tok, b)[0];

    if (fa != fb)
        return fa < fb ? -1 : 1;
    if (tok->text_len[a] != tok->text_len[b])
        return tok->text_len[a] > tok->text_len[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

static void eog_add(struct tokenizer *tok, int32_t id)
{
    if (id < 0 || id >= tok->n_vocab || !(tok->flags[id] & TOKF_PRESENT))
        return;
    tok->flags[id] |= TOKF_EOG;
}

/* Everything derived from the vocabulary once it is complete: decoded bytes, initial byte
 * symbols, the added-token index and the end-of-generation set. */
static void tokenizer_finish(struct tokenizer *tok, const int32_t *extra_eog, size_t n_extra)
{
    size_t n = (size_t)tok->n_vocab, cap = 0;

    tok->bytes_off = xmalloc((n ? n : 1) * sizeof(uint32_t));
    tok->bytes_len = xmalloc((n ? n : 1) * sizeof(uint32_t));
    for (int32_t id = 0; id < tok->n_vocab; id++)
        finish_token_bytes(tok, id);

    for (unsigned b = 0; b < 256; b++) {
        char s[8];
        int len;
        if (tok->byte_level)
            len = utf8_encode(byte_to_cp(b), s);
        else
            len = snprintf(s, sizeof(s), "<0x%02X>", b);
        tok->byte_token[b] =
                (tok->byte_level || tok->byte_fallback) ? map_lookup(tok, s, (size_t)len) : -1;
    }

    for (int32_t id = 0; id < tok->n_vocab; id++) {
        if ((tok->flags[id] & TOKF_ADDED) && tok->text_len[id] > 0) {
            tok->added = xgrow(tok->added, &cap, tok->n_added + 1, sizeof(int32_t));
            tok->added[tok->n_added++] = id;
        }
    }
    if (tok->n_added)
        qsort_r(tok->added, tok->n_added, sizeof(int32_t), compare_added, tok);
    for (unsigned b = 0, i = 0; b <= 256; b++) {
        while (i < tok->n_added && (unsigned char)vocab_text(tok, tok->added[i])[0] < b)
            i++;
        tok->added_start[b] = i;
    }

    eog_add(tok, tok->eos_id);
    for (size_t i = 0; i < n_extra; i++)
        eog_add(tok, extra_eog[i]);
    for (size_t i = 0; i < sizeof(eog_texts) / sizeof(eog_texts[0]); i++) {
        int32_t id = map_lookup(tok, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0 && (tok->flags[id] & TOKF_SPECIAL))
            eog_add(tok, id);
    }
    cap = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        if (tok->flags[id] & TOKF_EOG) {
            tok->eog = xgrow(tok->eog, &cap, tok->n_eog + 1, sizeof(int32_t));
            tok->eog[tok->n_eog++] = id;
        }
    }
}

static struct tokenizer *tokenizer_alloc(const char *source)
{
    struct tokenizer *tok = xcalloc(1, sizeof(*tok));

    tok->source = source;
    tok->unk_id = tok->bos_id = tok->eos_id = -1;
    pthread_mutex_init(&tok->cache_lock, NULL);
    return tok;
}

void tokenizer_destroy(struct tokenizer *tok)
{
    if (tok == NULL)
        return;
    for (int i = 0; i < tok->n_steps; i++)
        pcre2_code_free(tok->steps[i].re);
    for (int i = 0; i < tok->n_norm; i++) {
        free(tok->norm[i].a);
        free(tok->norm[i].b);
    }
    for (size_t i = 0; i < TOK_CACHE_SLOTS; i++)
        free(tok->cache[i]);
    pthread_mutex_destroy(&tok->cache_lock);
    free(tok->text_arena);
    free(tok->bytes_arena);
    free(tok->text_off);
    free(tok->text_len);
    free(tok->bytes_off);
    free(tok->bytes_len);
    free(tok->flags);
    free(tok->map);
    free(tok->pairs);
    free(tok->added);
    free(tok->eog);
    free(tok);
}

/* Compiles a split pattern as the next pre-tokenizer step. */
static int step_add(struct tokenizer *tok, const char *pattern, size_t len, bool literal,
                    enum split_behavior behavior, bool invert, bool add_prefix_space, char *err,
                    size_t errlen)
{
    struct pretok_step *st;
    int code;
    PCRE2_SIZE offset;

    if (tok->n_steps == TOK_MAX_STEPS) {
        tok_error(err, errlen, tok->source, "more than %d pre-tokenizer steps", TOK_MAX_STEPS);
        return -1;
    }
    st = &tok->steps[tok->n_steps];
    memset(st, 0, sizeof(*st));
    st->behavior = behavior;
    st->invert = invert;
    if (add_prefix_space) {
        st->prefix[0] = ' ';
        st->prefix_len = 1;
        st->prefix_when = PREFIX_ALWAYS;
    }
    if (pattern != NULL) {
        uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
        st->re = pcre2_compile((PCRE2_SPTR)pattern, len, options, &code, &offset, NULL);
        if (st->re == NULL) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof(msg));
            tok_error(err, errlen, tok->source,
                      "pre-tokenizer pattern does not compile at offset %zu: %s", (size_t)offset,
                      (const char *)msg);
            return -1;
        }
        /* Without JIT, matching falls back to the interpreter: slower, same result. */
        (void)pcre2_jit_compile(st->re, PCRE2_JIT_COMPLETE);
    }
    tok->n_steps++;
    return 0;
}

/* ---- encoding ------------------------------------------------------------------------------- */

struct span {
    uint32_t start, end;
    bool match;
};

struct sym {
    int32_t id;
    int32_t prev, next;
};

struct heap_item {
    int32_t rank;
    int32_t pos; /* the left symbol */
    int32_t left, right, merged;
};

/* Scratch space of one tokenizer_encode() call. */
struct enc {
    const struct tokenizer *tok;
    struct tokenizer_ids *out;
    pcre2_match_data *md;
    char *err;
    size_t errlen;
    struct span *spans[TOK_MAX_STEPS];
    size_t spans_cap[TOK_MAX_STEPS];
    char *prefixed[TOK_MAX_STEPS]; /* pieces with a prepended space, per step */
    size_t prefixed_cap[TOK_MAX_STEPS];
    char *norm[2]; /* normalizer ping-pong buffers */
    size_t norm_cap[2];
    struct sym *syms;
    size_t syms_cap;
    struct heap_item *heap;
    size_t heap_n, heap_cap;
    char *spelled; /* a word in vocabulary spelling (ignore_merges) */
    size_t spelled_cap;
};

static void ids_push(struct tokenizer_ids *ids, int32_t id)
{
    ids->v = xgrow(ids->v, &ids->cap, ids->n + 1, sizeof(int32_t));
    ids->v[ids->n++] = id;
}

static bool heap_less(const struct heap_item *a, const struct heap_item *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct enc *e, struct heap_item item)
{
    size_t i;

    e->heap = xgrow(e->heap, &e->heap_cap, e->heap_n + 1, sizeof(*e->heap));
    i = e->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&item, &e->heap[parent]))
            break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = item;
}

static struct heap_item heap_pop(struct enc *e)
{
    struct heap_item top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;

    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && heap_less(&e->heap[child + 1], &e->heap[child]))
            child++;
        if (!heap_less(&e->heap[child], &last))
            break;
        e->heap[i] = e->heap[child];
        i = child;
    }
    if (n)
        e->heap[i] = last;
    return top;
}

/* Queues the merge of symbols l and its successor r, if the pair has one. */
static void bpe_queue_pair(struct enc *e, int32_t l, int32_t r)
{
    const struct pair_slot *p = pairs_find(e->tok, e->syms[l].id, e->syms[r].id);

    if (p == NULL)
        return;
    heap_push(e, (struct heap_item){.rank = p->rank,
                                    .pos = l,
                                    .left = e->syms[l].id,
                                    .right = e->syms[r].id,
                                    .merged = p->merged});
}

static void sym_push(struct enc *e, size_t *n, int32_t id)
{
    e->syms = xgrow(e->syms, &e->syms_cap, *n + 1, sizeof(*e->syms));
    e->syms[*n] = (struct sym){.id = id, .prev = (int32_t)*n - 1, .next = (int32_t)*n + 1};
    (*n)++;
}

/* Initial symbols of a word that is not byte-level: one per character, or its bytes' fallback
 * tokens, or the unknown token. */
static void bpe_char_symbols(struct enc *e, const char *s, size_t len, size_t *n)
{
    const struct tokenizer *tok = e->tok;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    bool last_unk = false;

    while (i < len) {
        uint32_t cp;
        int k = utf8_sequence(u + i, len - i, &cp);
        size_t clen = k > 0 ? (size_t)k : 1;
        int32_t id = map_lookup(tok, s + i, clen);
        if (id >= 0) {
            sym_push(e, n, id);
            last_unk = false;
        } else {
            bool all = tok->byte_fallback;
            for (size_t j = 0; all && j < clen; j++)
                all = tok->byte_token[u[i + j]] >= 0;
            if (all) {
                for (size_t j = 0; j < clen; j++)
                    sym_push(e, n, tok->byte_token[u[i + j]]);
                last_unk = false;
            } else if (tok->unk_id >= 0 && !(tok->fuse_unk && last_unk)) {
                sym_push(e, n, tok->unk_id);
                last_unk = true;
            }
        }
        i += clen;
    }
}

/* Looks the word up in the cache; appends its ids and returns true on a hit. */
static bool cache_get(struct enc *e, const char *s, size_t len, size_t slot)
{
    struct tokenizer *tok = (struct tokenizer *)e->tok; /* the cache is the mutable part */
    bool hit = false;

    pthread_mutex_lock(&tok->cache_lock);
    struct cache_entry *ce = tok->cache[slot];
    if (ce && ce->key_len == len && memcmp(ce->ids + ce->n_ids, s, len) == 0) {
        e->out->v = xgrow(e->out->v, &e->out->cap, e->out->n + ce->n_ids, sizeof(int32_t));
        memcpy(e->out->v + e->out->n, ce->ids, ce->n_ids * sizeof(int32_t));
        e->out->n += ce->n_ids;
        hit = true;
    }
    pthread_mutex_unlock(&tok->cache_lock);
    return hit;
}

static void cache_put(struct enc *e, const char *s, size_t len, size_t slot, const int32_t *ids,
                      size_t n)
{
    struct tokenizer *tok = (struct tokenizer *)e->tok;
    struct cache_entry *ce = xmalloc(sizeof(*ce) + n * sizeof(int32_t) + len), *old;

    ce->key_len = (uint32_t)len;
    ce->n_ids = (uint32_t)n;
    ce->ids = (int32_t *)(ce + 1);
    memcpy(ce->ids, ids, n * sizeof(int32_t));
    memcpy(ce->ids + n, s, len);
    pthread_mutex_lock(&tok->cache_lock);
    old = tok->cache[slot];
    tok->cache[slot] = ce;
    pthread_mutex_unlock(&tok->cache_lock);
    free(old);
}

/* Encodes one pre-tokenized word with the BPE merges and appends its ids. */
static void bpe_word(struct enc *e, const char *s, size_t len)
{
    const struct tokenizer *tok = e->tok;
    size_t n = 0, first = e->out->n;
    bool cacheable = len <= TOK_CACHE_MAX_BYTES;
    size_t slot = cacheable ? hash_bytes(s, len) & (TOK_CACHE_SLOTS - 1) : 0;

    if (len == 0)
        return;
    if (cacheable && cache_get(e, s, len, slot))
        return;

    if (tok->ignore_merges) {
        const char *spelled = s;
        size_t spelled_len = len;
        if (tok->byte_level) {
            e->spelled = xgrow(e->spelled, &e->spelled_cap, 2 * len, 1);
            spelled_len = 0;
            for (size_t i = 0; i < len; i++)
                spelled_len += (size_t)utf8_encode(byte_to_cp((unsigned char)s[i]),
                                                   e->spelled + spelled_len);
            spelled = e->spelled;
        }
        int32_t id = map_lookup(tok, spelled, spelled_len);
        if (id >= 0 && !(tok->flags[id] & TOKF_ADDED)) {
            ids_push(e->out, id);
            goto done;
        }
    }

    if (tok->byte_level) {
        for (size_t i = 0; i < len; i++) {
            int32_t id = tok->byte_token[(unsigned char)s[i]];
            if (id >= 0)
                sym_push(e, &n, id);
            else if (tok->unk_id >= 0)
                sym_push(e, &n, tok->unk_id);
        }
    } else {
        bpe_char_symbols(e, s, len, &n);
    }
    if (n == 0)
        goto done;
    e->syms[n - 1].next = -1;

    e->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        bpe_queue_pair(e, (int32_t)i, (int32_t)i + 1);
    while (e->heap_n) {
        struct heap_item it = heap_pop(e);
        struct sym *l = &e->syms[it.pos];
        /* Skip entries made stale by an earlier merge: symbols only ever grow into longer
         * tokens, so an unchanged pair of ids means an unchanged pair. */
        if (l->id != it.left || l->next < 0 || e->syms[l->next].id != it.right)
            continue;
        struct sym *r = &e->syms[l->next];
        l->id = it.merged;
        l->next = r->next;
        if (r->next >= 0)
            e->syms[r->next].prev = it.pos;
        r->id = -1;
        if (l->prev >= 0)
            bpe_queue_pair(e, l->prev, it.pos);
        if (l->next >= 0)
            bpe_queue_pair(e, it.pos, l->next);
    }
    for (int32_t i = 0; i >= 0; i = e->syms[i].next)
        ids_push(e->out, e->syms[i].id);

done:
    if (cacheable)
        cache_put(e, s, len, slot, e->out->v + first, e->out->n - first);
}

/* Splits s[0..len) with the step's pattern into e->spans[depth] according to its behaviour. */
static int split_piece(struct enc *e, int depth, const char *s, size_t len, size_t *n_spans)
{
    const struct pretok_step *st = &e->tok->steps[depth];
    struct span **spans = &e->spans[depth];
    size_t *cap = &e->spans_cap[depth], n = 0, off = 0, prev_end = 0;

    while (off <= len) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)s, len, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            tok_error(e->err, e->errlen, e->tok->source, "pre-tokenizer pattern failed: %s",
                      (const char *)msg);
            return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty matches split nothing: step over one character */
            if (ms >= len)
                break;
            uint32_t cp;
            int k = utf8_sequence((const unsigned char *)s + ms, len - ms, &cp);
            off = ms + (size_t)(k > 0 ? k : 1);
            continue;
        }
        *spans = xgrow(*spans, cap, n + 2, sizeof(**spans));
        if (ms > prev_end)
            (*spans)[n++] = (struct span){(uint32_t)prev_end, (uint32_t)ms, false};
        (*spans)[n++] = (struct span){(uint32_t)ms, (uint32_t)me, true};
        prev_end = off = me;
    }
    *spans = xgrow(*spans, cap, n + 1, sizeof(**spans));
    if (prev_end < len)
        (*spans)[n++] = (struct span){(uint32_t)prev_end, (uint32_t)len, false};
    if (st->invert)
        for (size_t i = 0; i < n; i++)
            (*spans)[i].match = !(*spans)[i].match;

    /* Apply the behaviour in place: w is the write position. */
    size_t w = 0;
    switch (st->behavior) {
    case SPLIT_ISOLATED:
        w = n;
        break;
    case SPLIT_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!(*spans)[i].match)
                (*spans)[w++] = (*spans)[i];
        break;
    case SPLIT_MERGED_WITH_PREVIOUS: {
        bool prev_match = false;
        for (size_t i = 0; i < n; i++) {
            struct span sp = (*spans)[i];
            if (sp.match && w > 0 && !prev_match)
                (*spans)[w - 1].end = sp.end;
            else
                (*spans)[w++] = sp;
            prev_match = sp.match;
        }
        break;
    }
    case SPLIT_MERGED_WITH_NEXT: {
        bool prev_match = false;
        for (size_t i = 0; i < n; i++) {
            struct span sp = (*spans)[i];
            if (!sp.match && w > 0 && prev_match)
                (*spans)[w - 1].end = sp.end;
            else
                (*spans)[w++] = sp;
            prev_match = sp.match;
        }
        break;
    }
    }
    *n_spans = w;
    return 0;
}

/* Rewrites a piece as the step asks (see struct pretok_step) into e->prefixed[depth]. */
static const char *rewrite_piece(struct enc *e, int depth, const char *s, size_t *len,
                                 bool at_start)
{
    const struct pretok_step *st = &e->tok->steps[depth];
    size_t n = *len, o = 0;
    bool want = st->prefix_when == PREFIX_ALWAYS || (st->prefix_when == PREFIX_FIRST && at_start);
    bool has = (n >= st->prefix_len && memcmp(s, st->prefix, st->prefix_len) == 0) ||
               (st->replace_spaces && s[0] == ' ');
    bool add = st->prefix_len && want && !has;

    if (!add && !(st->replace_spaces && memchr(s, ' ', n)))
        return s;
    char *buf = e->prefixed[depth] =
            xgrow(e->prefixed[depth], &e->prefixed_cap[depth], (n + 1) * st->prefix_len + n, 1);
    if (add) {
        memcpy(buf, st->prefix, st->prefix_len);
        o = st->prefix_len;
    }
    for (size_t i = 0; i < n; i++) {
        if (st->replace_spaces && s[i] == ' ') {
            memcpy(buf + o, st->prefix, st->prefix_len);
            o += st->prefix_len;
        } else {
            buf[o++] = s[i];
        }
    }
    *len = o;
    return buf;
}

/* Runs pre-tokenizer step depth (and the ones after it) on a piece, then BPE on each word.
 * at_start: the piece begins where the text to encode begins. */
static int pretokenize(struct enc *e, int depth, const char *s, size_t len, bool at_start)
{
    const struct pretok_step *st;
    size_t n_spans;

    if (len == 0)
        return 0;
    if (depth == e->tok->n_steps) {
        bpe_word(e, s, len);
        return 0;
    }
    st = &e->tok->steps[depth];
    s = rewrite_piece(e, depth, s, &len, at_start);
    if (st->re == NULL)
        return pretokenize(e, depth + 1, s, len, at_start);
    if (split_piece(e, depth, s, len, &n_spans) < 0)
        return -1;
    for (size_t i = 0; i < n_spans; i++) {
        /* Deeper steps reuse only their own scratch, so this step's spans stay put. */
        struct span sp = e->spans[depth][i];
        if (pretokenize(e, depth + 1, s + sp.start, sp.end - sp.start, at_start && sp.start == 0) <
            0)
            return -1;
    }
    return 0;
}

/* Appends src[0..n) to buffer b of e->norm with the normalizer steps applied; returns the
 * normalised text (which may be src itself when nothing applies). */
static const char *normalize(struct enc *e, const char *src, size_t n, size_t *out_len)
{
    const char *cur = src;
    size_t cur_len = n;
    int which = 0;

    for (int i = 0; i < e->tok->n_norm; i++) {
        const struct norm_step *ns = &e->tok->norm[i];
        char **buf = &e->norm[which];
        size_t *cap = &e->norm_cap[which], len = 0;
        switch (ns->kind) {
        case NORM_NFC: {
            if (utf8_is_nfc_quick(cur, cur_len))
                continue;
            size_t nl;
            char *nfc = utf8_nfc(cur, cur_len, &nl);
            *buf = xgrow(*buf, cap, nl + 1, 1);
            memcpy(*buf, nfc, nl);
            free(nfc);
            len = nl;
            break;
        }
        case NORM_PREPEND:
            if (cur_len == 0)
                continue;
            *buf = xgrow(*buf, cap, ns->a_len + cur_len + 1, 1);
            memcpy(*buf, ns->a, ns->a_len);
            memcpy(*buf + ns->a_len, cur, cur_len);
            len = ns->a_len + cur_len;
            break;
        case NORM_REPLACE:
            for (size_t j = 0; j < cur_len;) {
                *buf = xgrow(*buf, cap, len + ns->b_len + 2, 1);
                if (ns->a_len && j + ns->a_len <= cur_len &&
                    memcmp(cur + j, ns->a, ns->a_len) == 0) {
                    memcpy(*buf + len, ns->b, ns->b_len);
                    len += ns->b_len;
                    j += ns->a_len;
                } else {
                    (*buf)[len++] = cur[j++];
                }
            }
            break;
        }
        cur = *buf;
        cur_len = len;
        which ^= 1;
    }
    *out_len = cur_len;
    return cur;
}

static int encode_text(struct enc *e, const char *s, size_t n, bool at_start)
{
    size_t len;
    const char *t;

    if (n == 0)
        return 0;
    t = normalize(e, s, n, &len);
    return pretokenize(e, 0, t, len, at_start);
}

static bool ascii_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Finds the leftmost-longest added token in text[from..len). Returns its id and its extent,
 * widened over neighbouring whitespace for lstrip / rstrip tokens (never before floor). */
static int32_t added_find(const struct tokenizer *tok, const char *text, size_t len, size_t from,
                          size_t floor, bool special, size_t *start, size_t *end)
{
    for (size_t p = from; p < len; p++) {
        unsigned char c = (unsigned char)text[p];
        for (uint32_t i = tok->added_start[c]; i < tok->added_start[c + 1]; i++) {
            int32_t id = tok->added[i];
            size_t tl = tok->text_len[id];
            if ((tok->flags[id] & TOKF_SPECIAL) && !special)
                continue;
            if (tl > len - p || memcmp(text + p, vocab_text(tok, id), tl) != 0)
                continue;
            size_t s = p, e = p + tl;
            if (tok->flags[id] & TOKF_LSTRIP)
                while (s > floor && ascii_space(text[s - 1]))
                    s--;
            if (tok->flags[id] & TOKF_RSTRIP)
                while (e < len && ascii_space(text[e]))
                    e++;
            *start = s;
            *end = e;
            return id;
        }
    }
    return -1;
}

int tokenizer_encode(const struct tokenizer *tok, const char *text, size_t len, unsigned flags,
                     struct tokenizer_ids *ids, char *err, size_t errlen)
{
    struct enc e = {.tok = tok, .out = ids, .err = err, .errlen = errlen};
    size_t done = 0, n_before = ids->n;
    int rc = -1;

    if (!utf8_valid(text, len)) {
        tok_error(err, errlen, tok->source, "the text to encode is not valid UTF-8");
        return -1;
    }
    e.md = pcre2_match_data_create(2, NULL);
    if ((flags & TOKENIZER_ENCODE_ADD_BOS) && tok->add_bos && tok->bos_id >= 0)
        ids_push(ids, tok->bos_id);
    while (done < len) {
        size_t ms, me;
        int32_t id = tok->n_added ? added_find(tok, text, len, done, done,
                                               flags & TOKENIZER_ENCODE_SPECIAL, &ms, &me)
                                  : -1;
        if (id < 0)
            break;
        if (encode_text(&e, text + done, ms - done, done == 0) < 0)
            goto out;
        ids_push(ids, id);
        done = me;
    }
    if (encode_text(&e, text + done, len - done, done == 0) < 0)
        goto out;
    rc = 0;
out:
    if (rc < 0)
        ids->n = n_before;
    pcre2_match_data_free(e.md);
    for (int i = 0; i < TOK_MAX_STEPS; i++) {
        free(e.spans[i]);
        free(e.prefixed[i]);
    }
    free(e.norm[0]);
    free(e.norm[1]);
    free(e.syms);
    free(e.heap);
    free(e.spelled);
    return rc;
}

/* ---- decoding ------------------------------------------------------------------------------- */

struct tokenizer_stream *tokenizer_stream_create(const struct tokenizer *tok, unsigned flags)
{
    struct tokenizer_stream *st = xcalloc(1, sizeof(*st));

    st->tok = tok;
    st->flags = flags;
    return st;
}

void tokenizer_stream_destroy(struct tokenizer_stream *st)
{
    if (st == NULL)
        return;
    free(st->join);
    free(st->out);
    free(st);
}

int tokenizer_stream_push(struct tokenizer_stream *st, int32_t id, const char **text, size_t *len)
{
    const struct tokenizer *tok = st->tok;
    const char *b;
    size_t n;

    st->out_len = 0;
    *text = "";
    *len = 0;
    if (id < 0 || id >= tok->n_vocab)
        return -1;
    if ((st->flags & TOKENIZER_DECODE_SKIP_SPECIAL) && (tok->flags[id] & TOKF_SPECIAL))
        return 0;
    b = tok->bytes_arena + tok->bytes_off[id];
    n = tok->bytes_len[id];
    if (n == 0)
        return 0;
    if (!st->started && tok->decode_strip_space && b[0] == ' ') {
        b++;
        n--;
    }
    st->started = true;
    if (n == 0)
        return 0;

    /* Join the held bytes with this token's bytes and emit all complete characters; an
     * unfinished character (at most 3 bytes) is held for the next token. */
    st->join = xgrow(st->join, &st->join_cap, st->n_hold + n, 1);
    memcpy(st->join, st->hold, st->n_hold);
    memcpy(st->join + st->n_hold, b, n);
    n += st->n_hold;
    size_t complete = utf8_complete_prefix(st->join, n);
    utf8_append_lossy(&st->out, &st->out_len, &st->out_cap, st->join, complete);
    st->n_hold = n - complete;
    memcpy(st->hold, st->join + complete, st->n_hold);
    *text = st->out;
    *len = st->out_len;
    return 0;
}

void tokenizer_stream_flush(struct tokenizer_stream *st, const char **text, size_t *len)
{
    st->out_len = 0;
    utf8_append_lossy(&st->out, &st->out_len, &st->out_cap, st->hold, st->n_hold);
    st->n_hold = 0;
    st->started = false;
    *text = st->out ? st->out : "";
    *len = st->out_len;
}

int tokenizer_decode(const struct tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                     char **out, size_t *out_len, char *err, size_t errlen)
{
    char *raw = NULL, *text = NULL;
    size_t raw_len = 0, raw_cap = 0, text_len = 0, text_cap = 0;
    bool started = false;

    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_vocab) {
            tok_error(err, errlen, tok->source, "token id %d is outside the vocabulary (%d)", id,
                      tok->n_vocab);
            free(raw);
            return -1;
        }
        if ((flags & TOKENIZER_DECODE_SKIP_SPECIAL) && (tok->flags[id] & TOKF_SPECIAL))
            continue;
        const char *b = tok->bytes_arena + tok->bytes_off[id];
        size_t bl = tok->bytes_len[id];
        if (bl == 0)
            continue;
        if (!started && tok->decode_strip_space && b[0] == ' ') {
            b++;
            bl--;
        }
        started = true;
        if (bl == 0)
            continue;
        raw = xgrow(raw, &raw_cap, raw_len + bl, 1);
        memcpy(raw + raw_len, b, bl);
        raw_len += bl;
    }
    utf8_append_lossy(&text, &text_len, &text_cap, raw ? raw : "", raw_len);
    free(raw);
    *out = text;
    *out_len = text_len;
    return 0;
}

/* ---- accessors ------------------------------------------------------------------------------ */

int32_t tokenizer_vocab_size(const struct tokenizer *tok)
{
    return tok->n_vocab;
}

const char *tokenizer_token_text(const struct tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->n_vocab)
        return NULL;
    if (len)
        *len = tok->text_len[id];
    return (tok->flags[id] & TOKF_PRESENT) ? vocab_text(tok, id) : "";
}

const char *tokenizer_token_bytes(const struct tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->n_vocab)
        return NULL;
    if (len)
        *len = tok->bytes_len[id];
    return tok->bytes_arena ? tok->bytes_arena + tok->bytes_off[id] : "";
}

int32_t tokenizer_token_id(const struct tokenizer *tok, const char *text, size_t len)
{
    return map_lookup(tok, text, len);
}

bool tokenizer_is_special(const struct tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_vocab && (tok->flags[id] & TOKF_SPECIAL);
}

bool tokenizer_is_eog(const struct tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_vocab && (tok->flags[id] & TOKF_EOG);
}

const int32_t *tokenizer_eog_ids(const struct tokenizer *tok, size_t *n)
{
    *n = tok->n_eog;
    return tok->eog;
}

int32_t tokenizer_bos_id(const struct tokenizer *tok)
{
    return tok->bos_id;
}

int32_t tokenizer_eos_id(const struct tokenizer *tok)
{
    return tok->eos_id;
}

bool tokenizer_adds_bos(const struct tokenizer *tok)
{
    return tok->add_bos && tok->bos_id >= 0;
}

/* ---- loading tokenizer.json ----------------------------------------------------------------- */

/* The text of a pattern object {"Regex": "..."} or {"String": "..."}. */
static const char *hf_pattern(const json_t *pattern, bool *literal, size_t *len)
{
    const json_t *v = json_object_get(pattern, "Regex");

    *literal = false;
    if (!json_is_string(v)) {
        v = json_object_get(pattern, "String");
        *literal = true;
    }
    if (!json_is_string(v))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

static int hf_normalizer(struct tokenizer *tok, const json_t *n, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(n, "type"));
    struct norm_step *ns;

    if (json_is_null(n) || n == NULL)
        return 0;
    if (type == NULL)
        goto unsupported;
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(n, "normalizers"), *v;
        size_t i;
        json_array_foreach(list, i, v)
        {
            if (hf_normalizer(tok, v, err, errlen) < 0)
                return -1;
        }
        return 0;
    }
    if (tok->n_norm == TOK_MAX_NORM) {
        tok_error(err, errlen, tok->source, "more than %d normalizer steps", TOK_MAX_NORM);
        return -1;
    }
    ns = &tok->norm[tok->n_norm];
    memset(ns, 0, sizeof(*ns));
    if (strcmp(type, "NFC") == 0) {
        ns->kind = NORM_NFC;
    } else if (strcmp(type, "Prepend") == 0) {
        const json_t *p = json_object_get(n, "prepend");
        if (!json_is_string(p))
            goto unsupported;
        ns->kind = NORM_PREPEND;
        ns->a_len = json_string_length(p);
        ns->a = xstrndup(json_string_value(p), ns->a_len);
    } else if (strcmp(type, "Replace") == 0) {
        bool literal;
        size_t plen = 0;
        const char *pat = hf_pattern(json_object_get(n, "pattern"), &literal, &plen);
        const json_t *c = json_object_get(n, "content");
        if (pat == NULL || !literal || !json_is_string(c)) {
            tok_error(err, errlen, tok->source,
                      "normalizer Replace is supported only with a String pattern");
            return -1;
        }
        ns->kind = NORM_REPLACE;
        ns->a_len = plen;
        ns->a = xstrndup(pat, plen);
        ns->b_len = json_string_length(c);
        ns->b = xstrndup(json_string_value(c), ns->b_len);
    } else {
        goto unsupported;
    }
    tok->n_norm++;
    return 0;
unsupported:
    tok_error(err, errlen, tok->source,
              "normalizer '%s' is not supported (NFC, Prepend, Replace and Sequence are)",
              type ? type : "?");
    return -1;
}

static int hf_pre_tokenizer(struct tokenizer *tok, const json_t *p, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(p, "type"));

    if (p == NULL || json_is_null(p))
        return 0;
    if (type == NULL)
        goto unsupported;
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(p, "pretokenizers"), *v;
        size_t i;
        json_array_foreach(list, i, v)
        {
            if (hf_pre_tokenizer(tok, v, err, errlen) < 0)
                return -1;
        }
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        static const char *const behaviors[] = {"Isolated", "Removed", "MergedWithPrevious",
                                                "MergedWithNext"};
        const char *b = json_string_value(json_object_get(p, "behavior"));
        bool literal;
        size_t len = 0;
        const char *pat = hf_pattern(json_object_get(p, "pattern"), &literal, &len);
        int behavior = -1;
        for (int i = 0; b && i < 4; i++)
            if (strcmp(b, behaviors[i]) == 0)
                behavior = i;
        if (pat == NULL || behavior < 0) {
            tok_error(err, errlen, tok->source,
                      "pre-tokenizer Split needs a Regex or String pattern and a behavior of "
                      "Isolated, Removed, MergedWithPrevious or MergedWithNext (got '%s')",
                      b ? b : "none");
            return -1;
        }
        return step_add(tok, pat, len, literal, (enum split_behavior)behavior,
                        json_is_true(json_object_get(p, "invert")), false, err, errlen);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        const json_t *use_regex = json_object_get(p, "use_regex");
        bool regex = use_regex == NULL || json_is_true(use_regex);
        tok->byte_level = true;
        return step_add(tok, regex ? PAT_GPT2 : NULL, PCRE2_ZERO_TERMINATED, false, SPLIT_ISOLATED,
                        false, json_is_true(json_object_get(p, "add_prefix_space")), err, errlen);
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *r = json_string_value(json_object_get(p, "replacement"));
        const char *scheme = json_string_value(json_object_get(p, "prepend_scheme"));
        const json_t *split = json_object_get(p, "split");
        const json_t *legacy = json_object_get(p, "add_prefix_space");
        enum prefix_when when = PREFIX_ALWAYS;
        if (r == NULL)
            r = "\xE2\x96\x81";
        if (scheme && strcmp(scheme, "first") == 0)
            when = PREFIX_FIRST;
        else if (scheme && strcmp(scheme, "never") == 0)
            when = PREFIX_NEVER;
        else if (scheme == NULL && legacy && !json_is_true(legacy))
            when = PREFIX_NEVER;
        if (strlen(r) == 0 || strlen(r) >= sizeof(tok->steps[0].prefix)) {
            tok_error(err, errlen, tok->source, "Metaspace replacement must be one character");
            return -1;
        }
        if (step_add(tok, split == NULL || json_is_true(split) ? r : NULL, strlen(r), true,
                     SPLIT_MERGED_WITH_NEXT, false, false, err, errlen) < 0)
            return -1;
        struct pretok_step *st = &tok->steps[tok->n_steps - 1];
        st->replace_spaces = true;
        st->prefix_when = when;
        st->prefix_len = strlen(r);
        memcpy(st->prefix, r, st->prefix_len);
        return 0;
    }
    if (strcmp(type, "Digits") == 0) {
        bool single = json_is_true(json_object_get(p, "individual_digits"));
        return step_add(tok, single ? "\\p{N}" : "\\p{N}+", PCRE2_ZERO_TERMINATED, false,
                        SPLIT_ISOLATED, false, false, err, errlen);
    }
unsupported:
    tok_error(err, errlen, tok->source,
              "pre-tokenizer '%s' is not supported (Sequence, Split, ByteLevel, Metaspace and "
              "Digits are)",
              type ? type : "?");
    return -1;
}

static int hf_decoder(struct tokenizer *tok, const json_t *d, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(d, "type"));

    if (d == NULL || json_is_null(d))
        return 0;
    if (type == NULL)
        goto unsupported;
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(d, "decoders"), *v;
        size_t i;
        json_array_foreach(list, i, v)
        {
            if (hf_decoder(tok, v, err, errlen) < 0)
                return -1;
        }
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        tok->byte_level = true;
        return 0;
    }
    if (strcmp(type, "ByteFallback") == 0) {
        tok->decode_bytes = true;
        return 0;
    }
    if (strcmp(type, "Fuse") == 0)
        return 0;
    if (strcmp(type, "Replace") == 0) {
        bool literal;
        size_t len = 0;
        const char *pat = hf_pattern(json_object_get(d, "pattern"), &literal, &len);
        const char *content = json_string_value(json_object_get(d, "content"));
        if (pat && literal && strcmp(pat, "\xE2\x96\x81") == 0 && content &&
            strcmp(content, " ") == 0) {
            tok->decode_metaspace = true;
            return 0;
        }
        goto unsupported;
    }
    if (strcmp(type, "Strip") == 0) {
        const char *content = json_string_value(json_object_get(d, "content"));
        json_int_t start = json_integer_value(json_object_get(d, "start"));
        json_int_t stop = json_integer_value(json_object_get(d, "stop"));
        if (content && strcmp(content, " ") == 0 && start == 1 && stop == 0) {
            tok->decode_strip_space = true;
            return 0;
        }
        goto unsupported;
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *scheme = json_string_value(json_object_get(d, "prepend_scheme"));
        tok->decode_metaspace = true;
        tok->decode_strip_space = scheme ? strcmp(scheme, "never") != 0
                                         : json_is_true(json_object_get(d, "add_prefix_space"));
        return 0;
    }
unsupported:
    tok_error(err, errlen, tok->source,
              "decoder '%s' is not supported (ByteLevel, ByteFallback, Fuse, Metaspace, "
              "Replace of U+2581 and Strip of one leading space are)",
              type ? type : "?");
    return -1;
}

/* BOS from a TemplateProcessing post-processor that starts with a special token. */
static void hf_post_processor(struct tokenizer *tok, const json_t *p)
{
    const char *type = json_string_value(json_object_get(p, "type"));

    if (type == NULL)
        return;
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(p, "processors"), *v;
        size_t i;
        json_array_foreach(list, i, v)
        {
            hf_post_processor(tok, v);
        }
        return;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return;
    const json_t *first = json_array_get(json_object_get(p, "single"), 0);
    const char *name =
            json_string_value(json_object_get(json_object_get(first, "SpecialToken"), "id"));
    if (name == NULL)
        return;
    const json_t *spec = json_object_get(json_object_get(p, "special_tokens"), name);
    const json_t *ids = json_object_get(spec, "ids");
    int32_t id = json_is_integer(json_array_get(ids, 0))
                         ? (int32_t)json_integer_value(json_array_get(ids, 0))
                         : map_lookup(tok, name, strlen(name));
    if (id >= 0 && id < tok->n_vocab) {
        tok->bos_id = id;
        tok->add_bos = true;
    }
}

/* A token id named in the configuration: a number, or a token's text (string or
 * {"content": ...}). */
static int32_t config_token(const struct tokenizer *tok, const json_t *v)
{
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (json_is_integer(v))
        return (int32_t)json_integer_value(v);
    if (json_is_string(v))
        return map_lookup(tok, json_string_value(v), json_string_length(v));
    return -1;
}

/* bos/eos/add_bos from the model's configuration; extra end ids go to *eog. */
static void hf_config(struct tokenizer *tok, const json_t *config, int32_t **eog, size_t *n_eog)
{
    size_t cap = 0, i;
    const json_t *v, *e;
    int32_t id;

    if (!json_is_object(config))
        return;
    if ((id = config_token(tok, json_object_get(config, "bos_token"))) >= 0)
        tok->bos_id = id;
    if ((id = config_token(tok, json_object_get(config, "bos_token_id"))) >= 0)
        tok->bos_id = id;
    if ((id = config_token(tok, json_object_get(config, "eos_token"))) >= 0)
        tok->eos_id = id;
    v = json_object_get(config, "eos_token_id");
    if (json_is_array(v)) {
        json_array_foreach(v, i, e)
        {
            if ((id = config_token(tok, e)) < 0)
                continue;
            if (tok->eos_id < 0)
                tok->eos_id = id;
            *eog = xgrow(*eog, &cap, *n_eog + 1, sizeof(int32_t));
            (*eog)[(*n_eog)++] = id;
        }
    } else if ((id = config_token(tok, v)) >= 0) {
        if (tok->eos_id < 0)
            tok->eos_id = id;
        *eog = xgrow(*eog, &cap, *n_eog + 1, sizeof(int32_t));
        (*eog)[(*n_eog)++] = id;
    }
    v = json_object_get(config, "add_bos_token");
    if (json_is_boolean(v))
        tok->add_bos = json_is_true(v);
}

/* Ids above this are refused: no real vocabulary comes near, and a corrupt file must not make
 * us allocate gigabytes. */
#define TOK_MAX_ID (1 << 24)

int tokenizer_create_from_hf_json(const char *json_text, size_t len, const json_t *config,
                                  struct tokenizer **out, char *err, size_t errlen)
{
    struct tokenizer *tok = tokenizer_alloc("tokenizer.json");
    json_error_t jerr;
    json_t *root = json_loadb(json_text, len, 0, &jerr);
    const json_t *model, *vocab, *merges, *added, *v;
    const char *key, *type;
    int32_t *eog = NULL;
    size_t n_eog = 0, i;
    int rc = -1;

    if (root == NULL) {
        tok_error(err, errlen, tok->source, "not valid JSON (line %d: %s)", jerr.line, jerr.text);
        goto out;
    }
    model = json_object_get(root, "model");
    type = json_string_value(json_object_get(model, "type"));
    vocab = json_object_get(model, "vocab");
    merges = json_object_get(model, "merges");
    if (type && strcmp(type, "BPE") != 0) {
        tok_error(err, errlen, tok->source, "model type '%s' is not supported (only BPE is)", type);
        goto out;
    }
    if (!json_is_object(vocab) || !json_is_array(merges)) {
        tok_error(err, errlen, tok->source, "model has no vocab object or no merges array");
        goto out;
    }
    v = json_object_get(model, "continuing_subword_prefix");
    if (json_string_length(v) > 0 ||
        json_string_length(json_object_get(model, "end_of_word_suffix")) > 0) {
        tok_error(err, errlen, tok->source,
                  "BPE with continuing_subword_prefix or end_of_word_suffix is not supported");
        goto out;
    }
    v = json_object_get(model, "dropout");
    if (json_is_number(v) && json_number_value(v) > 0) {
        tok_error(err, errlen, tok->source, "BPE dropout is not supported");
        goto out;
    }
    tok->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    tok->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    tok->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));

    json_object_foreach((json_t *)vocab, key, v)
    {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id >= TOK_MAX_ID) {
            tok_error(err, errlen, tok->source, "vocab entry \"%.60s\" has no valid id", key);
            goto out;
        }
        vocab_set(tok, (int32_t)id, key, strlen(key), 0);
    }
    added = json_object_get(root, "added_tokens");
    json_array_foreach(added, i, v)
    {
        const json_t *content = json_object_get(v, "content");
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (!json_is_string(content) || id < 0 || id >= TOK_MAX_ID) {
            tok_error(err, errlen, tok->source, "added token %zu has no content or no valid id", i);
            goto out;
        }
        uint8_t f = TOKF_ADDED;
        if (json_is_true(json_object_get(v, "special")))
            f |= TOKF_SPECIAL;
        if (json_is_true(json_object_get(v, "lstrip")))
            f |= TOKF_LSTRIP;
        if (json_is_true(json_object_get(v, "rstrip")))
            f |= TOKF_RSTRIP;
        vocab_set(tok, (int32_t)id, json_string_value(content), json_string_length(content), f);
    }
    if (tok->n_vocab == 0) {
        tok_error(err, errlen, tok->source, "the vocabulary is empty");
        goto out;
    }
    map_build(tok);

    pairs_init(tok, json_array_size(merges));
    json_array_foreach(merges, i, v)
    {
        if (json_is_string(v)) {
            if (pairs_add_line(tok, json_string_value(v), json_string_length(v), (int32_t)i, err,
                               errlen) < 0)
                goto out;
        } else if (json_is_array(v) && json_array_size(v) == 2 &&
                   json_is_string(json_array_get(v, 0)) && json_is_string(json_array_get(v, 1))) {
            const json_t *a = json_array_get(v, 0), *b = json_array_get(v, 1);
            pairs_add(tok, json_string_value(a), json_string_length(a), json_string_value(b),
                      json_string_length(b), (int32_t)i);
        } else {
            tok_error(err, errlen, tok->source, "merge %zu is neither \"a b\" nor [a, b]", i);
            goto out;
        }
    }
    v = json_object_get(model, "unk_token");
    if (json_is_string(v))
        tok->unk_id = map_lookup(tok, json_string_value(v), json_string_length(v));

    if (hf_normalizer(tok, json_object_get(root, "normalizer"), err, errlen) < 0 ||
        hf_pre_tokenizer(tok, json_object_get(root, "pre_tokenizer"), err, errlen) < 0 ||
        hf_decoder(tok, json_object_get(root, "decoder"), err, errlen) < 0)
        goto out;
    hf_post_processor(tok, json_object_get(root, "post_processor"));
    hf_config(tok, config, &eog, &n_eog);
    tokenizer_finish(tok, eog, n_eog);
    rc = 0;
out:
    json_decref(root);
    free(eog);
    if (rc < 0) {
        tokenizer_destroy(tok);
        tok = NULL;
    }
    *out = tok;
    return rc;
}

/* ---- loading GGUF metadata ------------------------------------------------------------------ */

enum gguf_token_type {
    GGUF_TOKEN_NORMAL = 1,
    GGUF_TOKEN_UNKNOWN = 2,
    GGUF_TOKEN_CONTROL = 3,
    GGUF_TOKEN_USER_DEFINED = 4,
    GGUF_TOKEN_UNUSED = 5,
    GGUF_TOKEN_BYTE = 6,
};

static const struct gguf_pre *gguf_pre_find(const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < sizeof(gguf_pres) / sizeof(gguf_pres[0]); i++) {
        const char *p = gguf_pres[i].names;
        while (*p) {
            const char *bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            if (n == len && memcmp(p, name, n) == 0)
                return &gguf_pres[i];
            p += n + (bar != NULL);
        }
    }
    return NULL;
}

static int32_t gguf_id(const json_t *meta, const char *key)
{
    const json_t *v = json_object_get(meta, key);
    return json_is_number(v) ? (int32_t)json_number_value(v) : -1;
}

int tokenizer_create_from_gguf(const json_t *meta, struct tokenizer **out, char *err, size_t errlen)
{
    struct tokenizer *tok = tokenizer_alloc("GGUF tokenizer");
    const char *model = json_string_value(json_object_get(meta, "tokenizer.ggml.model"));
    const char *pre_name = json_string_value(json_object_get(meta, "tokenizer.ggml.pre"));
    const json_t *tokens = json_object_get(meta, "tokenizer.ggml.tokens");
    const json_t *types = json_object_get(meta, "tokenizer.ggml.token_type");
    const json_t *merges = json_object_get(meta, "tokenizer.ggml.merges"), *v;
    const struct gguf_pre *pre;
    int32_t extra_eog[2];
    size_t i;
    int rc = -1;

    if (model == NULL) {
        tok_error(err, errlen, tok->source, "tokenizer.ggml.model is missing");
        goto out;
    }
    if (strcmp(model, "gpt2") != 0) {
        tok_error(err, errlen, tok->source,
                  "tokenizer.ggml.model '%s' is not supported (only 'gpt2', byte-level BPE)",
                  model);
        goto out;
    }
    if (pre_name == NULL)
        pre_name = "default";
    pre = gguf_pre_find(pre_name);
    if (pre == NULL) {
        tok_error(err, errlen, tok->source, "pre-tokenizer '%s' (tokenizer.ggml.pre) is unknown",
                  pre_name);
        goto out;
    }
    if (!json_is_array(tokens) || json_array_size(tokens) == 0 ||
        json_array_size(tokens) >= TOK_MAX_ID) {
        tok_error(err, errlen, tok->source, "tokenizer.ggml.tokens is missing or empty");
        goto out;
    }
    if (types && (!json_is_array(types) || json_array_size(types) != json_array_size(tokens))) {
        tok_error(err, errlen, tok->source,
                  "tokenizer.ggml.token_type does not have one entry per token");
        goto out;
    }
    if (!json_is_array(merges)) {
        tok_error(err, errlen, tok->source, "tokenizer.ggml.merges is missing");
        goto out;
    }
    json_array_foreach(tokens, i, v)
    {
        json_int_t type = types ? json_integer_value(json_array_get(types, i)) : GGUF_TOKEN_NORMAL;
        uint8_t f = 0;
        if (!json_is_string(v)) {
            tok_error(err, errlen, tok->source, "token %zu is not a string", i);
            goto out;
        }
        if (type == GGUF_TOKEN_CONTROL)
            f = TOKF_ADDED | TOKF_SPECIAL;
        else if (type == GGUF_TOKEN_USER_DEFINED)
            f = TOKF_ADDED;
        else if (type == GGUF_TOKEN_UNUSED)
            f = TOKF_UNUSED;
        else if (type == GGUF_TOKEN_UNKNOWN && tok->unk_id < 0)
            tok->unk_id = (int32_t)i;
        vocab_set(tok, (int32_t)i, json_string_value(v), json_string_length(v), f);
    }
    map_build(tok);
    pairs_init(tok, json_array_size(merges));
    json_array_foreach(merges, i, v)
    {
        if (!json_is_string(v)) {
            tok_error(err, errlen, tok->source, "merge %zu is not a string", i);
            goto out;
        }
        if (pairs_add_line(tok, json_string_value(v), json_string_length(v), (int32_t)i, err,
                           errlen) < 0)
            goto out;
    }

    tok->byte_level = true;
    tok->ignore_merges = pre->ignore_merges;
    if (pre->nfc)
        tok->norm[tok->n_norm++].kind = NORM_NFC;
    for (int k = 0; k < 3 && pre->patterns[k]; k++)
        if (step_add(tok, pre->patterns[k], PCRE2_ZERO_TERMINATED, false, SPLIT_ISOLATED, false,
                     false, err, errlen) < 0)
            goto out;

    tok->bos_id = gguf_id(meta, "tokenizer.ggml.bos_token_id");
    tok->eos_id = gguf_id(meta, "tokenizer.ggml.eos_token_id");
    if (gguf_id(meta, "tokenizer.ggml.unknown_token_id") >= 0)
        tok->unk_id = gguf_id(meta, "tokenizer.ggml.unknown_token_id");
    /* llama.cpp's default for BPE vocabularies: BOS only where the pre-tokenizer implies it. */
    tok->add_bos = pre->ignore_merges;
    v = json_object_get(meta, "tokenizer.ggml.add_bos_token");
    if (json_is_boolean(v))
        tok->add_bos = json_is_true(v);
    if (tok->bos_id >= tok->n_vocab || tok->eos_id >= tok->n_vocab || tok->unk_id >= tok->n_vocab) {
        tok_error(err, errlen, tok->source, "a special token id is outside the vocabulary");
        goto out;
    }
    extra_eog[0] = gguf_id(meta, "tokenizer.ggml.eot_token_id");
    extra_eog[1] = gguf_id(meta, "tokenizer.ggml.eom_token_id");
    tokenizer_finish(tok, extra_eog, 2);
    rc = 0;
out:
    if (rc < 0) {
        tokenizer_destroy(tok);
        tok = NULL;
    }
    *out = tok;
    return rc;
}
