/*
 * neuron/utf8.h — UTF-8 decoding, validation, lossy repair and NFC normalisation.
 *
 * Contract: byte strings are (pointer, length) pairs and may contain NUL bytes. Nothing here keeps
 * state or allocates except utf8_nfc(), whose result the caller frees. Invalid input is reported,
 * never assumed away: utf8_sequence() tells how many bytes a broken sequence spans so that callers
 * can replace each maximal invalid subpart by one U+FFFD, as Unicode recommends (and as Python's
 * and Rust's lossy decoders do).
 */
#ifndef CORTEX_NEURON_UTF8_H
#define CORTEX_NEURON_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The replacement character U+FFFD in UTF-8. */
#define UTF8_REPLACEMENT     "\xEF\xBF\xBD"
#define UTF8_REPLACEMENT_LEN 3

/* Examines the sequence that starts at s[0] (n > 0 bytes available).
 * Returns its length (1..4) and stores the code point in *cp when it is valid; 0 when s[0..n) is
 * a valid but unfinished beginning of a sequence (more bytes are needed); or -k when the first k
 * bytes (k >= 1) are a maximal invalid subpart to be replaced by one U+FFFD. */
int utf8_sequence(const unsigned char *s, size_t n, uint32_t *cp);

/* Writes cp (at most U+10FFFF, not a surrogate) as UTF-8 into out; returns the byte count 1..4. */
int utf8_encode(uint32_t cp, char out[4]);

/* True when s[0..n) is entirely well-formed UTF-8. */
bool utf8_valid(const char *s, size_t n);

/* Length of the longest prefix of s[0..n) that does not end inside an unfinished sequence: the
 * bytes that can be emitted now by a streaming decoder that may still receive the rest. Invalid
 * bytes are part of the prefix (they will never become valid). */
size_t utf8_complete_prefix(const char *s, size_t n);

/* Appends s[0..n) to the buffer *buf (length *len, capacity *cap; grown with xgrow, freed by
 * the caller), replacing each maximal invalid subpart and an unfinished tail by U+FFFD. The
 * buffer is kept NUL-terminated. */
void utf8_append_lossy(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

/* True when s[0..n) (valid UTF-8) is certainly already in Normalization Form C: a quick check that
 * may answer false for some normalised texts, never true for one that NFC would change. */
bool utf8_is_nfc_quick(const char *s, size_t n);

/* Normalises valid UTF-8 s[0..n) to NFC (canonical decomposition, canonical ordering,
 * canonical composition). Returns a new NUL-terminated string of *out_len bytes that the caller
 * frees. Input that is not valid UTF-8 is copied through unchanged. */
char *utf8_nfc(const char *s, size_t n, size_t *out_len);

/* The Unicode version of the normalisation tables, e.g. "14.0.0". */
const char *utf8_unicode_version(void);

#endif
