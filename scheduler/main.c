/*
 * scheduler/main.c — cortex-scheduler: start-up wiring only.
 *
 * Reads the settings table below (defaults < environment < flags), starts logging, the
 * /metrics endpoint and the runner (scheduler/runner.h), and runs it until SIGINT or SIGTERM,
 * which resigns the lease so a standby takes over at once. Fleet policy lives in PostgreSQL
 * (cortex.settings), not here; --tick and --lease only override two of those settings.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "runner.h"
#include "xalloc.h"

struct scheduler_config {
    char *db;
    char *name;
    int64_t tick_ms;
    int64_t lease_ms;
    char *listen;
    int64_t neuron_timeout_ms;
    int64_t neuron_attempts;
    int64_t neuron_backoff_ms;
    int64_t resend_after_ms;
    int64_t workers;
    char *log_level;
};

static struct scheduler_config cfg;

static const struct config_entry settings[] = {
        {.name = "db",
         .env = "CORTEX_PG",
         .type = CONFIG_TYPE_STRING,
         .def = "",
         .help = "PostgreSQL connection string or URI (empty: the libpq environment, PGHOST ...)",
         .target = &cfg.db},
        {.name = "name",
         .env = "CORTEX_SCHEDULER_NAME",
         .type = CONFIG_TYPE_STRING,
         .def = "",
         .help = "this scheduler's name as the lease holder (empty: host:pid)",
         .target = &cfg.name},
        {.name = "tick",
         .env = "CORTEX_SCHEDULER_TICK",
         .type = CONFIG_TYPE_DURATION,
         .def = "0",
         .min = "0",
         .max = "1h",
         .help = "planning pass interval besides NOTIFY wake-ups (0: the scheduler_tick setting)",
         .target = &cfg.tick_ms},
        {.name = "lease",
         .env = "CORTEX_SCHEDULER_LEASE",
         .type = CONFIG_TYPE_DURATION,
         .def = "0",
         .min = "0",
         .max = "1h",
         .help = "leader lease length (0: the lease_duration setting); a standby takes over "
                 "within one lease",
         .target = &cfg.lease_ms},
        {.name = "listen",
         .env = "CORTEX_SCHEDULER_LISTEN",
         .type = CONFIG_TYPE_STRING,
         .def = "127.0.0.1:31315",
         .help = "address of the /metrics and /healthz endpoint (empty: none)",
         .target = &cfg.listen},
        {.name = "neuron-timeout",
         .env = "CORTEX_SCHEDULER_NEURON_TIMEOUT",
         .type = CONFIG_TYPE_DURATION,
         .def = "5s",
         .min = "100ms",
         .max = "10m",
         .help = "timeout of one request to a neuron (load, unload, GET /models)",
         .target = &cfg.neuron_timeout_ms},
        {.name = "neuron-attempts",
         .env = "CORTEX_SCHEDULER_NEURON_ATTEMPTS",
         .type = CONFIG_TYPE_INT,
         .def = "3",
         .min = "1",
         .max = "20",
         .help = "attempts of a load or unload request before the placement fails (transport "
                 "errors and 5xx are retried; other 4xx are final)",
         .target = &cfg.neuron_attempts},
        {.name = "neuron-backoff",
         .env = "CORTEX_SCHEDULER_NEURON_BACKOFF",
         .type = CONFIG_TYPE_DURATION,
         .def = "500ms",
         .min = "10ms",
         .max = "1m",
         .help = "delay before the second attempt; doubles for each further one (at most 10x)",
         .target = &cfg.neuron_backoff_ms},
        {.name = "resend-after",
         .env = "CORTEX_SCHEDULER_RESEND_AFTER",
         .type = CONFIG_TYPE_DURATION,
         .def = "30s",
         .min = "1s",
         .max = "1h",
         .help = "tell a neuron again about a requested or unloading placement it has not acted "
                 "on for this long",
         .target = &cfg.resend_after_ms},
        {.name = "workers",
         .env = "CORTEX_SCHEDULER_WORKERS",
         .type = CONFIG_TYPE_INT,
         .def = "4",
         .min = "1",
         .max = "64",
         .help = "threads talking to neurons",
         .target = &cfg.workers},
        {.name = "log-level",
         .env = "CORTEX_LOG_LEVEL",
         .type = CONFIG_TYPE_STRING,
         .def = "info",
         .reloadable = true,
         .help = "trace, debug, info, warn, error or off",
         .target = &cfg.log_level},
};

#define N_SETTINGS (sizeof settings / sizeof settings[0])

static int stop_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    char c = 1;
    if (write(stop_pipe[1], &c, 1) < 0) {
        /* the pipe is full: a stop is already pending */
    }
    errno = saved;
}

static void handle_metrics(http_request_t *req, void *ud)
{
    char *text = metrics_render(ud);
    http_request_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
}

static void handle_healthz(http_request_t *req, void *ud)
{
    (void)ud;
    http_request_reply_text(req, 200, "ok\n");
}

int main(int argc, char **argv)
{
    char err[CONFIG_ERR_SIZE];
    int status = 1;
    struct metrics *m = NULL;
    runner_t *r = NULL;
    http_server_t *server = NULL;
    char *holder = NULL;
    int rc = config_parse(settings, N_SETTINGS, argc, argv, NULL, err, sizeof err);
    if (rc == CONFIG_PARSE_HELP) {
        char *help = config_help("cortex-scheduler",
                                 "Decides which nodes hold which models; one of several "
                                 "schedulers leads (docs/scheduler.md).",
                                 settings, N_SETTINGS);
        fputs(help, stdout);
        free(help);
        config_free(settings, N_SETTINGS);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "cortex-scheduler: %s\n", err);
        goto out;
    }
    enum log_level level;
    if (log_level_parse(cfg.log_level, &level) < 0) {
        fprintf(stderr, "cortex-scheduler: --log-level: unknown level '%s'\n", cfg.log_level);
        goto out;
    }
    log_set_level(level);
    log_set_component("scheduler");
    if (cfg.name[0] != '\0') {
        holder = xstrdup(cfg.name);
    } else {
        char host[256] = "localhost";
        if (gethostname(host, sizeof host) < 0)
            snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = '\0';
        holder = xasprintf("%s:%d", host, (int)getpid());
    }

    if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        LOG_ERROR("pipe: %s", strerror(errno));
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    m = metrics_create();
    struct runner_options ro = {.conninfo = cfg.db,
                                .holder = holder,
                                .tick_ms = cfg.tick_ms,
                                .lease_ms = cfg.lease_ms,
                                .resend_after_ms = cfg.resend_after_ms,
                                .dispatch = {.workers = (int)cfg.workers,
                                             .timeout_ms = cfg.neuron_timeout_ms,
                                             .connect_timeout_ms = cfg.neuron_timeout_ms < 2000
                                                                           ? cfg.neuron_timeout_ms
                                                                           : 2000,
                                             .attempts = (int)cfg.neuron_attempts,
                                             .backoff_initial_ms = cfg.neuron_backoff_ms,
                                             .backoff_max_ms = cfg.neuron_backoff_ms * 10}};
    char *msg = NULL;
    r = runner_create(&ro, m, &msg);
    if (r == NULL) {
        LOG_ERROR("cannot start: %s", msg ? msg : "?");
        free(msg);
        goto out;
    }
    if (cfg.listen[0] != '\0') {
        static const http_route_t routes[] = {{"GET", "/metrics", handle_metrics},
                                              {"GET", "/healthz", handle_healthz}};
        http_server_config_t hc = {.listen = cfg.listen,
                                   .routes = routes,
                                   .n_routes = sizeof routes / sizeof routes[0],
                                   .ud = m,
                                   .max_body_bytes = 4096};
        server = http_server_create(&hc, &msg);
        if (server == NULL) {
            LOG_ERROR("--listen %s: %s", cfg.listen, msg ? msg : "?");
            free(msg);
            goto out;
        }
    }
    LOG_INFO("cortex-scheduler %s started (metrics on %s)", holder,
             cfg.listen[0] ? cfg.listen : "nothing");
    if (runner_run(r, stop_pipe[0]) == 0)
        status = 0;
    LOG_INFO("stopping: resigning the lease");
out:
    http_server_destroy(server);
    runner_destroy(r);
    metrics_destroy(m);
    free(holder);
    config_free(settings, N_SETTINGS);
    if (stop_pipe[0] >= 0) {
        close(stop_pipe[0]);
        close(stop_pipe[1]);
    }
    return status;
}
