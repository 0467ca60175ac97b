#ifndef CPANZA_SYSTEM_SHIM_H
#define CPANZA_SYSTEM_SHIM_H

// System calls that Swift's Glibc module does not import.

#if defined(__linux__)
// Declared by <sched.h> only under _GNU_SOURCE, which the Glibc module is not built with.
extern int sched_getcpu(void);
#endif

// The index of the CPU the calling thread runs on, or -1 when the system cannot tell. On glibc
// 2.35 and later this reads the thread's restartable-sequences area: a load, no system call. The
// thread may move to another CPU right after: callers use it to spread work, never for safety.
static inline int cpanza_current_cpu(void) {
#if defined(__linux__)
    return sched_getcpu();
#else
    return -1;
#endif
}

#endif
