/*
 * neuron/utf8.c — UTF-8 decoding, validation, lossy repair and NFC normalisation (see utf8.h).
 *
 * NFC follows Unicode Standard Annex #15: full canonical decomposition (Hangul syllables
 * arithmetically, the rest from utf8_tables.c), canonical ordering of combining marks, then
 * canonical composition against the last starter.
 */
#include "utf8.h"

#include "utf8_tables.h"
#include "xalloc.h"

#include <stdlib.h>
#include <string.h>

int utf8_sequence(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char b0 = s[0];
    int need;
    uint32_t c;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 2;
        c = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 3;
        c = b0 & 0x0F;
        if (b0 == 0xE0)
            lo = 0xA0; /* overlong */
        else if (b0 == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 4;
        c = b0 & 0x07;
        if (b0 == 0xF0)
            lo = 0x90; /* overlong */
        else if (b0 == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return -1;
    }
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n)
            return 0;
        unsigned char b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
            return -i;
        c = (c << 6) | (b & 0x3F);
    }
    *cp = c;
    return need;
}

int utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    uint32_t cp;

    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_sequence(u + i, n - i, &cp);
        if (k <= 0)
            return false;
        i += (size_t)k;
    }
    return true;
}

size_t utf8_complete_prefix(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    uint32_t cp;

    while (i < n) {
        int k = utf8_sequence(u + i, n - i, &cp);
        if (k == 0)
            break;
        i += (size_t)(k > 0 ? k : -k);
    }
    return i;
}

void utf8_append_lossy(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    uint32_t cp;

    /* Worst case: every byte becomes a 3-byte replacement character. */
    *buf = xgrow(*buf, cap, *len + 3 * n + 1, 1);
    while (i < n) {
        int k = utf8_sequence(u + i, n - i, &cp);
        if (k > 0) {
            memcpy(*buf + *len, s + i, (size_t)k);
            *len += (size_t)k;
            i += (size_t)k;
            continue;
        }
        memcpy(*buf + *len, UTF8_REPLACEMENT, UTF8_REPLACEMENT_LEN);
        *len += UTF8_REPLACEMENT_LEN;
        i += k == 0 ? n - i : (size_t)-k;
    }
    (*buf)[*len] = '\0';
}

/* ---- NFC ------------------------------------------------------------------------------------ */

enum {
    HANGUL_S0 = 0xAC00,
    HANGUL_L0 = 0x1100,
    HANGUL_V0 = 0x1161,
    HANGUL_T0 = 0x11A7,
    HANGUL_LN = 19,
    HANGUL_VN = 21,
    HANGUL_TN = 28,
    HANGUL_NN = HANGUL_VN * HANGUL_TN,
    HANGUL_SN = HANGUL_LN * HANGUL_NN,
};

/* Below U+0300 nothing decomposes into, reorders or composes with anything else. */
#define NFC_STABLE_BELOW 0x300

static bool nfc_unsafe(uint32_t cp)
{
    size_t lo = 0, hi = utf8_nfc_unsafe_count;

    if (cp < NFC_STABLE_BELOW)
        return false;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < utf8_nfc_unsafe_table[mid].lo)
            hi = mid;
        else if (cp > utf8_nfc_unsafe_table[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

static uint8_t nfc_ccc(uint32_t cp)
{
    size_t lo = 0, hi = utf8_ccc_count;

    if (cp < NFC_STABLE_BELOW)
        return 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < utf8_ccc_table[mid].lo)
            hi = mid;
        else if (cp > utf8_ccc_table[mid].hi)
            lo = mid + 1;
        else
            return utf8_ccc_table[mid].ccc;
    }
    return 0;
}

static const struct utf8_decomp *nfc_decomp_find(uint32_t cp)
{
    size_t lo = 0, hi = utf8_decomp_count;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < utf8_decomp_table[mid].cp)
            hi = mid;
        else if (cp > utf8_decomp_table[mid].cp)
            lo = mid + 1;
        else
            return &utf8_decomp_table[mid];
    }
    return NULL;
}

/* The primary composite of a + b, or 0 when they do not compose. */
static uint32_t nfc_compose_pair(uint32_t a, uint32_t b)
{
    if (a >= HANGUL_L0 && a < HANGUL_L0 + HANGUL_LN && b >= HANGUL_V0 && b < HANGUL_V0 + HANGUL_VN)
        return HANGUL_S0 + ((a - HANGUL_L0) * HANGUL_VN + (b - HANGUL_V0)) * HANGUL_TN;
    if (a >= HANGUL_S0 && a < HANGUL_S0 + HANGUL_SN && (a - HANGUL_S0) % HANGUL_TN == 0 &&
        b > HANGUL_T0 && b < HANGUL_T0 + HANGUL_TN)
        return a + (b - HANGUL_T0);

    size_t lo = 0, hi = utf8_comp_count;
    uint64_t key = ((uint64_t)a << 32) | b;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint64_t k = ((uint64_t)utf8_comp_table[mid].first << 32) | utf8_comp_table[mid].second;
        if (key < k)
            hi = mid;
        else if (key > k)
            lo = mid + 1;
        else
            return utf8_comp_table[mid].composite;
    }
    return 0;
}

struct cp_buf {
    uint32_t *v;
    size_t n, cap;
};

static void nfc_push(struct cp_buf *b, uint32_t cp)
{
    b->v = xgrow(b->v, &b->cap, b->n + 1, sizeof(*b->v));
    b->v[b->n++] = cp;
}

static void nfc_decompose(struct cp_buf *b, uint32_t cp)
{
    if (cp >= HANGUL_S0 && cp < HANGUL_S0 + HANGUL_SN) {
        uint32_t s = cp - HANGUL_S0;
        nfc_push(b, HANGUL_L0 + s / HANGUL_NN);
        nfc_push(b, HANGUL_V0 + (s % HANGUL_NN) / HANGUL_TN);
        if (s % HANGUL_TN)
            nfc_push(b, HANGUL_T0 + s % HANGUL_TN);
        return;
    }
    /* Nothing below U+00C0 decomposes. */
    const struct utf8_decomp *d = cp < 0xC0 ? NULL : nfc_decomp_find(cp);
    if (d == NULL) {
        nfc_push(b, cp);
        return;
    }
    nfc_decompose(b, d->first);
    if (d->second)
        nfc_decompose(b, d->second);
}

bool utf8_is_nfc_quick(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    uint32_t cp;

    while (i < n) {
        if (u[i] < 0xCC) { /* ASCII, continuation bytes and leads of code points below U+0300 */
            i++;
            continue;
        }
        int k = utf8_sequence(u + i, n - i, &cp);
        if (k <= 0)
            return false;
        if (nfc_unsafe(cp))
            return false;
        i += (size_t)k;
    }
    return true;
}

/* Appends s[0..n) to out in bytes (grown with xgrow). */
static void nfc_append(char **out, size_t *len, size_t *cap, const char *s, size_t n)
{
    *out = xgrow(*out, cap, *len + n + 1, 1);
    memcpy(*out + *len, s, n);
    *len += n;
}

/* Normalises one stretch of valid UTF-8 that starts at a boundary and appends it to out; b is
 * scratch space. */
static void nfc_region(const char *s, size_t n, struct cp_buf *b, char **out, size_t *len,
                       size_t *cap)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    uint32_t cp;

    b->n = 0;
    while (i < n) {
        int k = utf8_sequence(u + i, n - i, &cp);
        nfc_decompose(b, cp);
        i += (size_t)k;
    }
    /* Canonical ordering: a stable insertion sort of each run of non-starters by class. */
    for (size_t j = 1; j < b->n; j++) {
        uint32_t c = b->v[j];
        uint8_t cc = nfc_ccc(c);
        if (cc == 0)
            continue;
        size_t m = j;
        while (m > 0) {
            uint8_t pc = nfc_ccc(b->v[m - 1]);
            if (pc == 0 || pc <= cc)
                break;
            b->v[m] = b->v[m - 1];
            m--;
        }
        b->v[m] = c;
    }
    /* Canonical composition: a mark combines with the last starter unless something between
     * them blocks it (a starter, or a mark of the same or a higher class). */
    size_t w = 0, starter = 0;
    int last_class = -1; /* -1: no starter yet */
    for (size_t j = 0; j < b->n; j++) {
        uint32_t c = b->v[j];
        int cc = nfc_ccc(c);
        if (last_class >= 0 && (last_class < cc || last_class == 0)) {
            uint32_t comp = nfc_compose_pair(b->v[starter], c);
            if (comp) {
                b->v[starter] = comp;
                continue;
            }
        }
        if (cc == 0) {
            starter = w;
            last_class = 0;
        } else if (last_class >= 0) {
            last_class = cc;
        }
        b->v[w++] = c;
    }
    *out = xgrow(*out, cap, *len + 4 * w + 1, 1);
    for (size_t j = 0; j < w; j++)
        *len += (size_t)utf8_encode(b->v[j], *out + *len);
}

char *utf8_nfc(const char *s, size_t n, size_t *out_len)
{
    const unsigned char *u = (const unsigned char *)s;
    struct cp_buf b = {0};
    char *out = NULL;
    size_t len = 0, cap = 0, i = 0, copied = 0, boundary = 0;

    if (utf8_is_nfc_quick(s, n) || !utf8_valid(s, n)) {
        *out_len = n;
        return xstrndup(s, n);
    }
    /* A character outside the unsafe table has class 0 and never combines with what precedes
     * it, so normalisation never reaches across it: only the stretches from the last such
     * character before an unsafe one up to the next such character need the full algorithm. */
    while (i < n) {
        uint32_t cp;
        int k = u[i] < 0x80 ? 1 : utf8_sequence(u + i, n - i, &cp);
        if (u[i] < 0x80 || !nfc_unsafe(cp)) {
            boundary = i;
            i += (size_t)k;
            continue;
        }
        size_t end = i + (size_t)k;
        while (end < n) {
            int k2 = u[end] < 0x80 ? 1 : utf8_sequence(u + end, n - end, &cp);
            if (u[end] < 0x80 || !nfc_unsafe(cp))
                break;
            end += (size_t)k2;
        }
        nfc_append(&out, &len, &cap, s + copied, boundary - copied);
        nfc_region(s + boundary, end - boundary, &b, &out, &len, &cap);
        copied = boundary = i = end;
    }
    nfc_append(&out, &len, &cap, s + copied, n - copied);
    out[len] = '\0';
    *out_len = len;
    free(b.v);
    return out;
}

const char *utf8_unicode_version(void)
{
    return utf8_tables_unicode_version;
}
