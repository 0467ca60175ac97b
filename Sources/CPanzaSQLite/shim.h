#ifndef CPANZA_SQLITE_SHIM_H
#define CPANZA_SQLITE_SHIM_H

#include <sqlite3.h>
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

// The wal-index header of a WAL-mode database, read from the start of its `-shm` file as mapped
// in memory (`shm`), the way SQLite's readers read it (https://sqlite.org/walformat.html): the
// header's first copy, a barrier, its second copy; the writer of a commit stores them in the
// opposite order. Fills `mark` with the header's six words and, in the seventh, the checkpoint's
// backfill count (`nBackfill`), and returns 1; returns 0 when the copies differ (a commit is
// being published) or the header is not initialized. Loads are atomic: other processes store to
// this memory.
static inline int cpanza_wal_index_mark(const void *shm, uint64_t mark[7]) {
    const uint64_t *words = (const uint64_t *)shm;
    uint64_t second[6];
    for (int i = 0; i < 6; i++) mark[i] = __atomic_load_n(&words[i], __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    for (int i = 0; i < 6; i++) second[i] = __atomic_load_n(&words[6 + i], __ATOMIC_RELAXED);
    for (int i = 0; i < 6; i++) {
        if (mark[i] != second[i]) return 0;
    }
    // isInit is the header's 13th byte.
    if (((const volatile uint8_t *)shm)[12] == 0) return 0;
    mark[6] = __atomic_load_n(&((const uint32_t *)shm)[24], __ATOMIC_ACQUIRE);
    return 1;
}

#endif
