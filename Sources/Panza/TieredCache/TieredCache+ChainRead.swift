import Foundation
import Logging
import Synchronization

/// The chain reader: memory, then each tier below in order, where each tier's write-behind queue
/// decides before the tier is asked, a hit fills the tiers above under the fence, and a newly
/// opened cache waits (once) for the first poll of other caches' invalidations.
extension TieredCache {
    /// Looks `key` up in memory, then down the chain. A hit below memory fills the tiers above.
    func lookup<Value: Decodable & Sendable>(_ key: CacheKey, as type: Value.Type) async throws -> Value? {
        try self.checkOpen()
        if let value = try self.memoryLookup(key, as: type) { return value }
        if let value = self.localHit(key, as: type, refreshAhead: nil) { return value }
        let value = try await self.lowerLookup(key, as: type)
        if value == nil { self.configuration.trace?.record(key: key.rawValue, size: 0, source: .miss, latency: .zero) }
        return value
    }

    /// Looks `key` up in the tiers below memory, in order.
    ///
    /// What a tier's queue holds decides before the tier is asked: a queued store is the answer, a
    /// queued removal ends the lookup (the tiers below may still hold the removed value). A hit
    /// fills the tiers above only if no write of the key got a newer version meanwhile.
    func lowerLookup<Value: Decodable & Sendable>(_ key: CacheKey, as type: Value.Type) async throws -> Value? {
        try await self.lowerLookupEntry(key, as: type, acceptingStale: false, throwsOnTypeMismatch: true)?.value
    }

    /// ``lowerLookup(_:as:)``, with the entry's times.
    ///
    /// - Parameter acceptingStale: whether an entry past its time to live but within its stale
    ///   period is an answer; when not, it is a miss of its tier (and is left in place).
    ///   - throwsOnTypeMismatch: a plain read: a value that does not decode as `Value` throws
    ///     ``PanzaError/Code/typeMismatch`` (as memory does) instead of being a miss.
    ///   - missStamp: set to the SQLite write stamp read when SQLite missed, for a load's
    ///     ``StoreCondition``.
    func lowerLookupEntry<Value: Decodable & Sendable>(
        _ key: CacheKey,
        as type: Value.Type,
        acceptingStale: Bool,
        throwsOnTypeMismatch: Bool = false,
        missStamp: MissStampBox? = nil
    ) async throws -> (value: Value, times: EntryTimes)? {
        let lookupStart = self.trace == nil ? nil : ContinuousClock.now
        let ticket = self.fence.beginRead()
        defer { self.fence.endRead(ticket) }
        /// The write stamps read by the tiers that missed, by slot index.
        var missStamps: [Int: Int64] = [:]
        /// The creation time of the newest copy a tier above held that could not be served
        /// (expired, or stale for this caller): a copy below made before it was replaced by it,
        /// and is never an answer (an older value must not come back because the newer expired).
        var replacedBefore: Int64?
        slots: for slot in self.slots where slot.tier.isReadable {
            let index = slot.index
            var found: TierFound?
            /// Whether `found` was read from the tier (not from its queue).
            var fromTier = false
            /// Of what the tier holds, only values made at or after this time may be served (a
            /// queued invalidation from another cache).
            var createdCutoff: Int64?
            retry: while true {
                found = nil
                fromTier = false
                createdCutoff = nil
                do {
                    var shadow = try await slot.pending?.shadow(forKey: key) ?? .none
                    if case .removedBefore(let cutoff) = shadow {
                        createdCutoff = cutoff
                        // What this tier's queue removes, the tiers below hold too, or held: their
                        // copies made before the cutoff are never an answer either.
                        replacedBefore = max(replacedBefore ?? .min, cutoff)
                        shadow = .none
                    }
                    switch shadow {
                    case .stored(let queued):
                        found = .blob(queued)
                    case .pending(let pending):
                        found = .decoded(pending.decoded)
                    case .removed:
                        self.recorder.tierMiss(index)
                        return nil
                    case .removedBefore, .none:
                        fromTier = true
                        guard let readGuard = slot.readGuard else {
                            let read = try await slot.read(key)
                            found = read.found
                            missStamps[index] = read.missStamp
                            break
                        }
                        switch try await readGuard.read({ try await slot.read(key) }) {
                        case .value(let read):
                            found = read.found
                        case .skipped:
                            self.recorder.tierSkip(index)
                            self.recorder.tierMiss(index)
                            continue slots
                        case .timedOut(let timeout):
                            self.recorder.tierTimeout(index)
                            if slot.tier.failuresReachCallers {
                                // Counted as an error (and a miss) by the catch below.
                                throw PanzaError(
                                    code: .timedOut,
                                    message: "the \(slot.tier.name) tier did not answer within \(timeout)",
                                    key: key.rawValue
                                )
                            }
                            self.recorder.tierMiss(index)
                            self.logger.warning(
                                "panza: tier lookup timed out; treated as a miss",
                                metadata: ["tier": "\(slot.tier.name)", "key": "\(key)", "timeout": "\(timeout)"]
                            )
                            continue slots
                        case .failed(let error):
                            throw error
                        }
                    }
                } catch let error as PanzaError where error.code == .untrustedBlob {
                    // A forged or foreign object: a miss, never copied up, never removed by a reader.
                    self.recorder.add(.untrustedBlobs)
                    self.recorder.tierMiss(index)
                    self.logger.warning(
                        "panza: shared object refused: its signature does not verify; treated as a miss",
                        metadata: ["tier": "\(slot.tier.name)", "key": "\(key)", "error": "\(error)"]
                    )
                    continue slots
                } catch is CancellationError where Task.isCancelled {
                    // The caller is gone: not a tier's failure, and no reason to read further.
                    throw CancellationError()
                } catch {
                    self.recorder.tierError(index)
                    self.recorder.tierMiss(index)
                    self.logger.warning(
                        "panza: tier lookup failed; treated as a miss",
                        metadata: ["tier": "\(slot.tier.name)", "key": "\(key)", "error": "\(error)"]
                    )
                    if slot.tier.failuresReachCallers { throw error }
                    continue slots
                }
                if fromTier, let found, !found.isExpiredCopy, slot.readGuard == nil,
                    let follower = self.invalidationFollower,
                    !follower.isFirstPollDone
                {
                    // A newly opened cache learns what other caches busted while it was closed before
                    // it serves a local entry (waiting once, at most the remote read timeout); then the
                    // slot is read again from its queue, which may now hold what the poll learned (and
                    // still holds this process's own writes).
                    await follower.waitForFirstPoll(timeout: self.configuration.remoteReadTimeout ?? .seconds(1))
                    continue retry
                }
                break retry
            }
            guard let found else {
                self.recorder.tierMiss(index)
                continue
            }
            if case .expired(let createdAt) = found {
                // A copy past its retention, still in the tier's file: a miss, and the copies below
                // made before it were replaced by it.
                replacedBefore = max(replacedBefore ?? .min, createdAt)
                self.recorder.tierMiss(index)
                continue
            }
            let envelope: DecodedEnvelope
            var blob: [UInt8]?
            do {
                switch found {
                case .blob(let bytes):
                    blob = bytes
                    envelope = try DecodedEnvelope.decode(bytes, maxPayloadBytes: self.configuration.maxValueBytes)
                case .decoded(let decoded):
                    envelope = decoded
                case .decodingFailed(let error):
                    throw error
                case .expired:
                    preconditionFailure("an expired copy is a miss, handled above")
                }
            } catch {
                self.recorder.add(.corruptBlobs)
                self.recorder.tierMiss(index)
                self.logger.error(
                    "panza: stored blob failed verification; treated as a miss",
                    metadata: ["tier": "\(slot.tier.name)", "key": "\(key)", "error": "\(error)"]
                )
                self.repair(key, in: slot, ticket: ticket, copyCreatedAt: nil)
                continue
            }
            let times = envelope.times
            if let createdCutoff, times.createdAtMilliseconds < createdCutoff {
                // Made before a bust that another cache made and the queue is still applying:
                // not served, and the tiers below judge their own copies.
                self.recorder.tierMiss(index)
                continue
            }
            if let replacedBefore, times.createdAtMilliseconds < replacedBefore {
                self.recorder.tierMiss(index)
                continue
            }
            switch times.state(atMilliseconds: self.clock.nowMilliseconds()) {
            case .fresh:
                break
            case .stale where acceptingStale:
                break
            case .stale:
                replacedBefore = max(replacedBefore ?? .min, times.createdAtMilliseconds)
                self.recorder.tierMiss(index)
                continue
            case .gone:
                replacedBefore = max(replacedBefore ?? .min, times.createdAtMilliseconds)
                self.recorder.add(.expired)
                self.recorder.tierMiss(index)
                self.repair(key, in: slot, ticket: ticket, copyCreatedAt: times.createdAtMilliseconds)
                continue
            }
            let value: Value
            do {
                value = try ValueCoding.decode(type, from: envelope, key: key.rawValue)
            } catch {
                // Not this type's value (another type's, or the type changed): never deleted,
                // since another reader may expect that type. A plain read throws the same typed
                // error as a read of memory; a read-through loads, and its store replaces it.
                self.recorder.add(.undecodableValues)
                self.recorder.tierMiss(index)
                self.logger.warning(
                    "panza: stored value does not decode as \(Value.self)",
                    metadata: ["tier": "\(slot.tier.name)", "key": "\(key)", "error": "\(error)"]
                )
                if throwsOnTypeMismatch {
                    throw PanzaError(
                        code: .typeMismatch,
                        message: "the value in the \(slot.tier.name) tier does not decode as \(Value.self)",
                        key: key.rawValue, underlying: error)
                }
                continue
            }
            self.acceptHit(
                key, value: value, envelope: envelope, blob: blob, index: index, ticket: ticket, missStamps: missStamps,
                lookupStart: lookupStart)
            return (value, times)
        }
        // SQLite, when there is one, is the first slot.
        if let missStamp, self.sqliteTier != nil { missStamp.value = missStamps[0] }
        return nil
    }

    /// Counts a hit of the tier at `index`, and fills memory and the write queues of the tiers
    /// above it with the entry, unless a write of `key` came after `ticket`.
    ///
    /// - Parameters:
    ///   - blob: the entry's stored bytes; `nil` when it was decoded as it was read.
    ///   - missStamps: the write stamps read by the tiers above that missed, by slot index.
    ///   - lookupStart: when the lookup started, for the access trace.
    func acceptHit(
        _ key: CacheKey,
        value: some Sendable,
        envelope: DecodedEnvelope,
        blob: [UInt8]?,
        index: Int,
        ticket: VersionFence.Ticket,
        missStamps: [Int: Int64],
        lookupStart: ContinuousClock.Instant?
    ) {
        self.recorder.tierHit(index)
        if let trace = self.trace {
            trace.record(
                key: key.rawValue,
                size: envelope.storedBytes,
                source: .tier(index),
                latency: lookupStart.map { ContinuousClock.now - $0 } ?? .zero
            )
        }
        self.recorder.add(.bytesRead, envelope.storedBytes)
        let times = envelope.times
        let expiresAt = times.retainedUntil
        let upper =
            index == 0
            ? []
            : self.slots[..<index].compactMap { slot in
                slot.lane.map { (lane: $0, stamp: missStamps[slot.index]) }
            }
        guard self.memory != nil || !upper.isEmpty else { return }
        self.fence.fill(key, ticket: ticket) {
            if let memory = self.memory {
                self.putInMemory(
                    memory, value, key: key, cost: Self.memoryCost(payload: envelope.payload.count, key: key),
                    storedBytes: envelope.storedBytes, times: times, isFill: true)
            }
            for (lane, stamp) in upper where stamp != nil || !lane.guardsFills {
                // A fill is not replicated (the entry came from below), is dropped when the
                // queue is full, and lands in SQLite only if no process wrote the key since
                // SQLite missed it. A value decoded as it streamed in has no stored bytes:
                // SQLite (the one lane above a remote tier) encodes it again, frame by frame.
                lane.queue.enqueue(
                    .store(key: key, blob: blob ?? [], expiresAtMilliseconds: expiresAt),
                    version: ticket.snapshot,
                    replicate: false,
                    isFill: true,
                    fillStamp: stamp,
                    pending: blob == nil
                        ? PendingEnvelope(decoded: envelope, compress: self.configuration.compression) : nil
                )
            }
        }
        for (lane, _) in upper { lane.drainer.notify() }
    }

    /// Removes a damaged or expired entry from the tier that holds it, unless a newer write of the
    /// key is already on its way. A shared (remote) tier is never repaired by a reader: an object
    /// this process cannot decode may be one a newer Panza wrote; it is counted, logged and left to
    /// its writers (and to the bucket's expiry).
    /// Deletes the copy of `key` that `slot` holds and a lookup found expired or damaged: the
    /// copy made at `copyCreatedAt` or an older one, never a value another process stored since
    /// (`nil` for a damaged copy, whose time cannot be read). A repair is maintenance, not a
    /// removal: it invalidates nothing, so a load that started before it still stores its value.
    private func repair(
        _ key: CacheKey, in slot: TierSlot, ticket: VersionFence.Ticket, copyCreatedAt: Int64?
    ) {
        guard slot.readGuard == nil, let lane = slot.lane else { return }
        self.fence.fill(key, ticket: ticket) {
            lane.queue.enqueue(
                .remove(key), version: ticket.snapshot, replicate: false, isFill: true,
                createdBefore: copyCreatedAt.map { $0 + 1 }, isRepair: true)
        }
        lane.drainer.notify()
    }
}

/// Where a lookup that missed leaves the SQLite write stamp it read, for the load that follows.
final class MissStampBox: @unchecked Sendable {
    /// Written by the lookup, read after it returned, by the one task that made both.
    var value: Int64?
}
