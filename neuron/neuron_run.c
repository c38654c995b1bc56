/*
 * neuron/neuron_run.c — neuron-run: try a model file from the command line.
 *
 * Loads a model (GGUF file or HF directory) on the CPU backend, renders the prompt with the
 * model's chat template (or the one --chat-template names; or feeds it raw with --raw), streams the answer to stdout as it is
 * generated and prints prompt and decode speed to stderr (and as JSON with --stats-json).
 */
#include "engine.h"
#include "generate.h"
#include "timing.h"
#include "xalloc.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUN_MAX_STOPS 16

struct run_args {
    const char *model;
    char *prompt;        /* owned */
    char *chat_template; /* owned: --chat-template's text, or NULL */
    const char *system;
    bool raw;
    bool ignore_eos;
    bool quiet;
    bool show_prompt;
    int threads;
    int64_t ctx;
    const char *device;
    const char *stats_json;
    const char *stops[RUN_MAX_STOPS];
    size_t n_stops;
    struct gen_params gen;
};

static void run_usage(FILE *f)
{
    fprintf(f,
            "Usage: neuron-run -m MODEL (-p PROMPT | -f FILE) [options]\n"
            "\n"
            "Loads MODEL (a .gguf file or a Hugging Face model directory), answers the prompt and\n"
            "prints the speed. The prompt goes through the model's chat template as one user\n"
            "message unless --raw is given.\n"
            "\n"
            "  -m, --model PATH        model file or directory (required)\n"
            "  -p, --prompt TEXT       the prompt\n"
            "  -f, --file PATH         read the prompt from a file ('-' for stdin)\n"
            "  -s, --system TEXT       a system message (chat mode)\n"
            "      --raw               feed the prompt as is, without the chat template\n"
            "      --chat-template FILE  use this Jinja chat template instead of the model's\n"
            "  -n, --max-tokens N      new tokens at most (default 256)\n"
            "      --temp T            temperature; 0 = greedy (default 0.7)\n"
            "      --top-k K           keep the K most likely tokens (default 40; 0 = off)\n"
            "      --top-p P           nucleus sampling (default 0.95; 1 = off)\n"
            "      --min-p P           drop tokens below P x the best one (default 0.05)\n"
            "      --repeat-penalty R  repetition penalty (default 1 = off)\n"
            "      --seed N            seed for reproducible sampling\n"
            "      --stop TEXT         stop before this text (repeatable, up to %d)\n"
            "      --ignore-eos        keep generating past end-of-text tokens\n"
            "  -t, --threads N         CPU threads (default: all)\n"
            "      --device DEV        cpu (default) or cuda:N, the GPU to run on (CUDA builds)\n"
            "  -c, --ctx N             context length in tokens (default: the model's, at most "
            "8192)\n"
            "      --stats-json FILE   write timings as JSON to FILE\n"
            "      --show-prompt       print the rendered prompt and its token count to stderr\n"
            "  -q, --quiet             print only the answer\n"
            "  -h, --help              this text\n",
            RUN_MAX_STOPS);
}

static int run_parse_number(const char *opt, const char *text, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || v < lo || v > hi) {
        fprintf(stderr, "neuron-run: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi,
                text);
        return -1;
    }
    *out = v;
    return 0;
}

static char *run_read_file(const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "neuron-run: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *text = xmalloc(cap);
    size_t got;
    while ((got = fread(text + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len - 1 == 0)
            text = xgrow(text, &cap, cap * 2, 1);
    }
    text[len] = '\0';
    if (f != stdin)
        fclose(f);
    return text;
}

static int run_parse_args(int argc, char **argv, struct run_args *a)
{
    enum {
        OPT_RAW = 256,
        OPT_TEMP,
        OPT_TOPK,
        OPT_TOPP,
        OPT_MINP,
        OPT_REPEAT,
        OPT_SEED,
        OPT_STOP,
        OPT_IGNORE_EOS,
        OPT_STATS,
        OPT_SHOW_PROMPT,
        OPT_DEVICE,
        OPT_CHAT_TEMPLATE,
    };
    static const struct option opts[] = {
            {"model", required_argument, NULL, 'm'},
            {"prompt", required_argument, NULL, 'p'},
            {"file", required_argument, NULL, 'f'},
            {"system", required_argument, NULL, 's'},
            {"raw", no_argument, NULL, OPT_RAW},
            {"chat-template", required_argument, NULL, OPT_CHAT_TEMPLATE},
            {"max-tokens", required_argument, NULL, 'n'},
            {"temp", required_argument, NULL, OPT_TEMP},
            {"top-k", required_argument, NULL, OPT_TOPK},
            {"top-p", required_argument, NULL, OPT_TOPP},
            {"min-p", required_argument, NULL, OPT_MINP},
            {"repeat-penalty", required_argument, NULL, OPT_REPEAT},
            {"seed", required_argument, NULL, OPT_SEED},
            {"stop", required_argument, NULL, OPT_STOP},
            {"ignore-eos", no_argument, NULL, OPT_IGNORE_EOS},
            {"threads", required_argument, NULL, 't'},
            {"device", required_argument, NULL, OPT_DEVICE},
            {"ctx", required_argument, NULL, 'c'},
            {"stats-json", required_argument, NULL, OPT_STATS},
            {"show-prompt", no_argument, NULL, OPT_SHOW_PROMPT},
            {"quiet", no_argument, NULL, 'q'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
    };
    gen_params_init(&a->gen);
    a->gen.max_tokens = 256;
    a->gen.sample.temperature = 0.7f;
    a->gen.sample.top_k = 40;
    a->gen.sample.top_p = 0.95f;
    a->gen.sample.min_p = 0.05f;
    double v;
    int c;
    while ((c = getopt_long(argc, argv, "m:p:f:s:n:t:c:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a->model = optarg;
            break;
        case 'p':
            free(a->prompt);
            a->prompt = xstrdup(optarg);
            break;
        case 'f':
            free(a->prompt);
            if (!(a->prompt = run_read_file(optarg)))
                return -1;
            break;
        case 's':
            a->system = optarg;
            break;
        case OPT_RAW:
            a->raw = true;
            break;
        case OPT_CHAT_TEMPLATE:
            free(a->chat_template);
            if (!(a->chat_template = run_read_file(optarg)))
                return -1;
            break;
        case 'n':
            if (run_parse_number("--max-tokens", optarg, 1, 1e9, &v))
                return -1;
            a->gen.max_tokens = (int64_t)v;
            break;
        case OPT_TEMP:
            if (run_parse_number("--temp", optarg, 0, 100, &v))
                return -1;
            a->gen.sample.temperature = (float)v;
            break;
        case OPT_TOPK:
            if (run_parse_number("--top-k", optarg, 0, 1e9, &v))
                return -1;
            a->gen.sample.top_k = (int)v;
            break;
        case OPT_TOPP:
            if (run_parse_number("--top-p", optarg, 0, 1, &v))
                return -1;
            a->gen.sample.top_p = (float)v;
            break;
        case OPT_MINP:
            if (run_parse_number("--min-p", optarg, 0, 1, &v))
                return -1;
            a->gen.sample.min_p = (float)v;
            break;
        case OPT_REPEAT:
            if (run_parse_number("--repeat-penalty", optarg, 0.01, 100, &v))
                return -1;
            a->gen.sample.repetition_penalty = (float)v;
            break;
        case OPT_SEED:
            if (run_parse_number("--seed", optarg, 0, 1.8e19, &v))
                return -1;
            a->gen.sample.seed = strtoull(optarg, NULL, 10);
            a->gen.sample.has_seed = true;
            break;
        case OPT_STOP:
            if (a->n_stops == RUN_MAX_STOPS) {
                fprintf(stderr, "neuron-run: at most %d --stop strings\n", RUN_MAX_STOPS);
                return -1;
            }
            a->stops[a->n_stops++] = optarg;
            break;
        case OPT_IGNORE_EOS:
            a->ignore_eos = true;
            break;
        case 't':
            if (run_parse_number("--threads", optarg, 1, 1024, &v))
                return -1;
            a->threads = (int)v;
            break;
        case OPT_DEVICE:
            a->device = optarg;
            break;
        case 'c':
            if (run_parse_number("--ctx", optarg, 16, 1 << 24, &v))
                return -1;
            a->ctx = (int64_t)v;
            break;
        case OPT_STATS:
            a->stats_json = optarg;
            break;
        case OPT_SHOW_PROMPT:
            a->show_prompt = true;
            break;
        case 'q':
            a->quiet = true;
            break;
        case 'h':
            run_usage(stdout);
            exit(0);
        default:
            run_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "neuron-run: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    if (!a->model || !a->prompt) {
        fprintf(stderr, "neuron-run: -m MODEL and a prompt (-p or -f) are required (see --help)\n");
        return -1;
    }
    a->gen.stops = a->stops;
    a->gen.n_stops = a->n_stops;
    a->gen.ignore_eos = a->ignore_eos;
    return 0;
}

/* The prompt as token ids: through the chat template unless --raw. */
static int run_prompt_ids(const struct engine *e, const struct run_args *a,
                          struct tokenizer_ids *ids, char *err, size_t errlen)
{
    if (a->raw || !e->chat)
        return engine_tokenize(e, a->prompt, strlen(a->prompt), false, ids, err, errlen);
    json_t *messages = json_array();
    if (a->system)
        json_array_append_new(messages,
                              json_pack("{s:s, s:s}", "role", "system", "content", a->system));
    json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "user", "content", a->prompt));
    char *text = NULL;
    size_t len = 0;
    int rc = engine_render_chat(e, messages, NULL, true, NULL, &text, &len, err, errlen);
    if (rc == 0)
        rc = engine_tokenize(e, text, len, true, ids, err, errlen);
    if (rc == 0 && a->show_prompt)
        fprintf(stderr, "--- prompt (%zu tokens) ---\n%s\n--- end of prompt ---\n", ids->n, text);
    free(text);
    json_decref(messages);
    return rc;
}

static int run_write_stats(const char *path, const struct run_args *a, const struct engine *e,
                           const struct gen_stats *st, const char *finish)
{
    json_t *j =
            json_pack("{s:I, s:f, s:I, s:f, s:f, s:i, s:s, s:s, s:s}", "prompt_tokens",
                      (json_int_t)st->prompt_tokens, "prompt_ms", st->prompt_ms, "decode_tokens",
                      (json_int_t)(st->completion_tokens - 1), "decode_ms", st->decode_ms,
                      "first_token_ms", st->first_token_ms, "threads", model_threads(e->model),
                      "model", a->model, "backend", "cpu", "finish_reason", finish);
    int rc = json_dump_file(j, path, JSON_INDENT(2));
    json_decref(j);
    if (rc != 0)
        fprintf(stderr, "neuron-run: cannot write %s\n", path);
    return rc;
}

int main(int argc, char **argv)
{
    struct run_args a = {0};
    struct engine *e = NULL;
    struct generation *g = NULL;
    struct tokenizer_ids ids = {0};
    char err[1024] = "";
    int status = 1;
    if (run_parse_args(argc, argv, &a) != 0)
        goto out;
    uint64_t t0 = timing_now_ns();
    struct engine_options eo = {
            .threads = a.threads,
            .max_context = a.ctx,
            .chat_template = a.chat_template,
            .device = a.device,
    };
    if (!a.quiet)
        fprintf(stderr, "loading %s ...\n", a.model);
    if (engine_open(a.model, &eo, &e, err, sizeof err) != 0) {
        fprintf(stderr, "neuron-run: %s\n", err);
        goto out;
    }
    if (!a.quiet) {
        const struct model_config *mc = model_config(e->model);
        fprintf(stderr,
                "loaded %s (%s, %d layers, hidden %lld, vocab %lld) in %.0f ms on %s, %d "
                "threads\n",
                a.model, mc->arch_name, mc->n_layers, (long long)mc->hidden,
                (long long)mc->vocab_size, (double)(timing_now_ns() - t0) / 1e6,
                model_device(e->model), model_threads(e->model));
    }
    if (run_prompt_ids(e, &a, &ids, err, sizeof err) != 0 ||
        generation_create(e, ids.v, ids.n, &a.gen, &g, err, sizeof err) != 0) {
        fprintf(stderr, "neuron-run: %s\n", err);
        goto out;
    }
    while (generation_finish(g) == GEN_FINISH_NONE) {
        if (generation_step(e, &g, 1, 512, err, sizeof err) != 0) {
            fprintf(stderr, "\nneuron-run: %s\n", err);
            goto out;
        }
        struct gen_output o;
        generation_output(g, &o);
        if (o.text_len) {
            fwrite(o.text, 1, o.text_len, stdout);
            fflush(stdout);
        }
        generation_output_clear(g);
    }
    fputc('\n', stdout);
    struct gen_stats st;
    generation_stats(g, &st);
    if (!a.quiet) {
        int64_t decoded = st.completion_tokens > 0 ? st.completion_tokens - 1 : 0;
        fprintf(stderr,
                "\n[%s] prompt: %lld tokens in %.1f ms (%.1f tok/s); decode: %lld tokens in %.1f "
                "ms (%.1f tok/s)\n",
                gen_finish_name(generation_finish(g)), (long long)st.prompt_tokens, st.prompt_ms,
                st.prompt_ms > 0 ? (double)st.prompt_tokens * 1e3 / st.prompt_ms : 0.0,
                (long long)decoded, st.decode_ms,
                st.decode_ms > 0 ? (double)decoded * 1e3 / st.decode_ms : 0.0);
    }
    if (a.stats_json &&
        run_write_stats(a.stats_json, &a, e, &st, gen_finish_name(generation_finish(g))) != 0)
        goto out;
    status = 0;
out:
    generation_destroy(g);
    engine_close(e);
    free(ids.v);
    free(a.prompt);
    free(a.chat_template);
    return status;
}
