import Foundation
import Panza

/// Runs a profile's `credential_process` command (through `/bin/sh -c`) and reads the JSON it
/// prints (`Version` 1, `AccessKeyId`, `SecretAccessKey`, `SessionToken`, `Expiration`).
struct CredentialProcess: Sendable {
    let command: String
    /// The longest the command may run.
    var timeout: Duration = .seconds(60)

    func run() async throws -> S3Credentials {
        let process: SpawnedProcess
        do {
            process = try SpawnedProcess(
                executable: "/bin/sh", arguments: ["-c", self.command],
                environment: ProcessInfo.processInfo.environment, standardError: .null)
        } catch {
            throw S3Error(
                code: .missingCredentials, message: "credential_process could not start", underlying: "\(error)")
        }
        // Read while it runs (a large output cannot block it on a full pipe), on a thread of its
        // own: a blocking read must not hold a thread of the cooperative pool.
        let read = AsyncStream<Data>.makeStream()
        Thread {
            read.continuation.yield(process.standardOutput!.readDataToEndOfFile())
            read.continuation.finish()
        }.start()
        let status: Int32
        do {
            status = try await RequestDeadline.run(within: self.timeout, what: "credential_process") {
                await process.exit().status
            }
        } catch {
            // A command past its deadline is killed, and reaped by the wait still running.
            process.send(signal: SIGKILL)
            throw error
        }
        var data = Data()
        for await chunk in read.stream { data = chunk }
        guard status == 0 else {
            throw S3Error(code: .missingCredentials, message: "credential_process exited with status \(status)")
        }
        guard data.count <= 1 << 20 else {
            throw S3Error(code: .invalidResponse, message: "credential_process printed more than 1 MiB")
        }
        return try CredentialJSON.credentials(from: Array(data), source: "credential_process")
    }
}
