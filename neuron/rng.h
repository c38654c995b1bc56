/*
 * neuron/rng.h — a small seeded pseudo-random generator for sampling (xoshiro256**).
 *
 * Contract: each generator is a plain value owned by its user (one per sequence); there is no
 * global state, so generators on different threads never interact. The same seed yields the same
 * stream on every machine: the state is expanded from the 64-bit seed with splitmix64 and the
 * arithmetic is exact 64-bit integer arithmetic. Not for cryptography.
 */
#ifndef CORTEX_NEURON_RNG_H
#define CORTEX_NEURON_RNG_H

#include <stdint.h>

struct rng {
    uint64_t s[4];
};

/* Seeds r from seed; any seed (0 included) gives a valid, distinct stream. */
void rng_seed(struct rng *r, uint64_t seed);

/* Draws a seed from the kernel's entropy (getrandom), falling back to the clock and process id
 * if that fails, and seeds r with it. Returns the seed, so a caller can log or echo it and a run
 * can be replayed. */
uint64_t rng_seed_entropy(struct rng *r);

/* The next 64 uniformly distributed bits. */
uint64_t rng_next_u64(struct rng *r);

/* A uniform double in [0, 1) with 53 random bits (never 1.0). */
double rng_next_double(struct rng *r);

#endif
