// CPU build of kernels/simt/selftest.cu (emulator self-tests); compiled by build.rs.
#include "simt_cpu.h"
#include "common.cuh"
#include "selftest.cu"
