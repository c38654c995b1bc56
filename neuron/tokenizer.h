/*
 * neuron/tokenizer.h — BPE tokenizers of the models Cortex runs: text to token ids and back.
 *
 * Contract: a tokenizer is built once from a model's files (a Hugging Face tokenizer.json, or the
 * tokenizer.ggml.* keys of a GGUF file) and is then immutable apart from an internal word cache
 * guarded by a mutex, so one tokenizer may encode and decode from many threads at once.
 *
 * What it implements, and refuses clearly otherwise:
 *   - byte-level BPE (GPT-2's byte-to-unicode mapping; GPT-2, Llama 3, Qwen 2/2.5/3/3.5, SmolLM2)
 *     and sentencepiece-style BPE over raw characters with byte fallback (<0xNN> tokens, Llama 2
 *     and Mistral tokenizer.json files);
 *   - the pre-tokenizer split patterns (PCRE2, Unicode properties, JIT when available): HF
 *     pre_tokenizer Sequence / Split (Isolated, Removed, MergedWithPrevious, MergedWithNext,
 *     invert) / ByteLevel (use_regex, add_prefix_space) / Metaspace / Digits, or the patterns
 *     that a GGUF "tokenizer.ggml.pre" name stands for;
 *   - normalizers NFC, Prepend and Replace (plain string), alone or in a Sequence;
 *   - added tokens (split out before everything else, leftmost-longest, with lstrip / rstrip);
 *     special ones only when the caller allows it (chat templates produce them, user text must
 *     not be able to forge them);
 *   - merges ranked by their order, applied lowest rank first (leftmost on ties), optionally
 *     skipped for a word that is itself in the vocabulary (ignore_merges, as tiktoken does).
 * Decoding maps ids back to bytes; text returned to callers is always valid UTF-8 (each invalid
 * part becomes U+FFFD), and the streaming decoder never emits half a character.
 * Errors: creation and encoding return -1 with a message in err (buffer from the caller) naming
 * the source ("tokenizer.json: ..." or "GGUF tokenizer: ...") and the problem.
 */
#ifndef CORTEX_NEURON_TOKENIZER_H
#define CORTEX_NEURON_TOKENIZER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tokenizer;
struct tokenizer_stream;

/* A growable array of token ids. Start from {0}; the owner frees v. */
struct tokenizer_ids {
    int32_t *v;
    size_t n, cap;
};

enum tokenizer_encode_flag {
    /* Recognise the text of special (control) tokens such as "<|im_start|>" and emit their ids;
     * without it they are encoded as ordinary text. Non-special added tokens always match. */
    TOKENIZER_ENCODE_SPECIAL = 1u << 0,
    /* Prepend the BOS token when the model's files ask for one (tokenizer_adds_bos()). */
    TOKENIZER_ENCODE_ADD_BOS = 1u << 1,
};

enum tokenizer_decode_flag {
    /* Leave out special tokens (BOS, <|im_end|>, ...) instead of writing their text. */
    TOKENIZER_DECODE_SKIP_SPECIAL = 1u << 0,
};

/* Builds a tokenizer from the text of a Hugging Face tokenizer.json (len bytes, need not be
 * NUL-terminated). config may be NULL or the model's merged configuration object (config.json,
 * tokenizer_config.json, generation_config.json): its bos_token / eos_token (string or
 * {"content": ...}), bos_token_id / eos_token_id (number or array) and add_bos_token refine what
 * tokenizer.json says. On success *out is owned by the caller (tokenizer_destroy). */
int tokenizer_create_from_hf_json(const char *json_text, size_t len, const json_t *config,
                                  struct tokenizer **out, char *err, size_t errlen)
        __attribute__((warn_unused_result));

/* Builds a tokenizer from GGUF metadata held in a jansson object whose keys are the GGUF keys:
 *   "tokenizer.ggml.model"       string: "gpt2" (byte-level BPE); others are refused;
 *   "tokenizer.ggml.pre"         string: pre-tokenizer name ("smollm", "qwen2", "qwen35",
 *                                "llama-bpe", "gpt-2", ...); absent means GPT-2's pattern;
 *   "tokenizer.ggml.tokens"      array of strings (id = index);
 *   "tokenizer.ggml.token_type"  array of integers (1 normal, 2 unknown, 3 control, 4 user
 *                                defined, 5 unused, 6 byte); absent means all normal;
 *   "tokenizer.ggml.merges"      array of "left right" strings, best first;
 *   "tokenizer.ggml.bos_token_id", "...eos_token_id", "...eot_token_id", "...eom_token_id",
 *   "...unknown_token_id"        integers; "tokenizer.ggml.add_bos_token" boolean.
 * Control tokens become special added tokens, user-defined ones non-special added tokens.
 * On success *out is owned by the caller (tokenizer_destroy). */
int tokenizer_create_from_gguf(const json_t *meta, struct tokenizer **out, char *err, size_t errlen)
        __attribute__((warn_unused_result));

/* Frees the tokenizer; NULL is accepted. Streams created from it must be destroyed first. */
void tokenizer_destroy(struct tokenizer *tok);

/* Encodes text[0..len) (UTF-8) and appends the ids to *ids (grown as needed).
 * flags: enum tokenizer_encode_flag. Returns 0, or -1 (err filled, *ids unchanged in length)
 * when text is not valid UTF-8 or the split pattern fails to match (PCRE2 error). */
int tokenizer_encode(const struct tokenizer *tok, const char *text, size_t len, unsigned flags,
                     struct tokenizer_ids *ids, char *err, size_t errlen)
        __attribute__((warn_unused_result));

/* Decodes n ids into a new NUL-terminated UTF-8 string *out of *out_len bytes, which the caller
 * frees; invalid UTF-8 produced by the ids becomes U+FFFD. flags: enum tokenizer_decode_flag.
 * Returns 0, or -1 (err filled, *out untouched) for an id outside the vocabulary. */
int tokenizer_decode(const struct tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                     char **out, size_t *out_len, char *err, size_t errlen)
        __attribute__((warn_unused_result));

/* One more than the largest token id. */
int32_t tokenizer_vocab_size(const struct tokenizer *tok);
/* The token's text as the vocabulary spells it ("Ġthe", "<|im_end|>"); *len gets its length.
 * NULL for an id outside the vocabulary; "" for an id the files leave unassigned. Owned by tok. */
const char *tokenizer_token_text(const struct tokenizer *tok, int32_t id, size_t *len);
/* The bytes the token decodes to (" the"); may be part of a UTF-8 character. NULL for an id
 * outside the vocabulary. Owned by tok. */
const char *tokenizer_token_bytes(const struct tokenizer *tok, int32_t id, size_t *len);
/* The id of the token spelled text[0..len) as in the vocabulary (or an added token's content);
 * -1 when there is none. */
int32_t tokenizer_token_id(const struct tokenizer *tok, const char *text, size_t len);
/* Special (control) tokens: BOS/EOS, chat markers; false for ids outside the vocabulary. */
bool tokenizer_is_special(const struct tokenizer *tok, int32_t id);
/* End-of-generation tokens: EOS, EOT and the end markers of chat turns (<|im_end|>, <|eot_id|>,
 * <|endoftext|>, ...); false for ids outside the vocabulary. */
bool tokenizer_is_eog(const struct tokenizer *tok, int32_t id);
/* All end-of-generation ids, ascending; *n gets their count. Owned by tok. */
const int32_t *tokenizer_eog_ids(const struct tokenizer *tok, size_t *n);
/* -1 when the model has none. */
int32_t tokenizer_bos_id(const struct tokenizer *tok);
int32_t tokenizer_eos_id(const struct tokenizer *tok);
/* Whether the model's files ask for BOS in front of every encoded prompt. */
bool tokenizer_adds_bos(const struct tokenizer *tok);

/* A streaming decoder: feed ids one at a time as they are generated and get back the text that
 * is complete so far. Bytes of a character split across tokens are held back until the character
 * is complete. flags: enum tokenizer_decode_flag. The caller destroys it; tok must outlive it. */
struct tokenizer_stream *tokenizer_stream_create(const struct tokenizer *tok, unsigned flags);
/* Frees the stream; NULL is accepted. */
void tokenizer_stream_destroy(struct tokenizer_stream *st);
/* Adds one id. *text / *len get the newly complete UTF-8 text (possibly empty), valid until the
 * next call on st. Returns 0, or -1 for an id outside the vocabulary (nothing is consumed). */
int tokenizer_stream_push(struct tokenizer_stream *st, int32_t id, const char **text, size_t *len)
        __attribute__((warn_unused_result));
/* Ends the stream: returns whatever was held back, an unfinished character as U+FFFD. The stream
 * may then be reused from an empty state. */
void tokenizer_stream_flush(struct tokenizer_stream *st, const char **text, size_t *len);

#endif
