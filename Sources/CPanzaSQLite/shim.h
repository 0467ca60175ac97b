#ifndef CPANZA_SQLITE_SHIM_H
#define CPANZA_SQLITE_SHIM_H

#include <sqlite3.h>

// SQLITE_TRANSIENT is a macro around a cast of -1 to a function pointer, which Swift cannot import.
// Panza always binds with SQLITE_TRANSIENT so that SQLite copies the bytes before the Swift buffer
// that backs them goes away.
static inline int cpanza_sqlite3_bind_blob_transient(sqlite3_stmt *statement, int index, const void *bytes, int count) {
    return sqlite3_bind_blob(statement, index, bytes, count, SQLITE_TRANSIENT);
}

static inline int cpanza_sqlite3_bind_text_transient(sqlite3_stmt *statement, int index, const char *text, int count) {
    return sqlite3_bind_text(statement, index, text, count, SQLITE_TRANSIENT);
}

#endif
