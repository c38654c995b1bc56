/*
 * tests/kernels/ktest.h — the harness every kernel test program shares.
 *
 * Contract: a test program calls ktest_init() first (it exits 77, skipped, when the host has no
 * GPU), draws fresh random inputs from the seeded generator (KTEST_SEED=n repeats a run; the
 * seed is printed), moves buffers with the ktest_dev_* helpers (which end the program with a
 * failure on any CUDA error, so callers never check), records one row per case with
 * ktest_check(), and returns ktest_finish(), which prints the pass/fail table and gives the exit
 * status (0 all passed, 1 otherwise). Device outputs are poisoned with 0xFF bytes (NaN in f32
 * and bf16) before each run, so an element the kernel did not write fails the check. Host
 * buffers come from xmalloc and are freed by the caller with free(); device buffers with
 * ktest_dev_free().
 */
#ifndef CORTEX_TESTS_KTEST_H
#define CORTEX_TESTS_KTEST_H

#include <stddef.h>
#include <stdint.h>

/* Names the program in the table; exits 77 when there is no GPU. */
void ktest_init(const char *program);

/* Uniform in [lo, hi) from the seeded generator. */
float ktest_uniform(float lo, float hi);
/* Uniform integer in [0, n). */
int64_t ktest_below(int64_t n);
/* A new host array of n floats uniform in [lo, hi). */
float *ktest_random(size_t n, float lo, float hi);
/* Rounds each value to the nearest bf16 (so host references see what the GPU reads). */
void ktest_round_bf16(float *x, size_t n);
/* n floats as a new array of bf16 bit patterns (round to nearest even). */
uint16_t *ktest_to_bf16(const float *x, size_t n);
/* n bf16 bit patterns as a new float array. */
float *ktest_from_bf16(const uint16_t *x, size_t n);

/* Device memory of bytes bytes, poisoned. */
void *ktest_dev_alloc(size_t bytes);
/* A device copy of bytes bytes at host. */
void *ktest_dev_upload(const void *host, size_t bytes);
/* Sets every byte at dev to 0xFF. */
void ktest_dev_poison(void *dev, size_t bytes);
/* Waits for the device, then copies bytes bytes from dev to host. */
void ktest_download(void *host, const void *dev, size_t bytes);
/* n elements of type (0 = f32, 1 = bf16) at dev, as a new host float array. */
float *ktest_download_f32(const void *dev, size_t n, int is_bf16);
void ktest_dev_free(void *dev);

/* Records a case: the entry point's return code rc must be 0 (a -1 fails the case with
 * cuda_last_error()); got must be finite with ||got - ref|| / ||ref|| <= bound and
 * max |got - ref| <= 8 * bound * max |ref|. Returns 1 when the case passed. */
int ktest_check(const char *op, const char *shape, int rc, const float *got, const float *ref,
                size_t n, double bound);
/* Records a case that must be refused: rc must be -1 with a reason in cuda_last_error(). */
int ktest_check_rejected(const char *op, const char *shape, int rc);

/* Prints the table and a summary line; the program's exit status. */
int ktest_finish(void);

/* Error bounds by output precision (see tests/README.md). */
#define KTEST_BOUND_F32  2e-5
#define KTEST_BOUND_BF16 4e-3

#endif
