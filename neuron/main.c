/*
 * neuron/main.c — the neuron daemon's entry point: settings, logging, the daemon, signals.
 */
#include "daemon.h"
#include "log.h"
#include "neuron_config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    struct neuron_config cfg;
    char err[512];
    int rc = neuron_config_parse(&cfg, argc, argv, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "neuron: %s\n", err);
        neuron_config_free(&cfg);
        return rc < 0 ? 2 : 0;
    }
    log_set_component("neuron");
    enum log_level level;
    if (log_level_parse(cfg.log_level, &level) != 0) {
        fprintf(stderr, "neuron: --log-level must be trace, debug, info, warn or error; got '%s'\n",
                cfg.log_level);
        neuron_config_free(&cfg);
        return 2;
    }
    log_set_level(level);

    /* Signals are taken synchronously by this thread; every other thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct daemon *d = daemon_create(&cfg, err, sizeof err);
    if (!d) {
        LOG_ERROR("%s", err);
        neuron_config_free(&cfg);
        return 1;
    }
    int sig = 0;
    sigwait(&set, &sig);
    LOG_INFO("signal %d: shutting down", sig);
    daemon_destroy(d);
    neuron_config_free(&cfg);
    return 0;
}
