import Crypto
import Foundation
import Panza
import Synchronization

/// The bucket's record of removals, which every cache on the prefix follows.
///
/// Each removal is one empty object, named for what it removes:
///
/// ```
/// {prefix}/_invalidations/{stamp}-{writer}/all.{made}
/// {prefix}/_invalidations/{stamp}-{writer}/id.{made}/n{id}
/// {prefix}/_invalidations/{stamp}-{writer}/key.{made}/n{id}/{key}
/// {prefix}/_invalidations/{stamp}-{writer}/keyref.{made}/n{id}/{sha256 of key}   (body: the key)
/// {prefix}/_invalidations/{stamp}-{writer}/horizon/{cutoff}
/// ```
///
/// A `horizon` is written by `panza gc` when it deletes log entries older than `cutoff`: a cache
/// that reads it drops its local entries made before `cutoff`, since the removals that may have
/// covered them are gone from the log.
///
/// `made` is when the removal was made (the caller's bust; the writer's clock in milliseconds, 16
/// digits), `stamp` when it was written (never before `made`, and after every entry the writer
/// knew), `writer` a random id of the writing
/// tier (16 hex digits), `id` and `key` percent-encoded. Names sort by time, so a poll is one LIST
/// that starts a little before the newest name it has seen (``lookback``, for writers whose clocks
/// lag), whatever the number of entries.
///
/// A removal of an id or of everything starts a new **generation**: the objects of an id live
/// under `{prefix}/{id}/~{stamp}-{writer}/` after its last such removal (under `{prefix}/{id}/`
/// before any), so a bust costs one request whatever the number of entries, and the objects of
/// older generations are left for `panza gc`. Every removal also invalidates the values made before
/// its stamp: a reader refuses an object made before the removal that covers it, and the tier
/// never uploads one (a value computed before a bust elsewhere and uploaded after it).
final class InvalidationLog: Sendable {
    /// One entry of the log.
    struct Entry: Hashable, Sendable {
        /// The object key.
        var name: String
        /// `{stamp}-{writer}`: the generation token of an `id` or `all` entry.
        var token: String
        var stamp: Int64
        var writer: String
        var scope: CacheInvalidation.Scope
        /// When the removal was made; `nil` when the name does not say (then its stamp).
        var madeAt: Int64? = nil
        /// For a horizon: local values made before this are dropped (the scope is `.all`).
        var horizon: Int64? = nil
        /// The key did not fit in the name (`keyref`): the entry's body holds it.
        var keyInBody = false

        /// What the entry asks of the caches that read it.
        var invalidation: CacheInvalidation {
            CacheInvalidation(scope: self.scope, createdBeforeMilliseconds: self.horizon ?? self.removedAt)
        }

        /// Values made before this are invalid.
        var removedAt: Int64 { min(self.madeAt ?? self.stamp, self.stamp) }
    }

    private struct State {
        /// Names already applied, within the lookback of ``newestStamp``.
        var seen: Set<String> = []
        var newestStamp: Int64?
        /// The newest `id` entry of each namespace, and the newest `all` entry.
        var namespaceGenerations: [String: Entry] = [:]
        var allGeneration: Entry?
        /// The newest horizon.
        var horizon: Entry?
        /// The newest key removal of each key (raw key), by stamp.
        var keyRemovals: [String: Int64] = [:]
        /// Invalidations from other writers not yet handed to the cache.
        var undelivered: [CacheInvalidation] = []
        var synced = false
    }

    /// `{prefix}/_invalidations/`.
    let logPrefix: String
    /// This tier's id in the names it writes.
    let writer: String
    /// How far before the newest seen stamp a poll starts listing.
    static let lookback: Int64 = 10 * 60 * 1_000
    private let state = Mutex(State())

    init(prefix: String) {
        self.logPrefix = prefix + "/_invalidations/"
        self.writer = String(format: "%016llx", UInt64.random(in: .min ... .max))
    }

    // MARK: What the log says

    /// Whether the log has been read once.
    var isSynced: Bool { self.state.withLock { $0.synced } }

    /// The generation token of `namespace`: that of the newest removal of it or of everything;
    /// `nil` before any.
    func generation(of namespace: String) -> String? {
        self.state.withLock { state in
            [state.namespaceGenerations[namespace], state.allGeneration].compactMap { $0 }.max { $0.name < $1.name }?
                .token
        }
    }

    /// The stamp of the newest removal that covers `key`; values made before it are invalid.
    func removalStamp(covering key: CacheKey) -> Int64? {
        self.state.withLock { state in
            [
                state.namespaceGenerations[key.namespace]?.removedAt, state.allGeneration?.removedAt,
                state.keyRemovals[key.rawValue],
            ]
            .compactMap { $0 }.max()
        }
    }

    /// The entries garbage collection keeps whatever their age: the newest removal of each id, of
    /// everything, and the newest horizon (they define generations and what local tiers dropped).
    var lastingEntries: Set<String> {
        self.state.withLock { state in
            Set(
                state.namespaceGenerations.values.map(\.name)
                    + [state.allGeneration?.name, state.horizon?.name].compactMap { $0 })
        }
    }

    /// Records a horizon: caches drop their local entries made before `cutoff` (written by garbage
    /// collection before it deletes older log entries).
    func recordHorizon(cutoff: Int64, client: S3Client, now: Int64) async throws {
        try await self.write(client: client, now: now) { _ in
            (path: "horizon/" + Self.stampText(cutoff), body: [], scope: .all, madeAt: nil, horizon: cutoff)
        }
    }

    /// Reads the log, then writes an entry named `{stamp}-{writer}/{path}` with a stamp after every
    /// entry this tier knows, and applies it to this tier's state.
    ///
    /// - Parameter describe: given the stamp, the rest of the name, the body and what the entry says.
    private func write(
        client: S3Client, now: Int64,
        _ describe: (_ stamp: Int64) -> (
            path: String, body: [UInt8], scope: CacheInvalidation.Scope, madeAt: Int64?, horizon: Int64?
        )
    ) async throws {
        try await self.sync(client: client)
        let stamp = self.state.withLock { max(now, ($0.newestStamp ?? 0) + 1) }
        let token = Self.stampText(stamp) + "-" + self.writer
        let entry = describe(stamp)
        let name = self.logPrefix + token + "/" + entry.path
        try await client.put(key: name, body: entry.body, contentType: "text/plain")
        let applied = Entry(
            name: name, token: token, stamp: stamp, writer: self.writer, scope: entry.scope, madeAt: entry.madeAt,
            horizon: entry.horizon)
        self.state.withLock { state in
            if state.seen.insert(name).inserted { Self.apply(applied, to: &state) }
        }
    }

    // MARK: Reading

    /// Lists the log from a little before the newest entry seen (everything, the first time) and
    /// applies what is new.
    ///
    /// - Parameter retry: the retries of each request; the client's by default (a lookup passes its own).
    func sync(client: S3Client, retry: S3Client.Configuration.RetryPolicy? = nil) async throws {
        let startAfter = self.state.withLock { state in
            state.newestStamp.map { self.logPrefix + Self.stampText(max(0, $0 - Self.lookback)) }
        }
        let listed: [S3Client.ListedObject]
        do {
            listed = try await client.listAllObjects(prefix: self.logPrefix, startAfter: startAfter, retry: retry)
        } catch let error as S3Error where error.s3Code == "NoSuchBucket" {
            // No bucket yet (the first write creates it): nothing was ever busted in it.
            listed = []
        }
        var entries: [Entry] = []
        for object in listed {
            guard !self.state.withLock({ $0.seen.contains(object.key) }) else { continue }
            guard var entry = self.parse(object.key) else { continue }
            if case .key(let key) = entry.scope, entry.keyInBody {
                // The key did not fit in the name: it is the body.
                guard let body = try await client.get(key: object.key, retry: retry) else { continue }
                entry.scope = .key(CacheKey(namespace: key.namespace, rawValue: String(decoding: body, as: UTF8.self)))
            }
            entries.append(entry)
        }
        self.state.withLock { state in
            for entry in entries.sorted(by: { $0.name < $1.name }) where state.seen.insert(entry.name).inserted {
                Self.apply(entry, to: &state)
                if entry.writer != self.writer { state.undelivered.append(entry.invalidation) }
            }
            state.synced = true
            if let newest = state.newestStamp {
                state.seen = state.seen.filter {
                    (Self.stamp(ofName: $0, prefix: self.logPrefix) ?? 0) >= newest - 2 * Self.lookback
                }
            }
        }
    }

    /// Invalidations from other writers read since the last call.
    func takeUndelivered() -> [CacheInvalidation] {
        self.state.withLock { state in
            defer { state.undelivered = [] }
            return state.undelivered
        }
    }

    private static func apply(_ entry: Entry, to state: inout State) {
        state.newestStamp = max(state.newestStamp ?? entry.stamp, entry.stamp)
        if entry.horizon != nil {
            // Local tiers only: objects in the bucket are judged by their generation and removals.
            if entry.name > (state.horizon?.name ?? "") { state.horizon = entry }
            return
        }
        switch entry.scope {
        case .all:
            if entry.name > (state.allGeneration?.name ?? "") { state.allGeneration = entry }
        case .namespace(let namespace):
            if entry.name > (state.namespaceGenerations[namespace]?.name ?? "") {
                state.namespaceGenerations[namespace] = entry
            }
        case .key(let key):
            state.keyRemovals[key.rawValue] = max(state.keyRemovals[key.rawValue] ?? entry.removedAt, entry.removedAt)
        }
    }

    // MARK: Writing

    /// Records a removal: reads the log first, so that the new entry sorts after every entry this
    /// tier knows (and starts a generation newer than theirs), then writes it.
    ///
    /// - Parameters:
    ///   - scope: what is removed.
    ///   - madeAt: when the removal was made (the caller's bust), if known; `now` otherwise.
    ///   - client: the bucket's client.
    ///   - now: the writer's clock, in milliseconds since 1970.
    func record(_ scope: CacheInvalidation.Scope, madeAt: Int64? = nil, client: S3Client, now: Int64) async throws {
        // The name's prefix: `{prefix}/_invalidations/` and a 16-digit stamp, a dash, 16 hex digits, a slash.
        let prefixLength = self.logPrefix.utf8.count + 34
        try await self.write(client: client, now: now) { stamp in
            let made = min(madeAt ?? now, stamp)
            let madeText = Self.stampText(made)
            switch scope {
            case .all:
                return ("all." + madeText, [], scope, made, nil)
            case .namespace(let namespace):
                return ("id." + madeText + "/n" + URIEncoding.encode(namespace), [], scope, made, nil)
            case .key(let key):
                let encoded = "n" + URIEncoding.encode(key.namespace) + "/" + URIEncoding.encode(key.rawValue)
                if prefixLength + 21 + encoded.utf8.count <= 1_000 {
                    return ("key." + madeText + "/" + encoded, [], scope, made, nil)
                }
                let hash = SHA256.hash(data: Array(key.rawValue.utf8)).map { String(format: "%02x", $0) }.joined()
                return (
                    "keyref." + madeText + "/n" + URIEncoding.encode(key.namespace) + "/" + hash,
                    Array(key.rawValue.utf8), scope, made, nil
                )
            }
        }
    }

    // MARK: Names

    static func stampText(_ stamp: Int64) -> String { String(format: "%016lld", stamp) }

    static func stamp(ofName name: String, prefix: String) -> Int64? {
        guard name.hasPrefix(prefix) else { return nil }
        return Int64(name.dropFirst(prefix.count).prefix(16))
    }

    /// Parses an entry's name; `nil` for a name this release does not know (skipped).
    func parse(_ name: String) -> Entry? {
        guard name.hasPrefix(self.logPrefix) else { return nil }
        let parts = name.dropFirst(self.logPrefix.count).split(separator: "/", omittingEmptySubsequences: false)
            .map(String.init)
        guard parts.count >= 2 else { return nil }
        let token = parts[0].split(separator: "-").map(String.init)
        guard token.count == 2, token[0].count == 16, let stamp = Int64(token[0]), token[1].count == 16 else {
            return nil
        }
        func namespace(_ part: String) -> String? {
            part.hasPrefix("n") ? URIEncoding.decode(String(part.dropFirst())) : nil
        }
        // `kind` or `kind.{made}`.
        let kindParts = parts[1].split(separator: ".", maxSplits: 1).map(String.init)
        var madeAt: Int64?
        if kindParts.count == 2 {
            guard kindParts[1].count == 16, let made = Int64(kindParts[1]) else { return nil }
            madeAt = made
        }
        let scope: CacheInvalidation.Scope
        switch (kindParts.first ?? "", parts.count) {
        case ("all", 2):
            scope = .all
        case ("id", 3):
            guard let namespace = namespace(parts[2]) else { return nil }
            scope = .namespace(namespace)
        case ("horizon", 3):
            guard parts[2].count == 16, let cutoff = Int64(parts[2]) else { return nil }
            return Entry(name: name, token: parts[0], stamp: stamp, writer: token[1], scope: .all, horizon: cutoff)
        case ("key", 4), ("keyref", 4):
            guard let namespace = namespace(parts[2]) else { return nil }
            scope = .key(CacheKey(namespace: namespace, rawValue: URIEncoding.decode(parts[3])))
        default:
            return nil
        }
        return Entry(
            name: name, token: parts[0], stamp: stamp, writer: token[1], scope: scope, madeAt: madeAt,
            keyInBody: kindParts.first == "keyref")
    }
}
