import Crypto
import Synchronization

/// The last signing key a client derived: it depends only on the day, the region, the service and
/// the secret, so one derivation serves every request of the day (until the credentials change).
final class SigningKeyCache: Sendable {
    struct Scope: Hashable {
        var date: String
        var region: String
        var service: String
        var secret: String
    }

    private let last = Mutex<(scope: Scope, key: SymmetricKey)?>(nil)

    func key(for scope: Scope) -> SymmetricKey? {
        self.last.withLock { $0?.scope == scope ? $0?.key : nil }
    }

    func store(_ key: SymmetricKey, for scope: Scope) {
        self.last.withLock { $0 = (scope, key) }
    }
}
