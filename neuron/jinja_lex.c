/*
 * neuron/jinja_lex.c — the Jinja tokenizer: template text, tags and expression tokens.
 *
 * Whitespace control is applied here, as jinja2's lexer does it: `-` inside a tag strips the
 * whitespace on that side, lstrip_blocks strips the indentation before a block or comment tag,
 * trim_blocks drops the newline right after one, and `+` turns either off. Newlines are
 * normalised to "\n" and, unless keep_trailing_newline is set, one final newline is dropped.
 */
#include "jinja_internal.h"
#include "xalloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lexer {
    const char *s; /* normalised source */
    size_t n;
    size_t pos;
    size_t lc_off; /* line/column bookkeeping: position lc_line/lc_col is at offset lc_off */
    int lc_line, lc_col;
    const struct jinja_options *opt;
    struct jtok *toks;
    size_t ntoks, cap;
    bool strip_next; /* the previous tag ended with `-`: strip the next text's leading space */
    struct jinja_error *err;
};

static void lexer_where(struct lexer *lx, size_t off, int *line, int *col)
{
    if (off < lx->lc_off) {
        lx->lc_off = 0;
        lx->lc_line = 1;
        lx->lc_col = 1;
    }
    for (; lx->lc_off < off && lx->lc_off < lx->n; lx->lc_off++) {
        if (lx->s[lx->lc_off] == '\n') {
            lx->lc_line++;
            lx->lc_col = 1;
        } else if (((unsigned char)lx->s[lx->lc_off] & 0xC0) != 0x80) {
            lx->lc_col++;
        }
    }
    *line = lx->lc_line;
    *col = lx->lc_col;
}

__attribute__((format(printf, 3, 4))) static int lexer_fail(struct lexer *lx, size_t off,
                                                            const char *fmt, ...)
{
    va_list ap;
    lx->err->kind = JINJA_ERROR_SYNTAX;
    lexer_where(lx, off, &lx->err->line, &lx->err->column);
    va_start(ap, fmt);
    vsnprintf(lx->err->message, sizeof lx->err->message, fmt, ap);
    va_end(ap);
    return -1;
}

static struct jtok *lexer_push(struct lexer *lx, enum jtok_kind kind, size_t off, const char *text,
                               size_t len)
{
    struct jtok *t;
    lx->toks = xgrow(lx->toks, &lx->cap, lx->ntoks + 1, sizeof *lx->toks);
    t = &lx->toks[lx->ntoks++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    lexer_where(lx, off, &t->line, &t->col);
    t->len = text ? len : 0;
    t->text = xmalloc(t->len + 1); /* not xstrndup: string literals may hold NUL bytes */
    if (t->len)
        memcpy(t->text, text, t->len);
    t->text[t->len] = '\0';
    return t;
}

/* Python's \s for one code point at s[i]; *adv gets its byte length. */
static bool lexer_space_at(const char *s, size_t n, size_t i, size_t *adv)
{
    size_t p = i;
    uint32_t cp = jinja_utf8_next(s, n, &p);
    *adv = p - i;
    return jinja_is_py_space(cp);
}

static size_t lexer_skip_space(const char *s, size_t n, size_t i)
{
    size_t adv;
    while (i < n && lexer_space_at(s, n, i, &adv))
        i += adv;
    return i;
}

/* Length of text[0..len) once trailing Python whitespace is removed. */
static size_t lexer_rstrip_len(const char *text, size_t len)
{
    size_t i = 0, keep = 0, adv;
    while (i < len) {
        if (!lexer_space_at(text, len, i, &adv))
            keep = i + adv;
        i += adv;
    }
    return keep;
}

static bool lexer_all_space(const char *text, size_t len)
{
    return len > 0 && lexer_rstrip_len(text, len) == 0;
}

/* Emits the text before a tag, applying `-`, `+` and lstrip_blocks. kind is the tag's second
 * character ('{', '%', '#'), sign the character after it. */
static void lexer_emit_text(struct lexer *lx, size_t start, size_t end, char kind, char sign)
{
    const char *text = lx->s + start;
    size_t len = end - start;
    if (sign == '-') {
        len = lexer_rstrip_len(text, len);
    } else if (kind != '{' && sign != '+' && lx->opt->lstrip_blocks) {
        size_t l_pos = len;
        while (l_pos > 0 && text[l_pos - 1] != '\n')
            l_pos--;
        bool line_starting = start == 0 || lx->s[start - 1] == '\n';
        if ((l_pos > 0 || line_starting) && lexer_all_space(text + l_pos, len - l_pos))
            len = l_pos;
    }
    if (len > 0)
        lexer_push(lx, JTOK_DATA, start, text, len);
}

/* After a block or comment tag ends at lx->pos with the given sign before its closing
 * characters: apply `-` or trim_blocks. */
static void lexer_after_tag(struct lexer *lx, char sign, bool block)
{
    if (sign == '-')
        lx->strip_next = true;
    else if (block && sign != '+' && lx->opt->trim_blocks && lx->pos < lx->n &&
             lx->s[lx->pos] == '\n')
        lx->pos++;
}

static int lexer_hex(const char *s, size_t n, size_t i, int digits, uint32_t *out)
{
    uint32_t v = 0;
    for (int k = 0; k < digits; k++) {
        if (i + k >= n)
            return -1;
        char c = s[i + k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + (uint32_t)d;
    }
    *out = v;
    return 0;
}

/* A string literal starting at the quote at lx->pos, decoded like Python's unicode-escape. */
static int lexer_string(struct lexer *lx)
{
    const char *s = lx->s;
    size_t start = lx->pos, i = lx->pos + 1;
    char q = s[start];
    struct jbuf b = {0};
    while (i < lx->n && s[i] != q) {
        if (s[i] != '\\') {
            jbuf_addc(&b, s[i++]);
            continue;
        }
        if (i + 1 >= lx->n)
            break;
        char c = s[i + 1];
        uint32_t cp;
        i += 2;
        switch (c) {
        case '\n':
            break;
        case '\\':
        case '\'':
        case '"':
            jbuf_addc(&b, c);
            break;
        case 'n':
            jbuf_addc(&b, '\n');
            break;
        case 't':
            jbuf_addc(&b, '\t');
            break;
        case 'r':
            jbuf_addc(&b, '\r');
            break;
        case 'b':
            jbuf_addc(&b, '\b');
            break;
        case 'f':
            jbuf_addc(&b, '\f');
            break;
        case 'v':
            jbuf_addc(&b, '\v');
            break;
        case 'a':
            jbuf_addc(&b, '\a');
            break;
        case 'x':
        case 'u':
        case 'U': {
            int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            if (lexer_hex(s, lx->n, i, digits, &cp) != 0 || cp > 0x10FFFF ||
                (cp >= 0xD800 && cp <= 0xDFFF)) {
                jbuf_free(&b);
                return lexer_fail(lx, i - 2, "invalid \\%c escape in string literal", c);
            }
            i += (size_t)digits;
            jinja_utf8_put(&b, cp);
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                cp = (uint32_t)(c - '0');
                for (int k = 0; k < 2 && i < lx->n && s[i] >= '0' && s[i] <= '7'; k++)
                    cp = cp * 8 + (uint32_t)(s[i++] - '0');
                jinja_utf8_put(&b, cp);
            } else {
                jbuf_addc(&b, '\\');
                jbuf_addc(&b, c);
            }
        }
    }
    if (i >= lx->n) {
        jbuf_free(&b);
        return lexer_fail(lx, start, "unterminated string literal");
    }
    lexer_push(lx, JTOK_STRING, start, b.p, b.len);
    jbuf_free(&b);
    lx->pos = i + 1;
    return 0;
}

static bool lexer_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Digits with single underscores between them; returns the end. */
static size_t lexer_digits(const char *s, size_t n, size_t i)
{
    while (i < n && (lexer_digit(s[i]) || (s[i] == '_' && i + 1 < n && lexer_digit(s[i + 1]))))
        i++;
    return i;
}

static int lexer_number(struct lexer *lx)
{
    const char *s = lx->s;
    size_t start = lx->pos, i = lexer_digits(s, lx->n, start);
    bool is_float = false;
    if (i + 1 < lx->n && s[i] == '.' && lexer_digit(s[i + 1])) {
        is_float = true;
        i = lexer_digits(s, lx->n, i + 1);
    }
    if (i < lx->n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < lx->n && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j < lx->n && lexer_digit(s[j])) {
            is_float = true;
            i = lexer_digits(s, lx->n, j);
        }
    }
    char buf[128];
    size_t k = 0;
    for (size_t p = start; p < i && k + 1 < sizeof buf; p++)
        if (s[p] != '_')
            buf[k++] = s[p];
    buf[k] = '\0';
    if (i - start >= sizeof buf - 1)
        return lexer_fail(lx, start, "number literal too long");
    struct jtok *t = lexer_push(lx, is_float ? JTOK_FLOAT : JTOK_INT, start, s + start, i - start);
    if (is_float) {
        t->fval = strtod(buf, NULL);
    } else {
        char *end;
        errno = 0;
        long long v = strtoll(buf, &end, 10);
        if (errno != 0)
            return lexer_fail(lx, start, "integer literal out of range");
        t->ival = v;
    }
    lx->pos = i;
    return 0;
}

static const char *const lexer_ops2[] = {"//", "**", "==", "!=", "<=", ">="};
static const char lexer_ops1[] = "+-/*%~[](){}<>=.:|,;";

/* Tokens inside {{ }} or {% %} until the closing tag (end is "}}" or "%}"). */
static int lexer_tag(struct lexer *lx, bool block)
{
    char stack[64];
    int depth = 0;
    const char *s = lx->s;
    size_t tag_start = lx->pos;
    for (;;) {
        lx->pos = lexer_skip_space(s, lx->n, lx->pos);
        if (lx->pos >= lx->n)
            return lexer_fail(lx, tag_start, "unexpected end of template, expected '%s'",
                              block ? "%}" : "}}");
        size_t p = lx->pos;
        char c = s[p];
        if (depth == 0) {
            char e1 = block ? '%' : '}';
            char sign = (c == '-' || (block && c == '+')) ? c : 0;
            size_t q = sign ? p + 1 : p;
            if (q + 1 < lx->n && s[q] == e1 && s[q + 1] == '}') {
                lexer_push(lx, block ? JTOK_BLOCK_END : JTOK_VAR_END, p, NULL, 0);
                lx->pos = q + 2;
                lexer_after_tag(lx, sign, block);
                return 0;
            }
        }
        if (c == '\'' || c == '"') {
            if (lexer_string(lx) != 0)
                return -1;
            continue;
        }
        if (lexer_digit(c)) {
            if (lexer_number(lx) != 0)
                return -1;
            continue;
        }
        if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            size_t i = p;
            while (i < lx->n && (s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') ||
                                 (s[i] >= 'A' && s[i] <= 'Z') || lexer_digit(s[i])))
                i++;
            lexer_push(lx, JTOK_NAME, p, s + p, i - p);
            lx->pos = i;
            continue;
        }
        size_t oplen = 0;
        for (size_t k = 0; k < sizeof lexer_ops2 / sizeof *lexer_ops2; k++)
            if (p + 1 < lx->n && s[p] == lexer_ops2[k][0] && s[p + 1] == lexer_ops2[k][1])
                oplen = 2;
        if (!oplen && c != '\0' && strchr(lexer_ops1, c))
            oplen = 1;
        if (!oplen)
            return lexer_fail(lx, p, "unexpected character '%c'", c);
        if (oplen == 1 && (c == '(' || c == '[' || c == '{')) {
            if (depth >= (int)sizeof stack)
                return lexer_fail(lx, p, "brackets nested too deeply");
            stack[depth++] = c == '(' ? ')' : c == '[' ? ']' : '}';
        } else if (oplen == 1 && (c == ')' || c == ']' || c == '}')) {
            if (depth == 0)
                return lexer_fail(lx, p, "unexpected '%c'", c);
            if (stack[depth - 1] != c)
                return lexer_fail(lx, p, "unexpected '%c', expected '%c'", c, stack[depth - 1]);
            depth--;
        }
        lexer_push(lx, JTOK_OP, p, s + p, oplen);
        lx->pos = p + oplen;
    }
}

/* {% raw %} ... {% endraw %}: lx->pos is just after "{%". Returns 1 when this is not a raw tag. */
static int lexer_raw(struct lexer *lx, size_t tag_start)
{
    const char *s = lx->s;
    size_t i = lx->pos;
    if (i < lx->n && (s[i] == '-' || s[i] == '+'))
        i++;
    i = lexer_skip_space(s, lx->n, i);
    if (i + 3 > lx->n || memcmp(s + i, "raw", 3) != 0)
        return 1;
    i = lexer_skip_space(s, lx->n, i + 3);
    bool strip = false;
    if (i < lx->n && s[i] == '-') {
        strip = true;
        i++;
    }
    if (i + 2 > lx->n || s[i] != '%' || s[i + 1] != '}')
        return 1;
    i += 2;
    if (strip)
        i = lexer_skip_space(s, lx->n, i);
    size_t body = i;
    for (;;) {
        const char *m = memmem(s + i, lx->n - i, "{%", 2);
        if (!m)
            return lexer_fail(lx, tag_start, "missing end of raw directive");
        size_t t = (size_t)(m - s), j = t + 2;
        char open_sign = 0;
        if (j < lx->n && (s[j] == '-' || s[j] == '+'))
            open_sign = s[j++];
        j = lexer_skip_space(s, lx->n, j);
        if (j + 6 <= lx->n && memcmp(s + j, "endraw", 6) == 0) {
            j = lexer_skip_space(s, lx->n, j + 6);
            char close_sign = 0;
            if (j < lx->n && (s[j] == '-' || s[j] == '+'))
                close_sign = s[j++];
            if (j + 2 <= lx->n && s[j] == '%' && s[j + 1] == '}') {
                size_t len = t - body;
                if (open_sign == '-')
                    len = lexer_rstrip_len(s + body, len);
                if (len > 0)
                    lexer_push(lx, JTOK_DATA, body, s + body, len);
                lx->pos = j + 2;
                lexer_after_tag(lx, close_sign, true);
                return 0;
            }
        }
        i = t + 2;
    }
}

static int lexer_run(struct lexer *lx)
{
    const char *s = lx->s;
    while (lx->pos <= lx->n) {
        if (lx->strip_next) {
            lx->pos = lexer_skip_space(s, lx->n, lx->pos);
            lx->strip_next = false;
        }
        size_t start = lx->pos, t = start;
        const char *m = NULL;
        while (t + 1 < lx->n) {
            m = memchr(s + t, '{', lx->n - t - 1);
            if (!m)
                break;
            t = (size_t)(m - s);
            if (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#')
                break;
            t++;
            m = NULL;
        }
        if (!m) {
            if (start < lx->n)
                lexer_push(lx, JTOK_DATA, start, s + start, lx->n - start);
            lexer_push(lx, JTOK_EOF, lx->n, NULL, 0);
            return 0;
        }
        char kind = s[t + 1];
        char sign = t + 2 < lx->n ? s[t + 2] : 0;
        lexer_emit_text(lx, start, t, kind, sign);
        lx->pos = t + 2;
        if (sign == '-' || sign == '+')
            lx->pos++;
        if (kind == '#') {
            const char *e = memmem(s + lx->pos, lx->n - lx->pos, "#}", 2);
            if (!e)
                return lexer_fail(lx, t, "missing end of comment tag");
            size_t end = (size_t)(e - s);
            char csign = end > lx->pos && (s[end - 1] == '-' || s[end - 1] == '+') ? s[end - 1] : 0;
            lx->pos = end + 2;
            lexer_after_tag(lx, csign, true);
            continue;
        }
        if (kind == '%') {
            int r = lexer_raw(lx, t);
            if (r < 0)
                return -1;
            if (r == 0)
                continue;
        }
        lexer_push(lx, kind == '%' ? JTOK_BLOCK_BEGIN : JTOK_VAR_BEGIN, t, NULL, 0);
        if (lexer_tag(lx, kind == '%') != 0)
            return -1;
    }
    lexer_push(lx, JTOK_EOF, lx->n, NULL, 0);
    return 0;
}

int jinja_lex_source(const char *src, size_t len, const struct jinja_options *opt,
                     struct jtok **toks, size_t *ntoks, struct jinja_error *err)
{
    struct lexer lx = {.opt = opt, .err = err, .lc_line = 1, .lc_col = 1};
    char *norm = xmalloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            norm[n++] = src[i];
        }
    }
    if (!opt->keep_trailing_newline && n > 0 && norm[n - 1] == '\n')
        n--;
    norm[n] = '\0';
    lx.s = norm;
    lx.n = n;
    int rc = lexer_run(&lx);
    free(norm);
    if (rc != 0) {
        jinja_lex_free(lx.toks, lx.ntoks);
        return -1;
    }
    *toks = lx.toks;
    *ntoks = lx.ntoks;
    return 0;
}

void jinja_lex_free(struct jtok *toks, size_t n)
{
    if (!toks)
        return;
    for (size_t i = 0; i < n; i++)
        free(toks[i].text);
    free(toks);
}
