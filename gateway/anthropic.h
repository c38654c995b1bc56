/*
 * gateway/anthropic.h — the Anthropic Messages API translated to and from the OpenAI chat
 * dialect the neurons speak: requests, responses and streams (shared/API.md, "Translation").
 *
 * Contract: pure functions over jansson values; no I/O, no globals, any thread. Inputs are
 * borrowed and never modified; every json_t handed out is a new reference the caller
 * json_decref()s. Bad client input comes back as -1 with a struct error (ERR_INVALID_REQUEST or
 * ERR_UNSUPPORTED) whose param names the member ("messages[1].content[0].source"); a response
 * from the model server that cannot be understood is ERR_UPSTREAM.
 *
 * Request (Anthropic in, OpenAI out):
 *   - system (string or text blocks; a Claude Code "x-anthropic-billing-header:" block is
 *     dropped, so the prompt prefix stays the same from request to request) becomes one
 *     leading system message; text blocks are joined with a blank line.
 *   - user blocks: text (adjacent ones joined with a blank line), image (base64 -> data URL,
 *     url -> as is) as image_url parts; every tool_result becomes a role "tool" message placed
 *     before the rest of that turn (content: string, or parts when it holds images; is_error
 *     prefixes the text with "Error: ").
 *   - assistant blocks: text -> content, tool_use -> tool_calls (arguments = compact JSON of
 *     input), thinking -> reasoning_content; redacted_thinking is dropped.
 *   - tools -> function tools (input_schema -> parameters, copied whole with any JSON-schema
 *     extras); tool_choice auto/any/tool/none -> auto/required/{function}/none;
 *     disable_parallel_tool_use -> parallel_tool_calls false; stop_sequences -> stop;
 *     temperature, top_p, top_k kept; max_tokens required and lowered to the configured cap;
 *     stream -> stream with stream_options.include_usage. metadata, thinking, cache_control,
 *     service_tier and unknown members are ignored. Tool ids pass through unchanged (the pair
 *     tool_use.id / tool_result.tool_use_id stays consistent).
 *
 * Response (OpenAI out, Anthropic in): content blocks thinking, text, tool_use (ids made by
 * anthropic_tool_id()); finish_reason -> stop_reason: stop -> end_turn, or stop_sequence when
 * the engine reports the matched string in choices[0].stop_reason; length -> max_tokens;
 * tool_calls (or any finish with tool calls) -> tool_use; content_filter -> refusal. usage:
 * input_tokens = prompt_tokens - cached, cache_read_input_tokens = cached
 * (prompt_tokens_details.cached_tokens), output_tokens = completion_tokens.
 * The engine's reasoning text is read from "reasoning_content" or "reasoning".
 *
 * Stream: an anthropic_stream is fed the neuron's chat.completion.chunk objects and writes the
 * Anthropic event stream (see anthropic_stream_create).
 */
#ifndef CORTEX_GATEWAY_ANTHROPIC_H
#define CORTEX_GATEWAY_ANTHROPIC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

#define ANTHROPIC_WUR __attribute__((warn_unused_result))

/* Zero-initialise; zero means the default. */
struct anthropic_options {
    int64_t max_tokens_cap; /* max_tokens above it is lowered to it (clients ask 32k-64k); 0: none */
    bool count_tokens;      /* the body of /v1/messages/count_tokens: max_tokens not required */
};

/*
 * Translates an Anthropic Messages request body into an OpenAI chat request. opt may be NULL.
 * Returns 0 with *out a new object, or -1 with err set and *out NULL.
 */
int anthropic_request_to_openai(const json_t *req, const struct anthropic_options *opt,
                                json_t **out, struct error *err) ANTHROPIC_WUR;

/*
 * Translates a non-streamed OpenAI chat.completion into an Anthropic message. message_id NULL
 * makes a fresh "msg_…" id; model NULL takes the completion's own model. Returns 0 with *out a
 * new object, or -1 with err set (ERR_UPSTREAM: no choices[0].message).
 */
int anthropic_response_from_openai(const json_t *chat, const char *message_id, const char *model,
                                   json_t **out, struct error *err) ANTHROPIC_WUR;

/* Size of a buffer that holds any id anthropic_tool_id() writes, NUL included. */
#define ANTHROPIC_TOOL_ID_SIZE 128

/*
 * The Anthropic tool_use id for the engine's tool-call id, deterministically: an id already of
 * the form toolu_[A-Za-z0-9_-]+ stays; otherwise "toolu_" + the id without a "call_" prefix,
 * with every character outside [A-Za-z0-9_-] made '_' (and cut to fit). An absent or empty id
 * gets a fresh random "toolu_…". Writes into out (ANTHROPIC_TOOL_ID_SIZE bytes); returns out.
 */
char *anthropic_tool_id(const char *openai_id, char *out);

/*
 * The stream translator. Events are appended to a caller's buf as SSE text
 * ("event: <type>\ndata: <one-line JSON>\n\n"), ready to write to the client:
 *   message_start (message with empty content) and a ping, when started; then per block
 *   i = 0, 1, …: content_block_start, deltas, content_block_stop — a text block opens on the first
 *   non-empty content, a thinking block on reasoning text, a tool_use block on each new tool-call
 *   index (arguments -> input_json_delta), and the open block is closed before another opens
 *   (one block open at a time); at the end the open block closes, then message_delta
 *   (stop_reason, stop_sequence, usage with output_tokens) and message_stop.
 * Tool calls are keyed on their index, never on their id; indexes must not go back to a call
 * that has already been closed (ERR_UPSTREAM). When the upstream stream carries no usage,
 * output_tokens counts the content deltas received.
 * A failure (an upstream error chunk, a malformed chunk, an early end) produces one
 * "event: error" and ends the stream: nothing is emitted after it, and never a message_stop.
 * Single-threaded: one owner at a time.
 */
struct anthropic_stream;

/* message_id NULL makes a fresh "msg_…"; model is the name to report (copied). Never NULL;
 * free with anthropic_stream_destroy(). */
struct anthropic_stream *anthropic_stream_create(const char *message_id, const char *model);
void anthropic_stream_destroy(struct anthropic_stream *s); /* accepts NULL */

/* Emits message_start (usage.input_tokens = input_tokens, 0 when unknown) and a ping, once;
 * later calls do nothing. Feeding starts the stream implicitly. */
void anthropic_stream_start(struct anthropic_stream *s, int64_t input_tokens, struct buf *out);

/*
 * Feeds one parsed chunk. Returns 0 to go on, or -1 when the chunk ended the stream with an
 * error (an {"error":…} chunk, or something that is not a chunk object): the error event is in
 * out and err (may be NULL) holds the failure. After the end, returns 0 and emits nothing.
 */
int anthropic_stream_feed(struct anthropic_stream *s, const json_t *chunk, struct buf *out,
                          struct error *err) ANTHROPIC_WUR;

/*
 * Feeds the data of one upstream SSE event: "[DONE]" ends the stream (anthropic_stream_end),
 * anything else is parsed and fed. Returns 0 to go on, 1 when the stream completed
 * (message_stop is in out), -1 when it failed (as anthropic_stream_feed, and a "[DONE]" before
 * any finish_reason, and data that is not JSON). After the end it returns the stream's outcome
 * again (1 or -1), emits nothing and leaves err alone.
 */
int anthropic_stream_feed_data(struct anthropic_stream *s, const char *data, size_t len,
                               struct buf *out, struct error *err) ANTHROPIC_WUR;

/*
 * The upstream stream ended cleanly. If a finish_reason arrived, closes the open block and
 * emits message_delta and message_stop (returns 0); otherwise the answer is incomplete: emits
 * an error event (ERR_UPSTREAM) and returns -1 with err set. Does nothing after the end.
 */
int anthropic_stream_end(struct anthropic_stream *s, struct buf *out,
                         struct error *err) ANTHROPIC_WUR;

/* Ends the stream with an error event for e (client disconnects need no event: just stop
 * feeding). Does nothing after the end. */
void anthropic_stream_fail(struct anthropic_stream *s, const struct error *e, struct buf *out);

/* Whether the stream has ended (message_stop or error emitted). */
bool anthropic_stream_done(const struct anthropic_stream *s);

/* The token counts the stream has reported so far (as in the usage the client sees), for
 * accounting. Pointers may be NULL. */
void anthropic_stream_usage(const struct anthropic_stream *s, int64_t *input_tokens,
                            int64_t *output_tokens, int64_t *cached_tokens);

/* Appends a keep-alive "event: ping" to out. */
void anthropic_sse_ping(struct buf *out);

/* Appends one SSE event "event: <name>\ndata: <json>\n\n" to out. */
void anthropic_sse_event(struct buf *out, const char *name, const json_t *data);

#endif
