#ifndef CPANZA_LZ4_SHIM_H
#define CPANZA_LZ4_SHIM_H

#include <lz4.h>

#endif
