/*
 * neuron/daemon.h — the running neuron: settings, model registry, metrics, HTTP routes and
 * (when a database is configured) the PostgreSQL reporter, wired together.
 *
 * Contract: daemon_create() builds everything from a parsed struct neuron_config (borrowed; it
 * must outlive the daemon) and starts serving; daemon_destroy() stops accepting requests, ends
 * the open ones, unloads every model and frees it all. main.c only parses the settings, creates
 * the daemon and waits for a signal.
 */
#ifndef CORTEX_NEURON_DAEMON_H
#define CORTEX_NEURON_DAEMON_H

#include "neuron_config.h"

#include <stddef.h>
#include <stdint.h>

struct daemon;

/* Starts the daemon. Returns NULL with a message in err when the HTTP server cannot start
 * (address in use, bad listen address). */
struct daemon *daemon_create(const struct neuron_config *cfg, char *err, size_t errlen)
        __attribute__((warn_unused_result));
/* The bound HTTP port. */
uint16_t daemon_port(const struct daemon *d);
void daemon_destroy(struct daemon *d);

#endif
