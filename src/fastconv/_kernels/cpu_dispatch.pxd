# Run-time choice of instruction set for the register-tiled kernels (see direct_tile.h).

cdef int active_isa() noexcept nogil
