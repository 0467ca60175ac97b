import ArgumentParser
import Foundation
import PanzaS3

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Make keys that sign or encrypt the shared bucket's entries.",
        subcommands: [GenerateKeyCommand.self]
    )
}

struct GenerateKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Print a new signing key (PANZA_S3_SIGNING_KEYS) or encryption key (PANZA_S3_ENCRYPTION_KEYS).",
        discussion: """
            An HMAC-SHA256 key (the default) is one secret: give it to every machine that reads or \
            writes the bucket. With --ed25519, two lines: the private key for the machines that \
            write (CI), and the public key for those that only read (developers' machines), which \
            can then never sign an entry. To rotate, add the new key to every machine, then move \
            it first (it signs), then remove the old one.
            """
    )

    @Option(help: "The key's id, named in each signature (default: panza-YYYYMMDD).")
    var id: String?

    @Flag(help: "Make an Ed25519 key pair instead of an HMAC secret.")
    var ed25519 = false

    @Flag(help: "Make an AES-256 key for PANZA_S3_ENCRYPTION_KEYS instead of a signing key.")
    var encryption = false

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        if self.ed25519 && self.encryption { throw ValidationError("--ed25519 and --encryption make different keys") }
    }

    func run() async throws {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd"
        let id = self.id ?? "panza-" + formatter.string(from: Date())
        if self.encryption {
            let key = try S3EncryptionKey.generate(id: id)
            if self.json {
                try Output.json(["id": id, "algorithm": "aes-256-gcm", "key": key.environmentValue])
            } else {
                print(key.environmentValue)
            }
            return
        }
        let key = try S3SigningKey.generate(id: id, algorithm: self.ed25519 ? .ed25519 : .hmacSHA256)
        if self.json {
            var output = ["id": id, "algorithm": key.algorithm.rawValue, "key": key.environmentValue]
            if self.ed25519 { output["publicKey"] = key.verifyingOnly.environmentValue }
            try Output.json(output)
            return
        }
        if self.ed25519 {
            print("# writers (CI): PANZA_S3_SIGNING_KEYS=\(key.environmentValue)")
            print("# readers:      PANZA_S3_SIGNING_KEYS=\(key.verifyingOnly.environmentValue)")
        } else {
            print(key.environmentValue)
        }
    }
}
