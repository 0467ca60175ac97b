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

#include <spawn.h>

#if defined(__linux__)
// Declared by <spawn.h> only under _GNU_SOURCE (glibc 2.34 and later).
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *, int);
#endif

// Makes a spawned child close every descriptor from `from` up, after its other file actions: the
// child inherits only the descriptors it was given. Returns an errno value; ENOSYS where the
// system has no such action.
static inline int cpanza_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
#if defined(__linux__)
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
#else
    (void)actions;
    (void)from;
    return 38;
#endif
}

#endif
