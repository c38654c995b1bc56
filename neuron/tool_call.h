/*
 * neuron/tool_call.h — turns model output with <tool_call> blocks into text plus structured calls.
 *
 * Contract: two block formats are recognised between "<tool_call>" and "</tool_call>":
 *   - Hermes / Qwen2.5 / Qwen3 JSON: {"name": "...", "arguments": {...}} ("parameters" is accepted
 *     for "arguments"; arguments given as a JSON string holding an object are decoded);
 *   - Qwen3.5 / Qwen3-Coder XML: <function=NAME> <parameter=P>value</parameter> ... </function>,
 *     where each value is one line or many; values are typed with the tool's JSON schema when the
 *     tool list is given (string parameters stay strings, integers/numbers/booleans/objects/arrays
 *     are decoded) and are strings otherwise.
 * Each call comes back as a name and its arguments as compact JSON object text (what the OpenAI API
 * puts in function.arguments). A block that does not parse stays in the content as text; a final
 * block missing its closing tag is still a call when its body parses.
 * Content is the text outside the blocks, except that whitespace right before a "<tool_call>"
 * tag, right after a "</tool_call>" tag and at the very end (once a call was found) is dropped.
 * The streaming parser gives exactly the same content and calls as the one-shot parser, however
 * the text is split into chunks, and never shows clients any part of a tool-call tag: text that
 * might be the start of "<tool_call>" is held back until it is known not to be.
 * Nothing here fails except by aborting on out-of-memory; any input is accepted.
 */
#ifndef CORTEX_NEURON_TOOL_CALL_H
#define CORTEX_NEURON_TOOL_CALL_H

#include <jansson.h>
#include <stddef.h>

struct tool_call {
    char *name;      /* owned */
    char *arguments; /* owned: JSON object text, e.g. {"city":"Paris"} */
};

/* What a parse (or one streaming step) produced. Zero-initialise before use; the functions append
 * to it; release with tool_call_output_free(). content is NUL-terminated (NULL when empty). */
struct tool_call_output {
    char *content;
    size_t content_len;
    struct tool_call *calls;
    size_t n_calls;
};

void tool_call_output_free(struct tool_call_output *out);

/* Parses a complete model answer. tools (an OpenAI tool list, borrowed) may be NULL. */
void tool_call_parse(const char *text, size_t len, const json_t *tools,
                     struct tool_call_output *out);

struct tool_call_stream;

/* tools is borrowed and must outlive the stream (NULL for none). Free with _destroy(). */
struct tool_call_stream *tool_call_stream_create(const json_t *tools);
void tool_call_stream_destroy(struct tool_call_stream *s);
/* Feeds the next piece of model output; appends to out the text that is now safe to show and the
 * calls whose blocks closed. */
void tool_call_stream_feed(struct tool_call_stream *s, const char *chunk, size_t len,
                           struct tool_call_output *out);
/* The output has ended: appends whatever was held back. The stream accepts nothing after this. */
void tool_call_stream_finish(struct tool_call_stream *s, struct tool_call_output *out);

#endif
