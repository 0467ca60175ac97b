#ifndef CPANZA_SQLITE_SHIM_H
#define CPANZA_SQLITE_SHIM_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

// SQLITE_TRANSIENT is a macro around a cast of -1 to a function pointer, which Swift cannot import.
// Panza binds with SQLITE_TRANSIENT, so that SQLite copies the bytes before the Swift buffer that
// backs them goes away, except for the scoped binding below.
static inline int cpanza_sqlite3_bind_blob_transient(sqlite3_stmt *statement, int index, const void *bytes, int count) {
    return sqlite3_bind_blob(statement, index, bytes, count, SQLITE_TRANSIENT);
}

static inline int cpanza_sqlite3_bind_text_transient(sqlite3_stmt *statement, int index, const char *text, int count) {
    return sqlite3_bind_text(statement, index, text, count, SQLITE_TRANSIENT);
}

// Binds text that SQLite does not copy (SQLITE_STATIC): the caller keeps the bytes alive until the
// statement is reset and its bindings cleared (SQLiteStatement.withBinding does both before the
// bytes go away). A point lookup then makes no allocation for its key.
static inline int cpanza_sqlite3_bind_text_static(sqlite3_stmt *statement, int index, const char *text, int count) {
    return sqlite3_bind_text(statement, index, text, count, SQLITE_STATIC);
}

// sqlite3_config is variadic, which Swift cannot call. Turns SQLite's memory statistics on (1) or
// off (0) for the whole process; SQLITE_MISUSE, changing nothing, once SQLite is initialized.
static inline int cpanza_sqlite3_config_memstatus(int on) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, on);
}

// The version word of the wal-index header this code reads (https://sqlite.org/walformat.html).
#define CPANZA_WAL_INDEX_VERSION 3007000u

// The first region of the wal-index of `db`'s main database, as SQLite itself maps it: through the
// VFS of the connection (its xShmMap, not opening the `-shm` file, so no descriptor of SQLite's
// files is ever opened or closed behind its back: closing one would drop the process's POSIX
// locks on it), whatever the VFS and wherever it keeps the index. The mapping stays valid while
// the connection is open in WAL mode. NULL when the database is not in WAL mode, the VFS has no
// shared memory, the index is not mapped yet or its header's version is not the one this code
// reads: callers then start a transaction for every lookup.
static inline const void *cpanza_sqlite3_wal_index(sqlite3 *db) {
    sqlite3_file *file = NULL;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &file) != SQLITE_OK || file == NULL) return NULL;
    const sqlite3_io_methods *methods = file->pMethods;
    if (methods == NULL || methods->iVersion < 2 || methods->xShmMap == NULL) return NULL;
    volatile void *region = NULL;
    // bExtend = 0: never creates or grows the index, only returns what the connection has.
    if (methods->xShmMap(file, 0, 32768, 0, &region) != SQLITE_OK || region == NULL) return NULL;
    if (__atomic_load_n((const uint32_t *)region, __ATOMIC_RELAXED) != CPANZA_WAL_INDEX_VERSION) return NULL;
    return (const void *)region;
}

// The wal-index header of a WAL-mode database, read from the index as mapped in memory (`shm`),
// the way SQLite's readers read it (https://sqlite.org/walformat.html): the header's first copy,
// a barrier, its second copy; the writer of a commit stores them in the opposite order. Fills
// `mark` with the header's six words and, in the seventh, the checkpoint's backfill count
// (`nBackfill`), and returns 1; returns 0 when the copies differ (a commit is being published),
// the header is not initialized or its version is not the one this code reads. Loads are atomic:
// other processes store to this memory.
static inline int cpanza_wal_index_mark(const void *shm, uint64_t mark[7]) {
    const uint64_t *words = (const uint64_t *)shm;
    uint64_t second[6];
    for (int i = 0; i < 6; i++) mark[i] = __atomic_load_n(&words[i], __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    for (int i = 0; i < 6; i++) second[i] = __atomic_load_n(&words[6 + i], __ATOMIC_RELAXED);
    for (int i = 0; i < 6; i++) {
        if (mark[i] != second[i]) return 0;
    }
    // iVersion is the header's first word; isInit its 13th byte.
    if (__atomic_load_n((const uint32_t *)shm, __ATOMIC_RELAXED) != CPANZA_WAL_INDEX_VERSION) return 0;
    if (((const volatile uint8_t *)shm)[12] == 0) return 0;
    mark[6] = __atomic_load_n(&((const uint32_t *)shm)[24], __ATOMIC_ACQUIRE);
    return 1;
}

#endif
