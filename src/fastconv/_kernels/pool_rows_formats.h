/* pool_rows_impl.h once per index format, for the PR_T, PR_NARROW, PR_ATTR and name prefix PR_BASE that
 * pool_rows.h sets: PR_BASE_max_row etc. with flat int64 indices, PR_BASE_w_max_row etc. with window positions
 * (uint8). No include guard: included once per (dtype, instruction set). */
#define PR_WINDOW 0
#define PR_I int64_t
#define PR_NAME PR_BASE
#include "pool_rows_impl.h"
#undef PR_WINDOW
#undef PR_I
#undef PR_NAME
#define PR_WINDOW 1
#define PR_I uint8_t
#define PR_NAME PR_CAT(PR_BASE, w)
#include "pool_rows_impl.h"
#undef PR_WINDOW
#undef PR_I
#undef PR_NAME
