/* Whether a run of floats holds a NaN or an infinity: a value whose exponent bits are all ones. Written on the
 * bits, with adds and ors only, so that GCC vectorises it at the baseline instruction set: adding the lowest
 * exponent bit to the exponent field carries into the sign bit exactly when that field is all ones. (A compare
 * of the floats themselves, v - v != 0, stayed scalar.) */
#ifndef FASTCONV_FINITE_CHECK_H
#define FASTCONV_FINITE_CHECK_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t __attribute__((__may_alias__)) fc_bits32;
typedef uint64_t __attribute__((__may_alias__)) fc_bits64;

static inline int fc_any_nonfinite_f32(const float *p, ptrdiff_t n)
{
    const fc_bits32 *u = (const fc_bits32 *)p;
    uint32_t carries = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        carries |= (u[i] & 0x7f800000u) + 0x00800000u;
    return (int)(carries >> 31);
}

static inline int fc_any_nonfinite_f64(const double *p, ptrdiff_t n)
{
    const fc_bits64 *u = (const fc_bits64 *)p;
    uint64_t carries = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        carries |= (u[i] & 0x7ff0000000000000ull) + 0x0010000000000000ull;
    return (int)(carries >> 63);
}

#endif
