/*
 * kernels/cuda_check.cuh — error-check macros shared by every .cu file in kernels/.
 *
 * Contract: CUDA_TRY(expr) evaluates a CUDA runtime call and, on failure, records the error text
 * with file and line through cuda_check_fail() and makes the enclosing function return -1.
 * Entry points exported to C therefore return 0 / -1 and expose the last message through
 * cuda_last_error() (declared in cuda_device.h). Kernels never abort the process.
 * cuda_fail_args() records a rejected argument set the same way and returns -1, so an entry point
 * reads `return cuda_fail_args("cuda_op", "what was wrong");`.
 */
#ifndef CORTEX_KERNELS_CUDA_CHECK_CUH
#define CORTEX_KERNELS_CUDA_CHECK_CUH

#include <cuda_runtime.h>

extern "C" void cuda_check_fail(const char *what, cudaError_t err, const char *file, int line);
extern "C" int cuda_fail_args(const char *entry, const char *why);

#define CUDA_TRY(expr)                                                                             \
    do {                                                                                           \
        cudaError_t cuda_try_err_ = (expr);                                                        \
        if (cuda_try_err_ != cudaSuccess) {                                                        \
            cuda_check_fail(#expr, cuda_try_err_, __FILE__, __LINE__);                             \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

#endif
